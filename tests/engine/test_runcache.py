# The run cache (engine/runcache.py) on its own and under a real chunk store's reader: hits
# skip the index and give the same bytes, entries expire with the trust window, fills that
# raced an invalidation are refused, a removed segment is a miss, and the bound holds.
import importlib.util
import os
from pathlib import Path

import trio

from tessera.engine import reader
from tessera.engine.runcache import RunCache

MiB = 1 << 20

_spec = importlib.util.spec_from_file_location(
    "tessera_tests_storehelp", Path(__file__).parents[1] / "engine" / "storehelp.py")
_help = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_help)
store, put = _help.store, _help.put      # store: a fixture


def test_entries_expire_and_stale_fills_are_refused():
    c = RunCache(max_entries=3)
    g = c.generation
    c.put("a", ((1, 0, 10),), (), expires_ms=1000, generation=g)
    assert c.get("a", 999) == (((1, 0, 10),), ())
    assert c.get("a", 1000) is None and len(c) == 0        # expired and dropped
    c.invalidate()
    c.put("b", (5,), (), expires_ms=10**15, generation=g)  # resolved before the change
    assert c.get("b", 0) is None
    for k in "cdef":
        c.put(k, (5,), (), expires_ms=10**15, generation=c.generation)
    assert len(c) == 3 and c.get("c", 0) is None and c.get("f", 0) is not None


def _drain(r):
    out = bytearray()
    while batch := r.next_batch(files=True):
        for item in batch:
            out += item.tobytes() if isinstance(item, reader.FileRange) else item
    return bytes(out)


async def _pull(store, image_id, a=0, b=None):
    r = reader.ChunkReader(store, image_id, a, b)
    try:
        return await trio.to_thread.run_sync(_drain, r)
    finally:
        await r.aclose()


async def test_a_second_pull_is_served_from_the_run_cache(store, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", MiB)
    data = os.urandom(3 * MiB) + bytes(MiB) + os.urandom(MiB // 2)
    image_id = await put(store, data)
    assert await _pull(store, image_id) == data
    assert store.runs.hits == 0 and len(store.runs) == 5
    resolved = []
    real = reader.ChunkReader._resolve
    monkeypatch.setattr(reader.ChunkReader, "_resolve",
                        lambda self, ids: resolved.append(len(ids)) or real(self, ids))
    assert await _pull(store, image_id) == data
    assert store.runs.hits == 5 and resolved == []          # not one index lookup
    assert await _pull(store, image_id, 100, 2 * MiB + 5) == data[100:2 * MiB + 5]
    assert resolved                                          # other cuts: resolved again


async def test_invalidation_and_expiry_send_reads_back_to_the_index(store, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", MiB)
    data = os.urandom(2 * MiB)
    image_id = await put(store, data)
    await _pull(store, image_id)
    store.runs.invalidate()                                  # e.g. a chunk quarantined
    assert len(store.runs) == 0
    assert await _pull(store, image_id) == data and store.runs.hits == 0
    hits = store.runs.hits
    now = reader.ms(reader.time.time())
    window = int(store.cfg.trust_verified_for * 1000)
    key = next(iter(store.runs._entries))
    assert store.runs.get(key, now + window + 1000) is None  # the trust window ran out
    assert store.runs.hits == hits


async def test_a_removed_segment_is_a_miss_not_an_error(store, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", MiB)
    data = os.urandom(2 * MiB)
    image_id = await put(store, data)
    await _pull(store, image_id)
    key = next(iter(store.runs._entries))
    runs, cached = store.runs.get(key, 0)
    gone = max(seg for seg, _, _ in (r for r in runs if not isinstance(r, int))) + 1000
    store.runs.put(key, ((gone, 0, 10),), cached, 10**15, store.runs.generation)
    assert await _pull(store, image_id) == data              # resolved again, right bytes
