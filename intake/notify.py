"""``sd_notify``: tell systemd (a ``Type=notify`` unit) that the intake is ready or stopping.

The protocol is one datagram to the unix socket named by ``$NOTIFY_SOCKET`` (``@`` at its
start: the abstract namespace); no library is needed.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("intake.notify")


def sd_notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``); False without systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        log.warning("sd_notify failed state=%s error=%r", state.split("=")[0], str(error))
        return False
    return True
