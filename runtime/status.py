"""The one place where exceptions become gRPC status codes, for every servicer of every server.

H2KError subclasses (an illegal state transition among them) carry their own code; anything
else is INTERNAL with a log line and no internals in the message. Messages are cut to fit a
trailer. The server keeps serving either way.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from protocol.errors import H2KError

log = logging.getLogger(__name__)

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
MAX_STATUS_MESSAGE = 4096


def cap_message(message: str, limit: int = MAX_STATUS_MESSAGE) -> str:
    """``message`` cut to ``limit`` characters, saying so (every error message h2k reports,
    on the control plane and the agent alike)."""
    if len(message) <= limit:
        return message
    return message[: limit - len(CUT_MARK)] + CUT_MARK


CUT_MARK = " ... (message cut)"


async def _abort(context: Context, exc: Exception, method: str) -> NoReturn:
    if isinstance(exc, H2KError):
        code, message = exc.code, exc.message
    else:
        log.exception("rpc failed method=%s error=%r", method, exc)
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
    if code is not grpc.StatusCode.INTERNAL:
        log.info("rpc refused method=%s code=%s message=%r", method, code.name, message)
    # Status messages travel in a trailer; clients drop trailers above 8 KiB.
    message = cap_message(message)
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # abort always raises


def unary_rpc(
    method: Callable[[S, Req, Context], Awaitable[Resp]],
) -> Callable[[S, Req, Context], Awaitable[Resp]]:
    """Map exceptions of a unary servicer method to gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Context) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method.__name__)

    return wrapper


def stream_rpc(
    method: Callable[[S, Req, Context], AsyncIterator[Resp]],
) -> Callable[[S, Req, Context], AsyncIterator[Resp]]:
    """Map exceptions of a server-streaming servicer method to gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Context) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method.__name__)

    return wrapper
