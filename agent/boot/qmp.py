"""A minimal QMP client: connect to QEMU's monitor socket, run commands, read the answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

QMP_TIMEOUT = 10.0


class QmpError(Exception):
    """QEMU refused a command or the monitor went away."""


class Qmp:
    """One QMP session on a UNIX socket (asynchronous events are skipped)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, socket: Path) -> Qmp:
        reader, writer = await asyncio.open_unix_connection(str(socket))
        session = cls(reader, writer)
        await session._message()  # the greeting
        await session.execute("qmp_capabilities")
        return session

    async def _message(self) -> dict[str, Any]:
        async with asyncio.timeout(QMP_TIMEOUT):
            while True:
                line = await self._reader.readline()
                if not line:
                    raise QmpError("QEMU closed its monitor")
                message: dict[str, Any] = json.loads(line)
                if "event" not in message:
                    return message

    async def execute(self, command: str, **arguments: Any) -> Any:
        """Run one command; its ``return`` value.

        Raises:
            QmpError: QEMU answered with an error, or the monitor closed.
        """
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._writer.write(json.dumps(request).encode() + b"\n")
        await self._writer.drain()
        answer = await self._message()
        if "error" in answer:
            raise QmpError(f"{command}: {answer['error'].get('desc', answer['error'])}")
        return answer.get("return")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()
