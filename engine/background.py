# The engine's background work: one trio task (`run`) that owns a nursery, runs the jobs
# submitted by the facade (import flows) and the periodic processes registered with it.
# Invariants:
# - Nothing here starts on its own: the composition root (or a test) runs `run()` in its
#   nursery; jobs submitted before that wait in the queue, none is lost.
# - A job that fails is logged and never takes the runner (or the node) down; each job
#   records its own outcome (task records), the runner only counts.
# - Periodic processes sleep `interval` seconds between rounds and can also be triggered
#   (`trigger(name)`) to run a round now.
# - A job runs in a copy of the context of the code that submitted it, so context
#   variables -- the request id of the request that started an import -- follow it into
#   its log lines.
from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

log = logging.getLogger("tessera.background")

Job = Callable[[], Awaitable[Any]]


@dataclass
class Periodic:
    name: str
    interval: float
    round: Callable[[], Awaitable[Any]]
    stats: Callable[[], dict[str, Any]] | None = None
    wake: trio.Event = field(default_factory=trio.Event)
    rounds: int = 0
    failures: int = 0
    last_round: float = 0.0


class Background:
    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[tuple[Job, contextvars.Context]](
            math.inf)
        self.periodic: dict[str, Periodic] = {}
        self.started = 0
        self.finished = 0
        self.failed = 0
        self.running = False

    def submit(self, job: Job) -> None:
        self.started += 1
        self._send.send_nowait((job, contextvars.copy_context()))

    def add_periodic(self, name: str, interval: float,
                     round_fn: Callable[[], Awaitable[Any]],
                     stats: Callable[[], dict[str, Any]] | None = None) -> None:
        """Register a process; `stats` is its statistics() (numbers merged into ours)."""
        self.periodic[name] = Periodic(name, interval, round_fn, stats)

    def trigger(self, name: str) -> None:
        self.periodic[name].wake.set()

    def statistics(self) -> dict[str, Any]:
        return {"jobs_started": self.started, "jobs_finished": self.finished,
                "jobs_failed": self.failed, "running": self.running,
                "periodic": {p.name: _process_stats(p) for p in self.periodic.values()}}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.running = True
            for p in self.periodic.values():
                nursery.start_soon(self._loop, p)
            task_status.started()
            try:
                async for job, context in self._recv:
                    # trio gives a new task a copy of the spawning context: spawn from the
                    # submitter's
                    context.run(nursery.start_soon, self._one, job)
            finally:
                self.running = False

    async def _one(self, job: Job) -> None:
        try:
            await job()
        except Exception:  # noqa: BLE001 - a job records its own failure; keep the runner
            self.failed += 1
            log.exception("background job failed")
        finally:
            self.finished += 1

    async def _loop(self, p: Periodic) -> None:
        while True:
            with trio.move_on_after(p.interval if p.interval > 0 else math.inf):
                await p.wake.wait()
            p.wake = trio.Event()
            try:
                await p.round()
            except Exception:  # noqa: BLE001
                p.failures += 1
                log.exception("periodic process %s failed", p.name)
            p.rounds += 1
            p.last_round = time.time()


def _process_stats(p: Periodic) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.stats is not None:
        try:
            out.update(p.stats())
        except Exception:  # noqa: BLE001 - statistics never take a caller down
            log.exception("statistics of %s failed", p.name)
    out.update({"rounds": p.rounds, "failures": p.failures, "interval": p.interval,
                "last_round": p.last_round})
    return out


class RateLimiter:
    """A token bucket: consume(n) waits so that on average at most `rate` units pass per
    second (bursts up to one second's worth). rate None or <= 0: unlimited."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._tokens = float(rate or 0)
        self._stamp = time.monotonic()
        self.waited = 0.0

    async def consume(self, n: int) -> None:
        if not self.rate or self.rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= n
        if self._tokens < 0:
            delay = -self._tokens / self.rate
            self.waited += delay
            await trio.sleep(delay)
