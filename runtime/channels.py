"""Client channels that follow TLS file rotation, and stubs that always use the current one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from runtime.tls import ReloadingTLS, channel_credentials


class ReloadingChannel:
    """A grpc.aio channel to one target, reopened when the TLS files change.

    The previous channel is kept open until :meth:`close` so calls in flight on it finish.
    """

    def __init__(
        self, target: str, tls: ReloadingTLS | None, options: Sequence[tuple[str, Any]] = ()
    ) -> None:
        self.target = target
        self._tls = tls
        self._options = list(options)
        self._generation = -1
        self._channel: grpc.aio.Channel | None = None
        self._retired: list[grpc.aio.Channel] = []

    def get(self) -> grpc.aio.Channel:
        """The channel to use now."""
        if self._tls is not None:
            self._tls.refresh()
        generation = self._tls.generation if self._tls is not None else 0
        if self._channel is None or generation != self._generation:
            if self._channel is not None:
                self._retired.append(self._channel)
            self._channel = self._open()
            self._generation = generation
        return self._channel

    def _open(self) -> grpc.aio.Channel:
        if self._tls is None:
            return grpc.aio.insecure_channel(self.target, options=self._options)
        creds = channel_credentials(self._tls.material)
        return grpc.aio.secure_channel(self.target, creds, options=self._options)

    async def close(self) -> None:
        channels = [*self._retired, *([self._channel] if self._channel else [])]
        self._channel, self._retired = None, []
        for channel in channels:
            await channel.close(None)


class StubProxy:
    """Looks like a generated stub; each method call goes to the current channel's stub."""

    def __init__(self, channel: ReloadingChannel, stub_class: Callable[[Any], Any]) -> None:
        self._channel = channel
        self._stub_class = stub_class

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub_class(self._channel.get()), name)
