# systemd's readiness protocol (sd_notify): one datagram of "KEY=value" lines to the unix
# socket systemd names in NOTIFY_SOCKET. Invariants: the socket path is read by the
# composition root and passed in (nothing here reads the environment); a path starting with
# "@" is in the abstract namespace; a missing or unreachable socket is never fatal (a node
# started outside systemd, or a notify that fails, keeps serving).
from __future__ import annotations

import logging
import socket

log = logging.getLogger("tessera.systemd")


def notify(socket_path: str | None, **fields: str) -> bool:
    """Send READY=1, STATUS=..., STOPPING=1 and friends; True if the datagram was sent."""
    if not socket_path:
        return False
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", socket_path, exc)
        return False
    return True
