"""Wrapping servicer methods: one ``around`` context per call; undecodable requests refused."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Around = Callable[[str, grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message."""


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    original = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return original(data)
        except Exception:
            return _Undecodable()

    return deserialize


async def _refuse_undecodable(method: str, context: Any) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid {method} request message"
    )


@functools.lru_cache(maxsize=512)
def guarded(method: str, handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """Wrap a unary-request handler so ``around(method, context)`` encloses every call.

    Interceptors ask for the wrapped handler on every call with the same arguments: it is
    built once per method (handlers are tuples of functions, so the cache key is cheap).

    ``around`` may abort the call (grpc.aio raises then) before the servicer runs. Requests
    that do not decode become INVALID_ARGUMENT instead of grpc's INTERNAL.
    """
    deserialize = _tolerant(handler.request_deserializer)
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def call(request: Any, context: Any) -> Any:
            if isinstance(request, _Undecodable):  # inline: every call passes here
                await _refuse_undecodable(method, context)
            async with around(method, context):
                return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream  # our servicers' streams are async generators

        async def call_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _refuse_undecodable(method, context)
            async with around(method, context):
                async for item in stream(request, context):
                    yield item

        return grpc.unary_stream_rpc_method_handler(
            call_stream,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
    return handler


def service_prefixes(names: Iterable[str]) -> tuple[str, ...]:
    """``/package.Service/`` method prefixes of fully-qualified service names."""
    return tuple(f"/{name}/" for name in names)
