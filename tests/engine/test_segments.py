# Segment files: grouped records, recovery to the committed length, leases, mappings.
import os

import pytest

from tessera.engine.chunkid import digest
from tessera.engine.errors import CorruptData, StorageFull
from tessera.engine.segments import RECORD, Segments, parse_record, segment_name


def make(tmp_path, **kw):
    seg = Segments(tmp_path / "segments", segment_size=kw.pop("segment_size", 1 << 20),
                   durable=False, **kw)
    seg.recover({})
    return seg


def chunks(n, size=10_000):
    out = []
    for i in range(n):
        data = os.urandom(size)
        out.append((digest(data), memoryview(data)))
    return out


def test_group_records_read_back_and_payloads_are_contiguous(tmp_path):
    seg = make(tmp_path)
    lease = seg.lease()
    items = chunks(5)
    placed = lease.append(items)
    for (cid, data), p in zip(items, placed):
        assert seg.view(p.segment, p.offset, p.length) == data
        rec = parse_record(seg.view(p.segment, p.header, RECORD.size))
        assert rec.chunk_id == cid and rec.offset == p.offset and rec.length == len(data)
    for a, b in zip(placed, placed[1:]):
        assert a.offset + a.length == b.offset        # one view can cover both
    walked = list(seg.records(placed[0].segment, placed[-1].group_end))
    assert [r.chunk_id for r in walked] == [cid for cid, _ in items]


def test_a_bad_header_is_detected(tmp_path):
    seg = make(tmp_path)
    placed = seg.lease().append(chunks(2))
    path = tmp_path / "segments" / segment_name(placed[0].segment)
    with open(path, "r+b") as fh:
        fh.seek(placed[1].header + 10)
        fh.write(b"\xff")
    with pytest.raises(CorruptData):
        reader = Segments(tmp_path / "segments", segment_size=1 << 20, durable=False)
        list(reader.records(placed[0].segment, placed[-1].group_end))


def test_recover_truncates_writable_segments_and_removes_unknown_files(tmp_path):
    seg = make(tmp_path, segment_size=40_000)
    lease = seg.lease()
    first = lease.append(chunks(2))          # 20 KB: writable
    lease.append(chunks(3))                  # passes 40 KB: full, next append switches
    extra = lease.append(chunks(1))
    assert extra[0].segment != first[0].segment
    committed = first[-1].group_end
    sealed_len = os.path.getsize(tmp_path / "segments" / segment_name(first[0].segment))
    seg.close()
    # the index knows segment 1 up to `committed` (not sealed) and nothing of segment 2
    again = Segments(tmp_path / "segments", segment_size=40_000, durable=False)
    done = again.recover({first[0].segment: (committed, False)})
    assert done["truncated"] == 1 and done["removed"] == 1
    assert os.path.getsize(tmp_path / "segments" / segment_name(first[0].segment)) == committed
    assert not (tmp_path / "segments" / segment_name(extra[0].segment)).exists()
    assert sealed_len > committed
    # a sealed segment is never truncated
    again.close()
    third = Segments(tmp_path / "segments", segment_size=40_000, durable=False)
    assert third.recover({first[0].segment: (100, True)})["truncated"] == 0


def test_rollback_cuts_a_lease_back(tmp_path):
    seg = make(tmp_path)
    kept = seg.lease()
    p = kept.append(chunks(1))[0]
    seg.release(kept)
    lease = seg.lease()
    lease.append(chunks(3))
    seg.rollback(lease)
    seg.release(lease)
    assert os.path.getsize(tmp_path / "segments" / segment_name(p.segment)) == p.group_end


def test_a_view_outlives_the_unlink_of_its_segment(tmp_path):
    seg = make(tmp_path)
    items = chunks(3)
    placed = seg.lease().append(items)
    view = seg.view(placed[1].segment, placed[1].offset, placed[1].length)
    seg.remove(placed[1].segment)
    assert not (tmp_path / "segments" / segment_name(placed[1].segment)).exists()
    assert bytes(view) == bytes(items[1][1])


def test_capped_store_raises_storage_full_and_keeps_nothing(tmp_path):
    seg = make(tmp_path, max_stored_bytes=50_000)
    lease = seg.lease()
    lease.append(chunks(3))
    before = seg.total_bytes
    with pytest.raises(StorageFull):
        lease.append(chunks(3))
    assert seg.total_bytes == before
