# A pack object of an s3 store that went bad or missing in the bucket while the local cache
# holds none of its chunks: a download never serves bad bytes and never hangs; it ends with
# the engine's Unavailable naming what failed (the API answers 503 before any byte), the bad
# bytes are not kept in the cache tier, and once the object is right again the same download
# is byte-identical.
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest
import trio

from tessera.engine.chunkid import digest
from tessera.engine.config import MiB
from tessera.engine.errors import Unavailable
from tessera.engine.pruner import Pruner



def _sibling(name: str):
    """A test module beside this one, for its helpers (tests are not a package)."""
    spec = importlib.util.spec_from_file_location(f"tessera_tests_objstore_{name}",
                                                  Path(__file__).parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_store, _api = _sibling("test_store"), _sibling("test_outage_api")
download, make_engine, rows_of, upload = (_store.download, _store.make_engine, _store.rows_of,
                                          _store.upload)
evict, request, sha, uploaded = _api.evict, _api.request, _api.sha, _api.uploaded

GUARD = 60.0          # a download that neither ends nor fails within this fails the test


def flipped(body: bytes) -> bytes:
    """The same number of bytes, every one of them different."""
    return bytes(b ^ 0xFF for b in body)


def resident_bad(store, ids) -> list[bytes]:
    """Chunks of `ids` the cache tier holds whose bytes do not hash to their id."""
    bad = []
    with store.index.read() as txn:
        entries = {cid: store.db.get(txn, cid) for cid in ids}
    for cid, entry in entries.items():
        if entry is not None and entry.resident:
            view = store.segments.view(entry.segment, entry.offset, entry.length)
            if digest(view) != cid:
                bad.append(cid)
    return bad


def resident(store, ids) -> int:
    with store.index.read() as txn:
        return sum(1 for cid in ids if (e := store.db.get(txn, cid)) is not None and e.resident)


@pytest.mark.parametrize("fault", ["garbage", "missing"])
async def test_a_bad_or_missing_pack_fails_the_download_cleanly(tmp_path, s3_endpoint,
                                                                s3_bucket, s3, fault):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        store = engine.stores.get("obj")
        data = os.urandom(5 * MiB) + bytes(MiB) + os.urandom(MiB)
        rec = await upload(engine, data, "obj")
        (obj,) = rows_of(store)
        key = store.tier.key(obj)
        ids = store.image_chunks(rec.id)
        good = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        await Pruner(store, budget=0).run_once()
        assert resident(store, ids) == 0

        if fault == "garbage":
            s3.put_object(Bucket=s3_bucket, Key=key, Body=flipped(good))
            assert s3.head_object(Bucket=s3_bucket, Key=key)["ContentLength"] == len(good)
        else:
            s3.delete_object(Bucket=s3_bucket, Key=key)
        served: list[bytes] = []
        with trio.fail_after(GUARD):
            with pytest.raises(Unavailable) as err:
                async for view in engine.open_download(rec.id):
                    served.append(bytes(view))
        assert served == []                   # the first window needs the pack: no byte
        message = err.value.message
        assert f"chunk(s) of image {rec.id} are not held here" in message
        if fault == "missing":                # the object store's own words are passed on
            assert f"object {key} is missing" in message
        else:                                 # and what was wrong with what it sent
            assert "failed verification" in message
        await engine.data.filler.settled()
        assert resident(store, ids) == 0      # nothing of the bad pack went into the cache
        assert resident_bad(store, ids) == []
        if fault == "garbage":
            assert engine.data.filler.rejected > 0

        s3.put_object(Bucket=s3_bucket, Key=key, Body=good)
        with trio.fail_after(GUARD):
            assert await download(engine, rec.id) == hashlib.sha256(data).hexdigest()
        await engine.data.filler.settled()
        assert resident_bad(store, ids) == []
    finally:
        await engine.aclose()


async def test_through_the_api_a_bad_pack_is_a_clear_503_then_whole_again(s3_node, s3,
                                                                          s3_bucket):
    server = s3_node(connect_timeout=1.0, read_timeout=2.0, retry_time=1.0)
    data = os.urandom(3 * MiB)
    image_id = await uploaded(server, data)
    evict(server)
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    good = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    path = f"/v2/images/{image_id}/file"
    for spoil in (lambda: s3.put_object(Bucket=s3_bucket, Key=key, Body=flipped(good)),
                  lambda: s3.delete_object(Bucket=s3_bucket, Key=key)):
        spoil()
        status, _, body = await trio.to_thread.run_sync(request, server, "GET", path)
        assert status == 503, (status, body[:500])
        assert b"are not held here and no source could provide them" in body
        assert b"Traceback" not in body and sha(body) != sha(data)
    s3.put_object(Bucket=s3_bucket, Key=key, Body=good)
    status, _, body = await trio.to_thread.run_sync(request, server, "GET", path)
    assert status == 200 and sha(body) == sha(data)
