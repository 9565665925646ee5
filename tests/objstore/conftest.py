# Fixtures for the S3 object-store tests: a real Ceph radosgw on 127.0.0.1.
# `s3_endpoint` (session) is OBJSTORE_S3_ENDPOINT (+ AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_DEFAULT_REGION) when the environment names one, else a throw-away Ceph (mon + OSD on
# memstore + radosgw) started by tests/objstore/ceph/start.sh in a fresh directory on free
# ports (~2 s; apt installs the packages first when missing). `s3_bucket` is a fresh bucket
# per test, emptied and deleted after it; `s3_config` an S3Config for it; `s3` a boto3 client
# for checks from the test side; `ceph` controls the radosgw process for outage tests.
# Invariants: traffic only to 127.0.0.1; only processes started here are stopped, by pid
# (stop.sh checks each pid's cmdline), at session end with SIGKILL (the cluster is in RAM:
# nothing to flush, stopping takes well under a second); a watchdog started here stops the
# cluster if pytest itself dies; no skips: a Ceph that cannot start fails the tests with the
# start script's own output.
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tessera.config import ClusterConfig, NodeAddress
from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.objstore.client import S3Config
from tessera.engine.stores import StoreConfig
from tessera.replication.node import ClusterNode

CEPH_SCRIPTS = Path(__file__).parent / "ceph"
ACCESS_KEY, SECRET_KEY = "tessera-access", "tessera-secret"
START_TIMEOUT = 600.0           # apt on a fresh machine included
RGW_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class S3Endpoint:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_pair() -> int:
    """A port P with P and P+1 both free (the mon's msgr2 and msgr1 ports)."""
    for _ in range(100):
        p = _free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True                  # any HTTP answer: radosgw is serving
    except OSError:
        return False


class Ceph:
    """The radosgw of a Ceph started by start.sh (here, or the one OBJSTORE_CEPH_DIR names):
    kill, pause, resume and restart it for outage tests."""

    def __init__(self, base: Path, endpoint: str) -> None:
        self.base = base
        self.endpoint = endpoint
        self._proc: subprocess.Popen | None = None      # a radosgw restarted here

    @property
    def pid_file(self) -> Path:
        return self.base / "run" / "rgw.pid"

    def rgw_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"radosgw" in cmdline and not _zombie(pid) else None

    def kill_rgw(self) -> None:
        """SIGKILL radosgw and wait until it is gone: connections are refused."""
        pid = self.rgw_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None

    def pause_rgw(self) -> None:
        """SIGSTOP radosgw: connections are accepted by the kernel, nothing answers."""
        pid = self.rgw_pid()
        assert pid is not None, "radosgw is not running"
        os.kill(pid, signal.SIGSTOP)

    def resume_rgw(self) -> None:
        pid = self.rgw_pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def start_rgw(self) -> None:
        """Start radosgw again (same config, port and data) and wait until it answers."""
        if self.rgw_pid() is not None:
            self.resume_rgw()
            return
        log = open(self.base / "log" / "rgw.out", "ab")
        with log:
            self._proc = subprocess.Popen(
                ["radosgw", "-c", str(self.base / "ceph.conf"), "-n", "client.rgw.objstore",
                 "-f"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + RGW_READY_TIMEOUT
        while not _answers(self.endpoint + "/"):
            if self._proc.poll() is not None:
                raise RuntimeError(f"radosgw exited ({self._proc.returncode}); see "
                                   f"{self.base}/log/rgw.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"radosgw did not answer within {RGW_READY_TIMEOUT} s")
            time.sleep(0.05)

    def ensure_rgw(self) -> None:
        """After an outage test: radosgw running and not paused."""
        self.resume_rgw()
        self.start_rgw()


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not _zombie(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} did not exit")
        time.sleep(0.01)


@dataclass
class _Cluster:
    endpoint: S3Endpoint
    ceph: Ceph | None


def _start_ceph(base: Path) -> S3Endpoint:
    last = ""
    for _ in range(3):                  # a free port may be taken between probe and bind
        rgw, mon = _free_port(), _free_pair()
        env = dict(os.environ, OBJSTORE_CEPH_DIR=str(base), CEPH_RGW_PORT=str(rgw),
                   CEPH_MON_PORT=str(mon), CEPH_S3_ACCESS_KEY=ACCESS_KEY,
                   CEPH_S3_SECRET_KEY=SECRET_KEY, CEPH_WITH_MGR="0")
        try:
            run = subprocess.run(["bash", str(CEPH_SCRIPTS / "start.sh")], env=env,
                                 capture_output=True, text=True, timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            _stop_ceph(base)
            pytest.fail(f"Ceph did not start within {START_TIMEOUT:g} s "
                        f"(tests/objstore/ceph/start.sh): {exc.stderr or ''}"[-3000:],
                        pytrace=False)
        if run.returncode == 0:
            return S3Endpoint(f"http://127.0.0.1:{rgw}", ACCESS_KEY, SECRET_KEY)
        last = run.stderr + run.stdout
        if "already in use" not in last:
            break
    pytest.fail("Ceph radosgw could not start (tests/objstore/ceph/start.sh; the object-store "
                f"tests need ceph-mon, ceph-osd, radosgw from apt):\n{last[-3000:]}",
                pytrace=False)


def _stop_ceph(base: Path) -> None:
    env = dict(os.environ, OBJSTORE_CEPH_DIR=str(base), CEPH_STOP_FAST="1")
    subprocess.run(["bash", str(CEPH_SCRIPTS / "stop.sh")], env=env, capture_output=True,
                   timeout=60)


@pytest.fixture(scope="session")
def _s3_cluster():
    env = os.environ
    if env.get("OBJSTORE_S3_ENDPOINT"):
        ep = S3Endpoint(env["OBJSTORE_S3_ENDPOINT"].rstrip("/"),
                        env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", ""),
                        env.get("AWS_DEFAULT_REGION") or "us-east-1")
        ceph_dir = env.get("OBJSTORE_CEPH_DIR")
        yield _Cluster(ep, Ceph(Path(ceph_dir), ep.endpoint) if ceph_dir else None)
        return
    base = Path(tempfile.mkdtemp(prefix="tessera-ceph-", dir="/tmp")) / "ceph"
    # stops the cluster if this pytest process dies without running its finalizers
    watchdog = subprocess.Popen(
        ["bash", "-c", 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; '
                       'CEPH_STOP_FAST=1 OBJSTORE_CEPH_DIR="$2" bash "$3"; rm -rf "$(dirname "$2")"',
         "watchdog", str(os.getpid()), str(base), str(CEPH_SCRIPTS / "stop.sh")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    ceph = None
    try:
        ep = _start_ceph(base)
        ceph = Ceph(base, ep.endpoint)
        yield _Cluster(ep, ceph)
    finally:
        watchdog.kill()
        watchdog.wait()
        if ceph is not None and ceph._proc is not None:
            ceph.kill_rgw()
        _stop_ceph(base)
        shutil.rmtree(base.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint(_s3_cluster) -> S3Endpoint:
    """endpoint, access_key, secret_key, region of a running S3 server."""
    return _s3_cluster.endpoint


@pytest.fixture
def ceph(_s3_cluster) -> Ceph:
    """Control of the radosgw process (outage tests); it is running again after the test."""
    if _s3_cluster.ceph is None:
        pytest.fail("outage tests need the radosgw's pid: unset OBJSTORE_S3_ENDPOINT (the "
                    "tests then start their own Ceph) or set OBJSTORE_CEPH_DIR to the "
                    "directory of the Ceph started by start.sh", pytrace=False)
    yield _s3_cluster.ceph
    _s3_cluster.ceph.ensure_rgw()


@pytest.fixture(scope="session")
def s3(s3_endpoint):
    """A boto3 client of the endpoint, for checks from the test side."""
    import boto3.session
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id=s3_endpoint.access_key,
                                    aws_secret_access_key=s3_endpoint.secret_key,
                                    region_name=s3_endpoint.region)
    client = session.client("s3", endpoint_url=s3_endpoint.endpoint, config=Config(
        signature_version="s3v4", s3={"addressing_style": "path"}, connect_timeout=2,
        read_timeout=20, retries={"total_max_attempts": 3, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required"))
    yield client
    client.close()


def empty_bucket(s3, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for up in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", ()):
        s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])


@pytest.fixture
def s3_bucket(s3, _s3_cluster) -> str:
    """A fresh, empty bucket; emptied and deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    yield name
    if _s3_cluster.ceph is not None:
        _s3_cluster.ceph.ensure_rgw()
    empty_bucket(s3, name)
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def s3_config(s3_endpoint, s3_bucket) -> S3Config:
    """An S3Config for the test's bucket (short timeouts: loopback answers in milliseconds)."""
    return S3Config(endpoint=s3_endpoint.endpoint, bucket=s3_bucket, region=s3_endpoint.region,
                    access_key=s3_endpoint.access_key, secret_key=s3_endpoint.secret_key,
                    connect_timeout=2.0, read_timeout=10.0, retry_time=10.0)



# ---------------------------------------------------------------- a tessera node with an s3 store

_root_spec = importlib.util.spec_from_file_location(
    "tessera_tests_root_conftest_objstore", Path(__file__).parent.parent / "conftest.py")
_root = importlib.util.module_from_spec(_root_spec)
sys.modules[_root_spec.name] = _root
_root_spec.loader.exec_module(_root)
launch = _root.launch          # launch(base, *args) -> RunningServer (a real node subprocess)


def node_config(base: Path, ep: S3Endpoint, bucket: str, engine: dict | None = None,
                **store) -> Path:
    """A node config: local default store "main" and s3 store "obj" on `bucket` (keys in a
    credentials file); `store` and `engine` override keys of [[stores]] obj and [engine]."""
    base.mkdir(parents=True, exist_ok=True)
    creds = base / "credentials"          # kept if there (a test may spoil it)
    if not creds.exists():
        creds.write_text(f"[default]\naws_access_key_id = {ep.access_key}\n"
                         f"aws_secret_access_key = {ep.secret_key}\n")
    obj = {"id": "obj", "type": "s3", "endpoint": ep.endpoint, "bucket": bucket,
           "region": ep.region, "credentials_file": str(creds), **store}
    eng = {"image_cache": True, "cache_budget": 0, **(engine or {})}

    def toml(v) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else \
            repr(v) if isinstance(v, (int, float)) else '"' + str(v) + '"'
    lines = ["[engine]", *(f"{k} = {toml(v)}" for k, v in eng.items()), "",
             "[[stores]]", 'id = "main"', "default = true", "", "[[stores]]",
             *(f"{k} = {toml(v)}" for k, v in obj.items()), ""]
    path = base / "tessera.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def s3_node(tmp_path, s3_endpoint, s3_bucket):
    """Factory: s3_node(engine={...}, base=None, **obj_store_keys) -> RunningServer (with
    `config`, its config path) of a node whose store "obj" is the test's bucket; passing an
    earlier node's `data_dir.parent` as base restarts on its data. Stopped at teardown."""
    started = []

    def start(engine: dict | None = None, base: Path | None = None, **store):
        base = base or tmp_path / f"node{len(started)}"     # a base again: same data dir
        cfg = node_config(base, s3_endpoint, s3_bucket, engine, **store)
        server = launch(base, "--config", str(cfg))
        server.config = cfg
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class Audit:
    images: dict[str, int]          # image id (manifest in store obj) -> distinct chunks
    rows: dict[bytes, int]          # pack objects the index knows -> size
    listed: dict[str, int]          # objects in the bucket -> size
    garbage: set[str]               # in the bucket, unknown to the index


async def audit_store(config: Path, data_dir: Path, s3, bucket: str) -> Audit:
    """Open the (stopped) node's engine and check the s3 store's index against the bucket:
    every chunk of every manifest maps to an object row, and every row's object is in the
    bucket with its size (no dangling reference). AssertionError names what dangles."""
    import trio

    from tessera import config as config_mod
    from tessera.engine.engine import Engine
    from tessera.engine.objstore.objdb import ObjDB
    from tessera.engine.records import id_from_key

    cfg = config_mod.load(config, data_dir=str(data_dir))
    engine = await Engine.open(cfg.engine)
    try:
        store = engine.stores.get("obj")
        db = ObjDB(store.index)
        with store.index.read() as txn:
            heads = [bytes(k) for k, _ in txn.cursor(db=store.db.manifests) if len(k) == 16]
            rows = {bytes(obj): row.size for obj, row in db.rows(txn).items()}
        keys = {obj: store.tier.key(obj) for obj in rows}
        images = {}
        for key in heads:
            image_id = id_from_key(key)
            ids = store.image_chunks(image_id)
            with store.index.read() as txn:
                locs = {cid: db.loc(txn, cid) for cid in ids}
            unmapped = [cid.hex() for cid, loc in locs.items() if loc is None]
            assert not unmapped, f"image {image_id}: chunks without an object: {unmapped[:3]}"
            norow = {loc.obj.hex() for loc in locs.values() if loc.obj not in rows}
            assert not norow, f"image {image_id}: mappings to objects without a row: {norow}"
            images[image_id] = len(ids)
    finally:
        await engine.aclose()
    listed = await trio.to_thread.run_sync(lambda: {
        o["Key"]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket) for o in page.get("Contents", ())})
    missing = {keys[obj]: size for obj, size in rows.items() if listed.get(keys[obj]) != size}
    assert not missing, f"index rows whose object is missing or of another size: {missing}"
    known = set(keys.values())
    return Audit(images, rows, listed, set(listed) - known)


@pytest.fixture
def s3_audit(s3, s3_bucket):
    """audit(server) -> Audit of a stopped node started by s3_node (see audit_store)."""
    async def audit(server) -> Audit:
        return await audit_store(server.config, server.data_dir, s3, s3_bucket)
    return audit


# ---------------------------------------------------------------- in-process engines sharing a bucket

@pytest.fixture
def s3_cluster(tmp_path, s3_endpoint, s3_bucket):
    """`await s3_cluster(scenario, replicas=R, write_quorum=W, background=ids)` runs
    `await scenario(engines, nodes)` on three in-process engines a, b, c (default store
    "main", s3 store "obj" on the test's bucket, not durable, reaper grace 0), each with its
    ClusterNode on real peer sockets; the engines named in `background` also run their
    periodic processes. Everything is stopped and closed afterwards."""
    ep = s3_endpoint

    def engine_config(node_id: str) -> EngineConfig:
        return EngineConfig(
            data_dir=tmp_path / node_id, node_id=node_id, durable=False, reaper_grace=0.0,
            stores=(StoreConfig("main"), StoreConfig(
                "obj", type="s3", endpoint=ep.endpoint, bucket=s3_bucket, region=ep.region,
                access_key=ep.access_key, secret_key=ep.secret_key, retry_time=2.0)))

    async def run(scenario, *, replicas: int, write_quorum: int, background=()) -> None:
        key = os.urandom(32)
        key_file = tmp_path / "cluster.key"
        key_file.write_text(key.hex())
        addrs = tuple(NodeAddress(i, f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}")
                      for i in ("a", "b", "c"))
        engines, nodes = {}, {}
        async with trio.open_nursery() as nursery:
            try:
                for addr in addrs:
                    engines[addr.id] = await Engine.open(engine_config(addr.id))
                    cfg = ClusterConfig(node_id=addr.id, bind=addr.peer, key_file=key_file,
                                        nodes=addrs, replicas=replicas,
                                        write_quorum=write_quorum,
                                        anti_entropy_interval=3600.0)
                    nodes[addr.id] = ClusterNode(cfg, engines[addr.id], key)
                    await nursery.start(nodes[addr.id].run)
                for node_id in background:
                    await nursery.start(engines[node_id].run_background)
                await scenario(engines, nodes)
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await trio.sleep(0.05)
                    for e in engines.values():
                        await e.aclose()
    return run
