"""The one place where gRPC errors become typed h2k errors on the client side."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc

from protocol.errors import from_rpc_error

T = TypeVar("T")


@contextmanager
def rpc_errors() -> Iterator[None]:
    """Re-raise any :class:`grpc.RpcError` raised in the block as an ``H2KError``.

    Raises:
        protocol.errors.H2KError: the subclass matching the gRPC status code.
    """
    try:
        yield
    except grpc.RpcError as exc:
        # `from None`: the gRPC internals add nothing a caller can act on.
        raise from_rpc_error(exc) from None


def mapped_stream(stream: Iterable[T]) -> Iterator[T]:
    """Iterate a server stream, raising typed errors when it breaks."""
    with rpc_errors():
        yield from stream
