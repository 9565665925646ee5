# fsck and stats for a data directory: check the index against the segment files and the
# manifests, rehash every chunk, and optionally repair what can be derived again.
# Invariants:
# - Errors are states that lose or endanger data (a missing or corrupt chunk, a record that
#   does not match the index, a refcount below its references); warnings are accounting that
#   drifted without endangering data (live bytes, queue keys, orphan files, uncommitted tails).
# - Repair only rewrites what is derived from other records (refcounts from manifests, the
#   reaper and lru queues, live bytes, the cache counter) and removes bytes no index entry
#   names; it never invents chunk bytes.
# - A damaged segment (a bad group or record header, a chunk failing BLAKE3, a file shorter
#   than its committed length) is evacuated by repair: every chunk of it whose bytes still
#   hash to its id is copied into a fresh segment, the others are marked lost (not resident: readers refuse
#   them, a later upload or a peer holding the same bytes makes them resident again), and
#   the file is moved to DATA/quarantine/. Images referencing a lost chunk are reported as
#   errors until their bytes return. Repair runs with the node stopped.
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tessera.engine import manifest
from tessera.engine.chunkdb import (CACHE, CACHE_BYTES, STORE, ChunkDB, ChunkEntry, ms, seg_key,
                                    time_key)
from tessera.engine.chunkid import digest
from tessera.engine.chunkstore import compute_stats, open_index
from tessera.engine.config import EngineConfig
from tessera.engine.errors import CorruptData, StoreMismatch
from tessera.engine.index import pack
from tessera.engine.records import id_from_key
from tessera.engine.segments import (RECORD, SegmentGone, Segments, parse_record,
                                     parse_segment_name, segment_name)


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "warnings": self.warnings,
                "repaired": self.repaired, "counts": self.counts}

    def render(self) -> str:
        lines = [f"fsck: {'OK' if self.ok else 'FAILED'}  " +
                 "  ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))]
        lines += [f"error: {e}" for e in self.errors]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"repaired: {r}" for r in self.repaired]
        return "\n".join(lines)

    def __str__(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def collect_stats(cfg: EngineConfig) -> dict[str, int]:
    if not (cfg.index_dir / "data.mdb").exists():
        return compute_stats_empty()
    index = open_index(cfg)
    try:
        return compute_stats(index)
    finally:
        index.close()


def compute_stats_empty() -> dict[str, int]:
    return {"images": 0, "logical_bytes": 0, "zero_bytes": 0, "manifests": 0, "chunks": 0,
            "stored_bytes": 0, "segment_bytes": 0, "segments": 0, "cache_bytes": 0,
            "unreferenced_chunks": 0}


def run_fsck(cfg: EngineConfig, repair: bool = False, *, index: Any = None) -> Report:
    """Check (and with `repair`, fix) the data directory of `cfg`. Pass `index` to check a
    store this process already has open (LMDB forbids opening one environment twice)."""
    report = Report()
    if index is not None:
        segments = Segments(cfg.segments_dir, segment_size=cfg.segment_size, durable=cfg.durable)
        try:
            _Checker(cfg, index, segments, report).run(repair)
        finally:
            segments.close()
        return report
    if not (cfg.index_dir / "data.mdb").exists():
        report.errors.append(f"no index in {cfg.data_dir}")
        return report
    try:
        index = open_index(cfg)
    except StoreMismatch as exc:
        report.errors.append(exc.message)
        return report
    segments = Segments(cfg.segments_dir, segment_size=cfg.segment_size, durable=cfg.durable)
    try:
        _Checker(cfg, index, segments, report).run(repair)
    finally:
        segments.close()
        index.close()
    return report


class _Checker:
    def __init__(self, cfg: EngineConfig, index: Any, segments: Segments, report: Report) -> None:
        self.cfg, self.index, self.segments, self.report = cfg, index, segments, report
        self.db = ChunkDB(index)
        self.damaged: set[int] = set()      # segments to evacuate
        self.bad: set[bytes] = set()        # chunks whose bytes cannot be trusted
        self.lost: set[bytes] = set()       # referenced store chunks held nowhere here

    def run(self, repair: bool) -> None:
        db, report = self.db, self.report
        with self.index.read() as txn:
            segs = db.all_segments(txn)
        on_disk = self._files()
        fixes: list[Any] = []
        for number, seg in segs.items():
            size = on_disk.get(number)
            if size is None:
                if seg.live:
                    report.errors.append(f"segment {number} is missing")
            elif size < seg.committed:
                report.errors.append(f"segment {number} is {size} bytes, the index committed "
                                     f"{seg.committed}")
            elif size > seg.committed:
                report.warnings.append(f"segment {number}: {size - seg.committed} uncommitted "
                                       f"bytes at the end")
                if repair:
                    fixes.append(("truncate", number, seg.committed))
        for number in on_disk.keys() - segs.keys():
            if on_disk[number] == 0:
                continue                          # a fresh, still empty writable segment
            report.warnings.append(f"segment file {number} is not in the index")
            if repair:
                fixes.append(("unlink", number))

        for number, seg in segs.items():
            if on_disk.get(number) is None or seg.committed == 0:
                continue
            try:
                for _ in self.segments.records(number, min(seg.committed, on_disk[number])):
                    pass
            except (CorruptData, SegmentGone) as exc:
                report.errors.append(f"segment {number}: {exc}")
                self.damaged.add(number)

        live: Counter = Counter()
        refs = self._manifest_refs()
        cache_total = 0
        chunks = bad = 0
        entries: dict[bytes, ChunkEntry] = {}
        with self.index.read() as txn:
            with txn.cursor(db=db.chunks) as cur:
                for key, raw in cur:
                    entries[bytes(key)] = ChunkEntry.unpack(raw)
            unref_keys = {bytes(k) for k, _ in txn.cursor(db=db.unref)}
            lru_keys = {bytes(k) for k, _ in txn.cursor(db=db.lru)}
            counter = db.cache_bytes(txn)
        expected_unref, expected_lru = set(), set()
        for cid, entry in entries.items():
            chunks += 1
            if entry.resident:
                if not self._check_chunk(cid, entry, segs):
                    bad += 1
                    self.bad.add(cid)
                    self.damaged.add(entry.segment)
                live[entry.segment] += entry.record_bytes
                if entry.residency == CACHE:
                    cache_total += entry.length
                    expected_lru.add(time_key(entry.accessed_at, cid))
            elif entry.residency == STORE and entry.refcount > 0:
                report.errors.append(f"chunk {cid.hex()} is lost: referenced, not held here")
                self.lost.add(cid)
            wanted = refs.pop(cid, 0)
            if entry.refcount != wanted:
                msg = f"chunk {cid.hex()}: refcount {entry.refcount}, manifests reference it {wanted} times"
                (report.errors if entry.refcount < wanted else report.warnings).append(msg)
                if repair:
                    fixes.append(("refcount", cid, wanted))
            if (wanted if repair else entry.refcount) == 0:
                expected_unref.add(time_key(entry.unref_at or ms(0.001), cid))
        for cid, n in refs.items():
            report.errors.append(f"chunk {cid.hex()} is referenced {n} times but not indexed")
        for key in unref_keys - expected_unref:
            report.warnings.append(f"stale reaper queue key {key.hex()}")
        if not repair:
            for key in expected_unref - unref_keys:
                report.warnings.append(f"unreferenced chunk {key[8:].hex()} is not queued for the reaper")
        for key in lru_keys - expected_lru:
            report.warnings.append(f"stale lru key {key.hex()}")
        for key in expected_lru - lru_keys:
            report.warnings.append(f"cache chunk {key[8:].hex()} is missing from the lru")
        for number, seg in segs.items():
            if seg.live != live.get(number, 0):
                report.warnings.append(f"segment {number}: live bytes {seg.live}, counted "
                                       f"{live.get(number, 0)}")
        if counter != cache_total:
            report.warnings.append(f"cache_bytes is {counter}, counted {cache_total}")
        report.counts.update(chunks=chunks, bad_chunks=bad, segments=len(segs),
                             manifests=self._manifests, lost_chunks=len(self.lost))
        if self.bad or self.lost:
            for image, n in sorted(self._images_with(self.bad | self.lost).items()):
                report.errors.append(f"image {image} references {n} lost or damaged chunk(s)")
        if repair and (fixes or report.warnings or self.damaged):
            self._repair(fixes, live, cache_total, unref_keys, lru_keys, expected_lru)
        if repair and self.damaged:
            self._evacuate(segs)

    def _images_with(self, cids: set[bytes]) -> dict[str, int]:
        """Image id -> how many extents of its manifest name one of `cids`."""
        db, out = self.db, Counter()
        with self.index.read() as txn:
            heads = [(bytes(k), manifest.Head.load(v))
                     for k, v in txn.cursor(db=db.manifests) if len(k) == 16]
            for image, head in heads:
                for number in range(len(head.pages)):
                    page = manifest.read_page(txn, db.manifests, image, number)
                    if page is None:
                        break
                    hits = sum(1 for cid in page.ids if cid is not None and cid in cids)
                    if hits:
                        out[id_from_key(image)] += hits
        return dict(out)

    def _evacuate(self, segs: dict) -> None:
        """Copy the chunks of damaged segments that still verify into a fresh segment,
        mark the others lost, drop the damaged segments from the index and move their
        files to DATA/quarantine/."""
        cfg, db, report = self.cfg, self.db, self.report
        with self.index.read() as txn:
            known = {n: (s.committed, s.sealed) for n, s in db.all_segments(txn).items()}
            rows = [(bytes(k), ChunkEntry.unpack(v)) for k, v in txn.cursor(db=db.chunks)]
        fresh = Segments(cfg.segments_dir, segment_size=cfg.segment_size, durable=cfg.durable)
        fresh.recover(known)                 # appends go to segments after every known one
        for number in self.damaged:
            fresh.claim(number)
        lease = fresh.lease()
        moved: list[tuple[bytes, int, Any]] = []
        lost: list[bytes] = []
        try:
            for cid, entry in rows:
                if entry.segment not in self.damaged:
                    continue
                try:       # content-addressed: bytes that still hash to their id are good
                    view = self.segments.view(entry.segment, entry.offset, entry.length)
                    if digest(view) != cid:
                        view = None
                except (SegmentGone, CorruptData):
                    view = None
                if view is None:
                    lost.append(cid)
                    continue
                placed = lease.append([(cid, view)])[0]
                moved.append((cid, entry.segment, placed))
            fresh.sync(set(lease.spans), directory=True)
            damaged, size = set(self.damaged), cfg.segment_size

            def job(txn: Any) -> None:
                for cid, old, placed in moved:
                    entry = db.get(txn, cid)
                    if entry is None or entry.segment != old:
                        continue
                    entry.segment, entry.offset, entry.header = \
                        placed.segment, placed.offset, placed.header
                    db.put(txn, cid, entry)
                    db.add_live(txn, placed.segment, entry.record_bytes)
                for cid in lost:
                    entry = db.get(txn, cid)
                    if entry is None or entry.segment not in damaged:
                        continue
                    if entry.refcount == 0:
                        db.drop(txn, cid, entry)
                        continue
                    db.uncache(txn, cid, entry)
                    entry.segment = None
                    entry.residency = STORE
                    db.put(txn, cid, entry)
                for number, (start, end) in lease.spans.items():
                    if end > start:
                        db.commit_length(txn, number, end, size)
                for number in damaged:
                    txn.delete(seg_key(number), db=db.segments)

            self.index.writer.run_blocking(job)
        finally:
            fresh.release(lease)
            fresh.close()
        quarantine = cfg.data_dir / "quarantine"
        quarantine.mkdir(exist_ok=True)
        for number in sorted(self.damaged):
            path = cfg.segments_dir / segment_name(number)
            if path.exists():
                os.replace(path, quarantine / segment_name(number))
                report.repaired.append(f"segment {number} moved to quarantine/")
        report.repaired.append(f"{len(moved)} chunk(s) of damaged segments copied, "
                               f"{len(lost)} lost")

    def _files(self) -> dict[int, int]:
        out = {}
        if self.cfg.segments_dir.exists():
            for entry in os.scandir(self.cfg.segments_dir):
                number = parse_segment_name(entry.name)
                if number is not None:
                    out[number] = entry.stat().st_size
        return out

    def _manifest_refs(self) -> Counter:
        db, report = self.db, self.report
        refs: Counter = Counter()
        self._manifests = 0
        with self.index.read() as txn:
            heads = [(bytes(k), manifest.Head.load(v))
                     for k, v in txn.cursor(db=db.manifests) if len(k) == 16]
        for image, head in heads:
            self._manifests += 1
            total = 0
            with self.index.read() as txn:
                for number, first in enumerate(head.pages):
                    page = manifest.read_page(txn, db.manifests, image, number)
                    if page is None or page.first != first or page.first != total:
                        report.errors.append(f"manifest of {image.hex()}: page {number} "
                                             f"missing or misplaced")
                        break
                    total += sum(page.lengths)
                    refs.update(cid for cid in page.ids if cid is not None)
            if total != head.size:
                report.errors.append(f"manifest of {image.hex()}: extents sum to {total}, "
                                     f"size is {head.size}")
        return refs

    def _check_chunk(self, cid: bytes, entry: ChunkEntry, segs: dict) -> bool:
        report = self.report
        seg = segs.get(entry.segment)
        where = f"chunk {cid.hex()} (segment {entry.segment} @ {entry.offset})"
        if seg is None or entry.offset + entry.length > seg.committed or \
                entry.header + RECORD.size > seg.committed:
            report.errors.append(f"{where}: outside the committed part of its segment")
            return False
        try:
            base = self.segments.base(entry.segment, entry.offset + entry.length)
        except (SegmentGone, CorruptData) as exc:
            report.errors.append(f"{where}: {exc}")
            return False
        rec = parse_record(base[entry.header:entry.header + RECORD.size])
        if rec is None or rec.chunk_id != cid or rec.length != entry.length \
                or rec.offset != entry.offset:
            report.errors.append(f"{where}: record header does not match the index")
            return False
        if digest(base[entry.offset:entry.offset + entry.length]) != cid:
            report.errors.append(f"{where}: bytes fail BLAKE3 verification")
            return False
        return True

    def _repair(self, fixes: list, live: Counter, cache_total: int, unref_keys: set,
                lru_keys: set, expected_lru: set) -> None:
        db, report = self.db, self.report
        now = ms(__import__("time").time())

        def job(txn: Any) -> None:
            for fix in fixes:
                if fix[0] == "refcount":
                    _, cid, wanted = fix
                    entry = db.get(txn, cid)
                    entry.refcount = wanted
                    if wanted:
                        db.clear_unref(txn, cid, entry)
                    db.put(txn, cid, entry)
            for key in unref_keys:
                txn.delete(key, db=db.unref)
            for key in lru_keys - expected_lru:
                txn.delete(key, db=db.lru)
            with txn.cursor(db=db.chunks) as cur:
                rows = [(bytes(k), ChunkEntry.unpack(v)) for k, v in cur]
            for cid, entry in rows:
                entry.unref_at = 0
                if entry.refcount == 0:
                    db.mark_unref(txn, cid, entry, now)
                if entry.residency == CACHE and entry.resident:
                    if not entry.accessed_at:
                        entry.accessed_at = now
                    txn.put(time_key(entry.accessed_at, cid), b"", db=db.lru)
                db.put(txn, cid, entry)
            for number, seg in db.all_segments(txn).items():
                seg.live = live.get(number, 0)
                db.put_segment(txn, number, seg)
            txn.put(CACHE_BYTES, pack(cache_total), db=db.meta)

        self.index.writer.run_blocking(job)
        report.repaired.append("refcounts, reaper queue, lru, live bytes and cache counter rebuilt")
        for fix in fixes:
            if fix[0] == "truncate":
                os.truncate(self.cfg.segments_dir / f"{fix[1]:08d}.seg", fix[2])
                report.repaired.append(f"segment {fix[1]} truncated to {fix[2]}")
            elif fix[0] == "unlink":
                os.unlink(self.cfg.segments_dir / f"{fix[1]:08d}.seg")
                report.repaired.append(f"segment file {fix[1]} removed")
