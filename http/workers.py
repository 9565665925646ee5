# API worker processes (`[api] workers = N`): N processes answer the public port. The main
# process holds the engine (the one LMDB writer, the chunk store, background work); each
# other process opens the index read-only and answers the requests that only read image
# records (show, list, schemas, versions, the health check), which is most of a control
# plane's traffic. Every listener is bound to the same port with SO_REUSEPORT, so the kernel
# spreads connections over the processes. A worker that reads a request head it does not
# answer hands the whole connection to the main process: the socket (SCM_RIGHTS over a Unix
# socket pair) and the head rebuilt from h11's event plus the bytes read after it; the main
# process serves that connection from then on.
# Invariants:
# - Workers are forked before anything else runs (no threads, no LMDB environment open);
#   each keeps only its own listener and its channel to the main process.
# - A worker opens the index only after the main process opened the engine (it waits for
#   READY on its channel) and never writes: answers come from committed snapshots, and the
#   main process commits a change before it answers the request that made it, so a change
#   is visible to every later request on any connection.
# - A handed-off connection loses nothing: the main process reads the request as if it had
#   accepted the connection itself (pipelined bytes included); the worker closes only its
#   descriptor (no shutdown), so the connection stays open.
# - Requests a worker answered reach the main process's /metrics: the worker batches what
#   it observed and sends it over its channel twice a second.
# - A worker stops when told (SIGTERM/SIGINT) or when its channel closes (the main process
#   is gone); the main process stops its workers when it stops, and only those.
from __future__ import annotations

import array
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import h11
import msgpack
import trio

log = logging.getLogger("tessera.http")

READY = b"R"
OBSERVED = b"M"                  # + msgpack [[method, route, status, sent, received, s], ...]
OBSERVE_EVERY = 0.5
OBSERVE_BATCH = 2048             # observations per message
HANDOFF_BUFFER = 1024 * 1024     # the channel's socket buffers: a head and what followed it
# The routes a worker answers with GET (versions documents, the health check and routing errors
# come before routing and are answered too); any other route raises HandOff.
LOCAL_ROUTES = frozenset({
    "/v2/images", "/v2/images/{image_id}", "/v2/schemas/image", "/v2/schemas/images",
    "/v2/schemas/member", "/v2/schemas/members", "/v2/schemas/task", "/v2/schemas/tasks"})


class HandOff(Exception):
    """Raised by a worker's application, before anything was read or answered, for a
    request only the main process serves."""


def rebuilt_head(event: h11.Request) -> bytes:
    """The request head as the client sent it (h11 keeps each header's raw name)."""
    full = getattr(event.headers, "_full_items", None)
    items = [(raw, value) for raw, _, value in full] if type(full) is list \
        else list(event.headers)
    lines = [b"%s %s HTTP/%s\r\n" % (event.method, event.target, event.http_version)]
    lines += [b"%s: %s\r\n" % (name, value) for name, value in items]
    lines.append(b"\r\n")
    return b"".join(lines)


def listening_sockets(host: str, port: int, count: int, backlog: int = 1024
                      ) -> list[socket.socket]:
    """`count` listeners on one HOST:PORT with SO_REUSEPORT (port 0: the first picks it)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(family, kind, proto)
            out.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            addr = s.getsockname()            # the port the first one got
            s.listen(backlog)
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


@dataclass
class WorkerProcess:
    """A forked worker, as the main process sees it."""
    number: int
    pid: int
    channel: socket.socket
    exited: bool = False

    def terminate(self) -> None:
        if not self.exited:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                self.exited = True

    def reap(self, timeout: float) -> None:
        """Close the channel (a worker still waiting for READY, or draining, sees the main
        process go), wait up to `timeout` seconds for the worker to exit, then kill it."""
        self.channel.close()
        end = time.monotonic() + timeout
        while not self.exited:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid = self.pid
            if pid == self.pid:
                self.exited = True
                break
            if time.monotonic() > end:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.exited = True
                break
            time.sleep(0.02)


def fork_workers(listeners: list[socket.socket],
                 run_worker: Callable[[int, socket.socket, socket.socket], int]
                 ) -> list[WorkerProcess]:
    """Fork one worker per listener after the first (which stays with the main process).
    The child runs `run_worker(number, listener, channel)` and exits with its result."""
    workers: list[WorkerProcess] = []
    for number, listener in enumerate(listeners[1:], start=1):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HANDOFF_BUFFER)
        pid = os.fork()
        if pid == 0:                                   # the worker
            code = 1
            try:
                ours.close()
                for w in workers:
                    w.channel.close()
                for other in listeners:
                    if other is not listener:
                        other.close()
                code = run_worker(number, listener, theirs)
            except BaseException:                      # noqa: BLE001 - report, then exit
                log.exception("API worker %d failed", number)
            finally:
                os._exit(code)
        theirs.close()
        listener.close()
        workers.append(WorkerProcess(number, pid, ours))
    return workers


# -- the main process's side -------------------------------------------------------------

def announce_ready(workers: list[WorkerProcess]) -> None:
    """Tell each worker the engine is open: it may open the index and serve."""
    for w in workers:
        try:
            w.channel.send(READY)
        except OSError:
            w.exited = True


async def intake(worker: WorkerProcess, adopt: Callable[[trio.SocketStream, bytes], object],
                 observe: Callable[..., None] | None = None) -> None:
    """Receive the connections `worker` hands over and `adopt(stream, bytes_read)` each,
    and the requests it answered (`observe(...)` each), until its channel closes (the
    worker exited)."""
    channel = worker.channel
    channel.setblocking(False)
    while True:
        await trio.lowlevel.wait_readable(channel)
        try:
            data, fds, _, _ = socket.recv_fds(channel, HANDOFF_BUFFER, 1)
        except BlockingIOError:
            continue
        except OSError:
            data, fds = b"", []
        if not data and not fds:
            log.warning("API worker %d (pid %d) has exited: the other processes take its "
                        "share of new connections", worker.number, worker.pid)
            return
        for fd in fds[1:]:
            os.close(fd)
        if not fds:
            if observe is not None and data.startswith(OBSERVED):
                try:
                    for item in msgpack.unpackb(data[1:], use_list=False):
                        observe(*item)
                except (ValueError, TypeError, msgpack.UnpackException):
                    log.warning("API worker %d sent unreadable observations", worker.number)
            continue
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        await adopt(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), data)


# -- the worker's side -------------------------------------------------------------------

class Handoff:
    """A worker's channel to the main process."""

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        channel.setblocking(False)
        self._observed: list[tuple] = []

    async def give(self, sock: trio.socket.SocketType, event: h11.Request,
                   conn: h11.Connection) -> None:
        """Hand the connection over: its descriptor, and the request's head with whatever
        was read after it. The caller then closes its own descriptor."""
        payload = rebuilt_head(event) + conn.trailing_data[0]
        fds = array.array("i", [sock.fileno()])
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
        while True:
            try:
                self.channel.sendmsg([payload], ancillary)
                return
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.channel)

    def observe(self, *item) -> None:
        """A request this worker answered (the server's Observer), sent in batches."""
        self._observed.append(item)

    async def send_observations(self) -> None:
        """Forever: what was observed, to the main process, every OBSERVE_EVERY seconds."""
        while True:
            await trio.sleep(OBSERVE_EVERY)
            batch, self._observed = self._observed, []
            for i in range(0, len(batch), OBSERVE_BATCH):
                message = OBSERVED + msgpack.packb(batch[i:i + OBSERVE_BATCH])
                while True:
                    try:
                        self.channel.send(message)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(self.channel)
                    except OSError:
                        return

    async def _receive(self) -> bytes:
        """The main process's next message; b"" once it closed the channel."""
        while True:
            await trio.lowlevel.wait_readable(self.channel)
            try:
                return self.channel.recv(16)
            except BlockingIOError:
                continue
            except OSError:
                return b""

    async def wait_ready(self) -> bool:
        """Wait for the main process's READY; False if it went away first."""
        return await self._receive() == READY

    async def wait_closed(self) -> None:
        """Return once the main process has closed the channel (it exited)."""
        while await self._receive():
            pass
