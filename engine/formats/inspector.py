# The streaming dispatcher: FormatInspector is fed the pieces of an upload in order and keeps
# only what the format probes need (the head, a rolling tail, and regions probes ask for),
# then finish() turns the probes' findings into one Verdict.
# Invariants (sans-IO, bounded):
# - Retained bytes never exceed RETAINED_MAX whatever the input: the head is HEAD_BYTES, the
#   tail TAIL_BYTES, each region at most REGION_MAX, at most REGIONS_MAX regions in all.
# - Past the head, with no region pending, feed() only refreshes the tail (O(TAIL_BYTES)).
# - The verdict depends only on the bytes, never on how they were split into pieces.
# - Never two formats: several signature matches are refused, except ISO+GPT (a hybrid ISO,
#   kept as iso) and a fixed VHD holding an MBR/GPT disk (kept as vhd).
from __future__ import annotations

from typing import Any

from tessera.engine.formats import gpt, iso, luks, qcow2, qed, vdi, vhd, vhdx, vmdk
from tessera.engine.formats.probe import HEAD_BYTES, REGION_MAX, TAIL_BYTES, Probe
from tessera.engine.formats.verdict import Problem, Verdict

PROBES = (qcow2.Qcow2Probe, qed.QedProbe, vmdk.VmdkProbe, vhd.VhdProbe, vhdx.VhdxProbe,
          vdi.VdiProbe, iso.IsoProbe, gpt.GptProbe, luks.LuksProbe)
REGIONS_MAX = 16
RETAINED_MAX = HEAD_BYTES + TAIL_BYTES + 2 * REGION_MAX


class _Region:
    __slots__ = ("probe", "key", "offset", "length", "data", "missed")

    def __init__(self, probe: Probe, key: str, offset: int, length: int) -> None:
        self.probe = probe
        self.key = key
        self.offset = offset
        self.length = length
        self.data = bytearray()
        self.missed = False

    @property
    def done(self) -> bool:
        return self.missed or len(self.data) == self.length


class FormatInspector:
    """feed(piece) for every piece in order, then finish(total_size) once."""

    def __init__(self) -> None:
        self._probes: list[Probe] = [cls() for cls in PROBES]
        self._pos = 0
        self._head = bytearray()
        self._head_done = False
        self._tail = bytearray()
        self._pending: list[_Region] = []
        self._asked = 0
        self._region_bytes = 0
        self._piece: memoryview = memoryview(b"")
        self._piece_start = 0
        self._verdict: Verdict | None = None
        self.peak_retained = 0

    # -- streaming ------------------------------------------------------------------------
    def feed(self, piece: Any) -> None:
        if self._verdict is not None:
            raise RuntimeError("feed() after finish()")
        mv = piece if isinstance(piece, memoryview) else memoryview(piece)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        n = len(mv)
        if n == 0:
            return
        start = self._pos
        self._pos = start + n
        if n >= TAIL_BYTES:
            self._tail[:] = mv[n - TAIL_BYTES:]
        else:
            self._tail += mv
            if len(self._tail) > TAIL_BYTES:
                del self._tail[:len(self._tail) - TAIL_BYTES]
        if self._head_done and not self._pending:
            return
        self._piece, self._piece_start = mv, start
        try:
            for region in self._pending:
                self._pull(region)
            if not self._head_done and start < HEAD_BYTES:
                self._head += mv[:HEAD_BYTES - start]
                if len(self._head) == HEAD_BYTES:
                    self._announce_head()
            self._deliver()
        finally:
            self._piece = memoryview(b"")
        self._note_retained()

    def finish(self, total_size: int | None = None) -> Verdict:
        if self._verdict is not None:
            return self._verdict
        if total_size is not None and total_size != self._pos:
            raise ValueError(f"finish({total_size}) after {self._pos} bytes were fed")
        if not self._head_done:
            self._announce_head()
        while self._pending:
            for region in self._pending:
                if not region.done:
                    region.missed = True
            self._deliver()
        tail = bytes(self._tail)
        for probe in self._probes:
            probe.on_end(self._pos, tail)
        self._verdict = self._decide()
        self._head = bytearray()
        self._tail = bytearray()
        return self._verdict

    # -- bounded state ----------------------------------------------------------------------
    def retained_bytes(self) -> int:
        return len(self._head) + len(self._tail) + self._region_bytes

    def _note_retained(self) -> None:
        now = self.retained_bytes()
        if now > self.peak_retained:
            self.peak_retained = now

    # -- regions ------------------------------------------------------------------------------
    def _announce_head(self) -> None:
        self._head_done = True
        head = bytes(self._head)
        for probe in self._probes:
            probe.on_head(head, self._want_for(probe, len(head)))

    def _want_for(self, probe: Probe, floor: int):
        """want() for a probe reacting to the stream up to `floor`. A region reaching below
        `floor` must lie in the head; otherwise it went by (whatever the piece sizes: this
        keeps verdicts independent of how the stream was cut)."""
        def want(key: str, offset: int, length: int) -> None:
            region = _Region(probe, key, offset, length)
            self._asked += 1
            if (offset < 0 or length <= 0 or length > REGION_MAX
                    or self._asked > REGIONS_MAX
                    or (offset < floor and min(offset + length, floor) > HEAD_BYTES)):
                region.missed = True
            else:
                self._pull(region)
            self._pending.append(region)
        return want

    def _pull(self, region: _Region) -> None:
        """Copy what the head and the current piece hold of `region`, in order."""
        end = region.offset + region.length
        while not region.done:
            at = region.offset + len(region.data)
            piece_start = self._piece_start
            piece_end = piece_start + len(self._piece)
            before = len(region.data)
            if at < len(self._head):
                region.data += self._head[at:min(end, len(self._head))]
            elif piece_start <= at < piece_end:
                region.data += self._piece[at - piece_start:min(end, piece_end) - piece_start]
            elif at >= self._pos:
                return  # still ahead in the stream
            else:
                region.missed = True  # it went by before anyone asked for it
                continue
            self._region_bytes += len(region.data) - before
            self._note_retained()

    def _deliver(self) -> None:
        while True:
            ready = [r for r in self._pending if r.done]
            if not ready:
                return
            self._pending = [r for r in self._pending if not r.done]
            for region in ready:
                self._region_bytes -= len(region.data)
                data = None if region.missed else bytes(region.data)
                region.probe.on_region(region.key, data,
                                       self._want_for(region.probe,
                                                      region.offset + region.length))

    # -- verdict ------------------------------------------------------------------------------
    def _decide(self) -> Verdict:
        found = {p.name: p for p in self._probes if p.matched}
        names = set(found)
        if names == {"iso", "gpt"}:
            names = {"iso"}
        elif names == {"vhd", "gpt"} and found["vhd"].fixed:
            names = {"vhd"}
        if not names:
            return Verdict("raw", self._pos, self._pos)
        if len(names) > 1:
            listed = tuple(sorted(names))
            return Verdict(None, None, self._pos,
                           (Problem("formats", "content matches several formats: "
                                    + ", ".join(listed)),), listed)
        name = names.pop()
        probe = found[name]
        return Verdict(name, probe.virtual_size, self._pos, tuple(probe.problems), (name,))
