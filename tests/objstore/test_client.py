# engine/objstore/client.py against a real Ceph radosgw on 127.0.0.1: every operation, the
# error mapping (403, missing bucket/object, short ranges), credentials, and outages (radosgw
# killed or frozen: Unavailable after the bounded retry time; a request started during a
# short outage succeeds once radosgw is back).
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
import trio

from tessera.engine.errors import (CorruptData, InvalidInput, StoreAccessDenied, Unavailable)
from tessera.engine.objstore.client import ObjectStore, s3_config
from tessera.engine.stores import StoreConfig

MiB = 1024 * 1024


def file_with(tmp_path, size: int, seed: int = 1) -> tuple[str, bytes]:
    data = b"".join(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=64).digest()
                    for i in range(size // 64 + 1))[:size]
    path = tmp_path / f"f{seed}"
    path.write_bytes(data)
    return str(path), data


def stored(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


async def test_bytes_round_trip(s3_config):
    store = ObjectStore(s3_config)
    assert await store.head("a") is None
    await store.put_bytes("a", b"hello world")
    assert await store.head("a") == 11
    assert await store.get_range("a", 0, 11) == b"hello world"
    assert await store.get_range("a", 6, 5) == b"world"
    assert await store.get_range("a", 3, 0) == b""
    await store.put_bytes("a", b"HELLO world")           # idempotent overwrite
    assert await store.get_range("a", 0, 5) == b"HELLO"
    await store.delete("a")
    assert await store.head("a") is None
    await store.delete("a")                              # deleting twice is fine


async def test_put_file_range_single_put(s3_config, s3, tmp_path):
    path, data = file_with(tmp_path, 3 * MiB + 17)
    store = ObjectStore(s3_config)
    await store.put_file("pack/1", path, 1000, 2 * MiB + 5)
    assert stored(s3, s3_config.bucket, "pack/1") == data[1000:1000 + 2 * MiB + 5]
    head = s3.head_object(Bucket=s3_config.bucket, Key="pack/1")
    assert "-" not in head["ETag"]                       # one PUT, not multipart
    await store.put_file("pack/1", path, 1000, 2 * MiB + 5)   # again: same object
    assert await store.head("pack/1") == 2 * MiB + 5
    assert await store.get_range("pack/1", MiB, 10) == data[1000 + MiB:1000 + MiB + 10]


async def test_put_file_multipart_above_threshold(s3_config, s3, tmp_path):
    path, data = file_with(tmp_path, 13 * MiB, seed=2)
    cfg = replace(s3_config, multipart_threshold=6 * MiB, part_size=5 * MiB)
    store = ObjectStore(cfg)
    await store.put_file("big", path, 7, 13 * MiB - 7)
    head = s3.head_object(Bucket=cfg.bucket, Key="big")
    assert head["ETag"].strip('"').endswith("-3")        # 5 + 5 + 3 MiB parts
    assert stored(s3, cfg.bucket, "big") == data[7:]
    assert s3.list_multipart_uploads(Bucket=cfg.bucket).get("Uploads", []) == []


async def test_multipart_failure_aborts_the_upload(s3_config, s3, tmp_path):
    path, _ = file_with(tmp_path, 11 * MiB, seed=3)
    store = ObjectStore(replace(s3_config, multipart_threshold=6 * MiB, part_size=5 * MiB))
    with pytest.raises(CorruptData, match="file ended"):
        await store.put_file("big", path, 0, 12 * MiB)  # the file is shorter than the range
    assert s3.list_multipart_uploads(Bucket=s3_config.bucket).get("Uploads", []) == []
    assert await store.head("big") is None


async def test_get_range_checks_the_object(s3_config):
    store = ObjectStore(s3_config)
    await store.put_bytes("short", b"0123456789")
    with pytest.raises(CorruptData, match="gave 4 bytes"):
        await store.get_range("short", 6, 10)            # runs past the end
    with pytest.raises(CorruptData, match="shorter than the range"):
        await store.get_range("short", 20, 5)            # starts past the end
    with pytest.raises(CorruptData, match="missing") as exc:
        await store.get_range("nothing", 0, 5)
    assert s3_config.bucket in exc.value.message and s3_config.endpoint in exc.value.message


async def test_list_pages_and_prefixes(s3_config, s3):
    a = ObjectStore(replace(s3_config, prefix="node-a", list_page_size=4))
    b = ObjectStore(replace(s3_config, prefix="node-b/"))
    async with trio.open_nursery() as nursery:
        for i in range(11):
            nursery.start_soon(a.put_bytes, f"packs/{i:03d}", b"x" * i)
    await a.put_bytes("other", b"y")
    await b.put_bytes("packs/000", b"zz")
    assert await a.list("packs/") == [(f"packs/{i:03d}", i) for i in range(11)]
    assert len(await a.list()) == 12
    assert await b.list() == [("packs/000", 2)]
    assert stored(s3, s3_config.bucket, "node-a/packs/003") == b"xxx"   # "/" was added
    assert await ObjectStore(s3_config).list("nothing/") == []


async def test_wrong_secret_is_access_denied_at_once(s3_config, caplog):
    store = ObjectStore(replace(s3_config, secret_key="wrong", retry_time=60.0))
    caplog.set_level(logging.INFO, "tessera.objstore")
    with pytest.raises(StoreAccessDenied) as exc:
        await store.put_bytes("a", b"x")
    assert "refused access (403" in exc.value.message
    assert s3_config.endpoint in exc.value.message and s3_config.bucket in exc.value.message
    assert "retry" not in caplog.text                    # a 403 is not retried
    assert "wrong" not in exc.value.message and "wrong" not in repr(store.cfg)


async def test_missing_bucket_is_a_clear_error(s3_config):
    store = ObjectStore(replace(s3_config, bucket="no-such-bucket-here"))
    with pytest.raises(Unavailable, match="no-such-bucket-here: the bucket does not exist"):
        await store.put_bytes("a", b"x")
    await store.ensure_bucket()                          # ... until it is created
    try:
        await store.put_bytes("a", b"x")
        assert await store.get_range("a", 0, 1) == b"x"
    finally:
        await store.delete("a")
        await trio.to_thread.run_sync(lambda: store._s3.delete_bucket(Bucket=store.cfg.bucket))


async def test_credentials_file(s3_config, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {s3_config.access_key}\n"
                     f"aws_secret_access_key = {s3_config.secret_key}\n")
    store = ObjectStore(replace(s3_config, access_key=None, secret_key=None,
                                credentials_file=str(creds)))
    await store.put_bytes("k", b"v")
    assert await store.get_range("k", 0, 1) == b"v"
    creds.write_text("[other]\naws_access_key_id = a\n")
    with pytest.raises(InvalidInput, match=r"no \[default\] section"):
        ObjectStore(replace(s3_config, access_key=None, secret_key=None,
                            credentials_file=str(creds)))
    with pytest.raises(InvalidInput, match="no credentials"):
        ObjectStore(replace(s3_config, access_key=None, secret_key=None))


def test_s3_config_from_store_config():
    sc = StoreConfig(id="b", type="s3", endpoint="http://127.0.0.1:1", bucket="bkt",
                     region="r1", prefix="p/", access_key="ak", secret_key="sk")
    cfg = s3_config(sc, retry_time=3.0)
    assert (cfg.endpoint, cfg.bucket, cfg.region, cfg.prefix) == ("http://127.0.0.1:1", "bkt",
                                                                  "r1", "p/")
    assert (cfg.access_key, cfg.secret_key, cfg.retry_time) == ("ak", "sk", 3.0)
    assert "sk" not in repr(cfg)


# ---------------------------------------------------------------- outages

async def test_radosgw_down_is_unavailable_after_the_retry_time(s3_config, ceph, caplog):
    store = ObjectStore(replace(s3_config, retry_time=0.5))
    await store.put_bytes("k", b"v")
    ceph.kill_rgw()
    caplog.set_level(logging.INFO, "tessera.objstore")
    for op in (store.put_bytes("k", b"w"), store.get_range("k", 0, 1), store.head("k"),
               store.delete("k"), store.list()):
        with pytest.raises(Unavailable, match="is unavailable") as exc:
            await op
        assert s3_config.endpoint in exc.value.message
        assert s3_config.bucket in exc.value.message
    assert "retry 2" in caplog.text                      # retried before giving up
    await trio.to_thread.run_sync(ceph.start_rgw)
    assert await store.get_range("k", 0, 1) == b"v"      # nothing was changed meanwhile


async def test_request_during_a_short_outage_succeeds(s3_config, ceph, caplog, tmp_path):
    path, data = file_with(tmp_path, 1 * MiB, seed=4)
    store = ObjectStore(replace(s3_config, retry_time=60.0))
    await store.put_bytes("k", b"before")
    ceph.kill_rgw()
    caplog.set_level(logging.INFO, "tessera.objstore")
    results = {}

    async def get() -> None:
        results["get"] = await store.get_range("k", 0, 6)

    async def put() -> None:
        await store.put_file("f", path, 0, len(data))
        results["put"] = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get)
        nursery.start_soon(put)
        while caplog.text.count("retry") < 2:            # both have failed at least once
            await trio.sleep(0.02)
        await trio.to_thread.run_sync(ceph.start_rgw)
    assert results == {"get": b"before", "put": True}
    assert await store.get_range("f", 0, len(data)) == data


async def test_frozen_radosgw_times_out_instead_of_stalling(s3_config, ceph):
    store = ObjectStore(replace(s3_config, read_timeout=0.5, retry_time=1.0))
    await store.put_bytes("k", b"v")
    ceph.pause_rgw()                                     # accepts connections, never answers
    try:
        with pytest.raises(Unavailable, match="is unavailable"):
            await store.get_range("k", 0, 1)
    finally:
        ceph.resume_rgw()
    assert await store.get_range("k", 0, 1) == b"v"


async def test_frozen_then_resumed_radosgw_answers_the_waiting_request(s3_config, ceph):
    store = ObjectStore(replace(s3_config, read_timeout=1.0, retry_time=30.0))
    await store.put_bytes("k", b"v")
    ceph.pause_rgw()
    got = []

    async def get() -> None:
        got.append(await store.get_range("k", 0, 1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get)
        await trio.sleep(1.5)                            # at least one attempt timed out
        ceph.resume_rgw()
    assert got == [b"v"]


def test_no_ceph_process_outlives_a_killed_radosgw_restart(ceph):
    """kill + start leaves exactly one radosgw for this cluster, running and answering."""
    ceph.kill_rgw()
    ceph.start_rgw()
    pid = ceph.rgw_pid()
    assert pid is not None and os.path.exists(f"/proc/{pid}")


# ---------------------------------------------------------------- 5xx and throttling

class Throttler:
    """A TCP relay in front of radosgw that answers the first `fail` requests itself with
    `status` and an S3 error `code` (as a loaded S3 endpoint does), then relays bytes."""

    def __init__(self, endpoint: str, status: int, code: str, fail: int) -> None:
        target = urlsplit(endpoint)
        self.target = (target.hostname, target.port)
        self.status, self.code, self.fail = status, code, fail
        self.answered = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            with self._lock:
                refuse = self.answered < self.fail
                self.answered += refuse
            if refuse:
                headers, _, body = head.partition(b"\r\n\r\n")
                lines = [line.lower() for line in headers.split(b"\r\n")]
                length = next((int(line.split(b":", 1)[1]) for line in lines
                               if line.startswith(b"content-length:")), 0)
                if b"expect: 100-continue" in lines:
                    length = 0                 # the body waits for a 100 that never comes
                while len(body) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    body += data
                xml = (f"<?xml version='1.0'?><Error><Code>{self.code}</Code>"
                       "<Message>try later</Message></Error>").encode()
                conn.sendall(f"HTTP/1.1 {self.status} Busy\r\nContent-Type: application/xml"
                             f"\r\nContent-Length: {len(xml)}\r\nConnection: close\r\n\r\n"
                             .encode() + xml)
                return
            with socket.create_connection(self.target) as up:
                up.sendall(head)
                pump = threading.Thread(target=_relay, args=(up, conn), daemon=True)
                pump.start()
                _relay(conn, up)
                pump.join(10)


def _relay(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@pytest.mark.parametrize("status, code", [(503, "SlowDown"), (500, "InternalError"),
                                          (429, "TooManyRequests")])
async def test_throttling_and_5xx_are_retried(s3_config, caplog, status, code):
    relay = Throttler(s3_config.endpoint, status, code, fail=3)
    try:
        store = ObjectStore(replace(s3_config, endpoint=relay.endpoint, retry_time=30.0))
        caplog.set_level(logging.INFO, "tessera.objstore")
        await store.put_bytes("k", b"value")               # 3 refusals, then through
        assert relay.answered == 3 and f"{status} {code}; retry 3" in caplog.text
        assert await store.get_range("k", 0, 5) == b"value"
    finally:
        relay.close()


async def test_endless_5xx_is_unavailable_after_the_retry_time(s3_config):
    relay = Throttler(s3_config.endpoint, 503, "SlowDown", fail=10 ** 9)
    try:
        store = ObjectStore(replace(s3_config, endpoint=relay.endpoint, retry_time=0.5))
        with pytest.raises(Unavailable, match=r"is unavailable: GET k failed \d+ times .*"
                                              r"\(last: 503 SlowDown\)"):
            await store.get_range("k", 0, 1)
        assert relay.answered >= 3
    finally:
        relay.close()


async def test_a_cancelled_read_returns_at_once_while_radosgw_is_frozen(s3_config, ceph):
    store = ObjectStore(replace(s3_config, read_timeout=60.0, retry_time=120.0))
    await store.put_bytes("k", b"v")
    ceph.pause_rgw()
    try:
        # a thread the caller had to wait for would hold it for read_timeout (60 s), past
        # the 20 s bound: TooSlowError
        with trio.fail_after(20):
            with trio.move_on_after(0.5) as scope:
                await store.get_range("k", 0, 1)
        assert scope.cancelled_caught
    finally:
        ceph.resume_rgw()
    assert await store.get_range("k", 0, 1) == b"v"


async def test_the_process_environment_and_aws_files_are_ignored(s3_config, monkeypatch,
                                                                 tmp_path):
    """A stray AWS_PROFILE, other keys or a broken ~/.aws config in tessera's environment
    change nothing: the store uses its own configuration only."""
    bad = tmp_path / "aws-config"
    bad.write_text("[profile x\nbroken")
    for name, value in {"AWS_PROFILE": "nonexistent", "AWS_CONFIG_FILE": str(bad),
                        "AWS_SHARED_CREDENTIALS_FILE": str(bad),
                        "AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong",
                        "AWS_DEFAULT_REGION": "xx-nowhere-1"}.items():
        monkeypatch.setenv(name, value)
    store = ObjectStore(s3_config)
    await store.put_bytes("k", b"v")
    assert await store.get_range("k", 0, 1) == b"v"
