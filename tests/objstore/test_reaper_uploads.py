# The s3 store's reaper aborts multipart uploads a crashed process left under its own
# packs/<writer>/ prefix once they were initiated more than the grace ago; another writer's
# uploads and recent ones (a pack being PUT right now) are left alone. Against a real radosgw.
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from tessera.engine.config import MiB
from tessera.engine.objstore.gc import TierReaper

_spec = importlib.util.spec_from_file_location("tessera_tests_objstore_test_store_u",
                                               Path(__file__).parent / "test_store.py")
_store = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_store)


def start_upload(s3, bucket: str, key: str) -> str:
    """A multipart upload with one part sent and never completed (a crash mid-upload)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1,
                   Body=os.urandom(5 * MiB))
    return upload_id


def uploads(s3, bucket: str) -> set[tuple[str, str]]:
    return {(u["Key"], u["UploadId"])
            for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", ())}


async def test_stale_own_multipart_uploads_are_aborted(tmp_path, s3_endpoint, s3_bucket, s3):
    engine = await _store.make_engine(tmp_path, s3_endpoint, s3_bucket, prefix="site/")
    try:
        store = engine.stores.get("obj")
        rec = await _store.upload(engine, os.urandom(2 * MiB), "obj")
        own = f"site/packs/{store.tier.writer}/{'ab' * 32}"
        other = f"site/packs/othernode-1234/{'cd' * 32}"
        outside = f"packs/{store.tier.writer}/{'ef' * 32}"        # not under the store prefix
        ids = {key: start_upload(s3, s3_bucket, key) for key in (own, other, outside)}
        assert uploads(s3, s3_bucket) == set(ids.items())

        reaper = TierReaper(store, store.tier)
        # initiated just now: within an hour's grace it may be a running upload
        first = await reaper.collect(now=time.time(), grace=3600.0)
        assert first.aborted_uploads == 0 and uploads(s3, s3_bucket) == set(ids.items())
        # past the grace: only this writer's upload goes, its parts with it
        later = await reaper.collect(now=time.time() + 7200.0, grace=3600.0)
        assert later.aborted_uploads == 1
        assert uploads(s3, s3_bucket) == {(other, ids[other]), (outside, ids[outside])}
        assert reaper.statistics()["aborted_uploads"] == 1

        # through the engine's reap with grace 0: counted in its result, nothing else touched
        again = start_upload(s3, s3_bucket, own)
        out = await engine.processes.reap(grace=0)
        assert out["obj"]["aborted_uploads"] == 1
        assert (own, again) not in uploads(s3, s3_bucket)
        assert len(uploads(s3, s3_bucket)) == 2
        await _store.assert_consistent(store)
        await _store.Pruner(store, budget=0).run_once()
        assert rec.status == "active" and await _store.download(engine, rec.id)
    finally:
        await engine.aclose()
