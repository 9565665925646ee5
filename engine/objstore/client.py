# The engine's narrow client of an S3-compatible object store (AWS S3, Ceph RGW, Swift s3api,
# MinIO): put a byte range of a local file or bytes, ranged get, head, delete, list.
# Invariants:
# - boto3 runs only in worker threads (trio.to_thread, bounded by one CapacityLimiter per
#   store); the event loop never blocks on the network. Nothing here reads the environment
#   or ~/.aws (botocore's session is isolated from both): credentials come from S3Config
#   (filled by the composition root) or its credentials_file.
# - A cancelled read returns at once (its thread finishes alone); a cancelled write waits for
#   its request to end, so no PUT outlives the caller that believes it failed.
# - Every operation is idempotent, so transient failures (unreachable, connection reset,
#   timeouts, 5xx, throttling) are retried with exponential backoff and full jitter until
#   `retry_time` has passed since the first attempt; then Unavailable names the endpoint and
#   bucket. A 403 raises StoreAccessDenied at once; nothing else is retried.
# - A request never waits forever: botocore's connect and read timeouts bound every socket
#   wait, so one attempt takes at most about connect_timeout + read_timeout per stalled read.
# - Nothing holds a whole file in memory: put_file streams the range (multipart above
#   `multipart_threshold`, parts read from the file as they are sent); get_range holds only
#   the requested range.
from __future__ import annotations

import configparser
import io
import logging
import os
import random
from dataclasses import dataclass, replace
from typing import Any, Callable, TypeVar

import trio

from tessera.engine.errors import (CorruptData, InvalidInput, NotFound, StoreAccessDenied,
                                   Unavailable)

log = logging.getLogger("tessera.objstore")

MiB = 1024 * 1024
T = TypeVar("T")

# S3 error codes that mean "try again" even when the status is not 5xx.
RETRY_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                         "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                         "TooManyRequests", "RequestLimitExceeded"})
# Operations whose worker thread a cancelled caller (a client gone, shutdown) may leave to
# finish on its own (bounded by the timeouts): nothing waits for a write's outcome this way.
READS = frozenset({"GET", "HEAD", "LIST"})
DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                          "AllAccessDisabled", "InvalidToken", "ExpiredToken"})


@dataclass(frozen=True)
class S3Config:
    """Where a store's objects live and how hard to try. `prefix` is prepended to every key
    (a trailing "/" is added when missing); keys passed to ObjectStore are relative to it."""
    endpoint: str
    bucket: str
    region: str = "us-east-1"
    prefix: str = ""
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    credentials_file: str | None = None     # AWS shared-credentials format
    profile: str = "default"
    addressing_style: str = "path"
    connect_timeout: float = 5.0            # seconds per TCP connect
    read_timeout: float = 30.0              # seconds per socket read (no byte for this long)
    retry_time: float = 30.0                # retry transient failures this long, then give up
    retry_base: float = 0.1                 # first backoff ceiling; doubles each attempt
    retry_cap: float = 5.0                  # largest single backoff
    max_connections: int = 16               # worker threads / pooled connections per store
    multipart_threshold: int = 64 * MiB     # put_file above this uses a multipart upload
    part_size: int = 16 * MiB               # >= 5 MiB (S3's minimum part size)
    part_concurrency: int = 4               # parts of one multipart upload sent at once
    list_page_size: int = 1000              # keys per LIST request (S3's maximum)

    def __repr__(self) -> str:             # never print keys
        return f"S3Config(endpoint={self.endpoint!r}, bucket={self.bucket!r}, " \
               f"prefix={self.prefix!r})"

    @property
    def where(self) -> str:
        return f"object store {self.endpoint} bucket {self.bucket}"


def s3_config(store: Any, **overrides: Any) -> S3Config:
    """The S3Config of an `s3` [[stores]] entry (engine/stores.py StoreConfig)."""
    return replace(S3Config(endpoint=store.endpoint, bucket=store.bucket, region=store.region,
                            prefix=store.prefix, access_key=store.access_key,
                            secret_key=store.secret_key, session_token=store.session_token,
                            credentials_file=store.credentials_file,
                            connect_timeout=store.connect_timeout,
                            read_timeout=store.read_timeout, retry_time=store.retry_time),
                   **overrides)


def resolve_credentials(cfg: S3Config) -> tuple[str, str, str | None]:
    """(access key, secret key, session token): the config's keys, else its credentials
    file's profile. InvalidInput when there are none (a setup error)."""
    if cfg.access_key and cfg.secret_key:
        return cfg.access_key, cfg.secret_key, cfg.session_token
    if cfg.credentials_file:
        parser = configparser.ConfigParser()
        try:
            with open(cfg.credentials_file, encoding="utf-8") as f:
                parser.read_file(f)
        except (OSError, configparser.Error) as exc:
            raise InvalidInput(f"cannot read the credentials file {cfg.credentials_file}: "
                               f"{exc}") from None
        if not parser.has_section(cfg.profile):
            raise InvalidInput(f"credentials file {cfg.credentials_file} has no "
                               f"[{cfg.profile}] section")
        sec = parser[cfg.profile]
        ak, sk = sec.get("aws_access_key_id"), sec.get("aws_secret_access_key")
        if not ak or not sk:
            raise InvalidInput(f"credentials file {cfg.credentials_file} [{cfg.profile}] needs "
                               "aws_access_key_id and aws_secret_access_key")
        return ak.strip(), sk.strip(), (sec.get("aws_session_token") or "").strip() or None
    raise InvalidInput(f"{cfg.where}: no credentials (set credentials_file, or "
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in tessera's environment)")


class _FileRange(io.RawIOBase):
    """A seekable, read-only view of `length` bytes of a file from `offset`: a request body
    botocore can size, hash and rewind for a retry without reading it into memory."""

    def __init__(self, path: str, offset: int, length: int) -> None:
        self._f = open(path, "rb")
        self._offset, self._length, self._pos = offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = min(max(base + pos, 0), self._length)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        data = os.pread(self._f.fileno(), n, self._offset + self._pos)
        if not data:
            raise CorruptData(f"file ended before its range {self._offset}+{self._length}")
        self._pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def __len__(self) -> int:
        return self._length

    def close(self) -> None:
        self._f.close()
        super().close()


class _Retry(Exception):
    """A transient failure of one attempt (retried until the operation's time is up)."""


class ObjectStore:
    """One bucket (and prefix) of an S3-compatible object store."""

    def __init__(self, cfg: S3Config) -> None:
        import boto3.session
        from botocore.config import Config

        ak, sk, token = resolve_credentials(cfg)
        self.cfg = cfg
        self.prefix = cfg.prefix if not cfg.prefix or cfg.prefix.endswith("/") \
            else cfg.prefix + "/"
        bc = Config(signature_version="s3v4", s3={"addressing_style": cfg.addressing_style},
                    region_name=cfg.region, connect_timeout=cfg.connect_timeout,
                    read_timeout=cfg.read_timeout, max_pool_connections=cfg.max_connections,
                    retries={"total_max_attempts": 1, "mode": "standard"},   # ours, below
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required", tcp_keepalive=True)
        session = boto3.session.Session(aws_access_key_id=ak, aws_secret_access_key=sk,
                                        aws_session_token=token, region_name=cfg.region,
                                        botocore_session=_isolated_session())
        self._s3 = session.client("s3", endpoint_url=cfg.endpoint, config=bc)
        self._limiter = trio.CapacityLimiter(cfg.max_connections)
        self._random = random.Random()

    def close(self) -> None:
        self._s3.close()

    # ------------------------------------------------------------------ operations

    async def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` as object `key` (replacing it)."""
        await self._call("PUT", key, lambda: self._s3.put_object(
            Bucket=self.cfg.bucket, Key=self.prefix + key, Body=data))

    async def put_file(self, key: str, path: str, offset: int, length: int) -> None:
        """Store `length` bytes of the file at `path` from `offset` as object `key` (replacing
        it); a multipart upload above multipart_threshold."""
        if length <= self.cfg.multipart_threshold:
            def put() -> None:
                with _FileRange(path, offset, length) as body:
                    self._s3.put_object(Bucket=self.cfg.bucket, Key=self.prefix + key,
                                        Body=body, ContentLength=length)
            await self._call("PUT", key, put)
            return
        await self._multipart(key, path, offset, length)

    async def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of object `key` from `offset`. CorruptData when the object is
        missing or shorter than that: callers only read objects their index references."""
        if length <= 0:
            return b""

        def get() -> bytes:
            from botocore.exceptions import ClientError
            try:
                resp = self._s3.get_object(Bucket=self.cfg.bucket, Key=self.prefix + key,
                                           Range=f"bytes={offset}-{offset + length - 1}")
            except ClientError as exc:
                if _code(exc) == "NoSuchKey":
                    raise CorruptData(f"{self.cfg.where}: object {self.prefix + key} is "
                                      "missing") from None
                if _status(exc) == 416:
                    raise CorruptData(f"{self.cfg.where}: object {self.prefix + key} is "
                                      f"shorter than the range {offset}+{length}") from None
                raise
            body = resp["Body"]
            try:
                data = body.read()
            finally:
                body.close()
            return data

        try:
            data = await self._call("GET", key, get)
        except NotFound:
            raise CorruptData(f"{self.cfg.where}: object {self.prefix + key} is missing") \
                from None
        if len(data) != length:
            raise CorruptData(f"{self.cfg.where}: object {self.prefix + key} gave "
                              f"{len(data)} bytes for the range {offset}+{length}")
        return data

    async def head(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""
        def head() -> int | None:
            try:
                return int(self._s3.head_object(Bucket=self.cfg.bucket,
                                                Key=self.prefix + key)["ContentLength"])
            except Exception as exc:
                if _status(exc) == 404:
                    return None
                raise
        return await self._call("HEAD", key, head)

    async def delete(self, key: str) -> None:
        """Delete object `key`; deleting a missing object succeeds."""
        def delete() -> None:
            try:
                self._s3.delete_object(Bucket=self.cfg.bucket, Key=self.prefix + key)
            except Exception as exc:
                if _status(exc) != 404 or _code(exc) == "NoSuchBucket":
                    raise
        await self._call("DELETE", key, delete)

    async def list(self, prefix: str = "") -> list[tuple[str, int]]:
        """(key, size) of every object whose key starts with `prefix`, in key order; keys
        are relative to the store's prefix. Pages are fetched (and retried) one by one."""
        out: list[tuple[str, int]] = []
        token: str | None = None
        cut = len(self.prefix)
        while True:
            args = {"Bucket": self.cfg.bucket, "Prefix": self.prefix + prefix,
                    "MaxKeys": self.cfg.list_page_size}
            if token:
                args["ContinuationToken"] = token
            page = await self._call("LIST", prefix, lambda a=args: self._s3.list_objects_v2(**a))
            out += [(o["Key"][cut:], int(o["Size"])) for o in page.get("Contents", ())]
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                return out

    async def list_uploads(self, prefix: str = "") -> list[tuple[str, str, float]]:
        """(key, upload id, initiated as Unix seconds) of every multipart upload in progress
        whose key starts with `prefix` (keys relative to the store's prefix), page by page."""
        out: list[tuple[str, str, float]] = []
        marker: dict[str, str] = {}
        cut = len(self.prefix)
        while True:
            args = {"Bucket": self.cfg.bucket, "Prefix": self.prefix + prefix,
                    "MaxUploads": self.cfg.list_page_size, **marker}
            page = await self._call("LIST", f"{prefix} uploads",
                                    lambda a=args: self._s3.list_multipart_uploads(**a))
            out += [(u["Key"][cut:], u["UploadId"], u["Initiated"].timestamp())
                    for u in page.get("Uploads", ())]
            if not page.get("IsTruncated"):
                return out
            marker = {"KeyMarker": page.get("NextKeyMarker", ""),
                      "UploadIdMarker": page.get("NextUploadIdMarker", "")}

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload (its parts go); one already gone is fine."""
        def abort() -> None:
            try:
                self._s3.abort_multipart_upload(Bucket=self.cfg.bucket, Key=self.prefix + key,
                                                UploadId=upload_id)
            except Exception as exc:
                if _status(exc) != 404 or _code(exc) == "NoSuchBucket":
                    raise
        await self._call("DELETE", f"{key} upload", abort)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests, first start of a deployment)."""
        def ensure() -> None:
            try:
                self._s3.head_bucket(Bucket=self.cfg.bucket)
                return
            except Exception as exc:
                if _status(exc) != 404:
                    raise
            try:
                self._s3.create_bucket(Bucket=self.cfg.bucket)
            except Exception as exc:
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        await self._call("CREATE BUCKET", "", ensure)

    # ------------------------------------------------------------------ multipart

    async def _multipart(self, key: str, path: str, offset: int, length: int) -> None:
        full = self.prefix + key
        upload = await self._call("PUT", key, lambda: self._s3.create_multipart_upload(
            Bucket=self.cfg.bucket, Key=full))
        upload_id = upload["UploadId"]
        size = max(self.cfg.part_size, 5 * MiB)
        ranges = [(n + 1, pos, min(size, length - pos))
                  for n, pos in enumerate(range(0, length, size))]
        etags: dict[int, str] = {}
        limit = trio.Semaphore(max(1, self.cfg.part_concurrency))

        async def send(number: int, pos: int, n: int) -> None:
            async with limit:
                def part() -> str:
                    with _FileRange(path, offset + pos, n) as body:
                        return self._s3.upload_part(
                            Bucket=self.cfg.bucket, Key=full, UploadId=upload_id,
                            PartNumber=number, Body=body, ContentLength=n)["ETag"]
                etags[number] = await self._call("PUT", f"{key} part {number}", part)

        try:
            try:
                async with trio.open_nursery() as nursery:
                    for number, pos, n in ranges:
                        nursery.start_soon(send, number, pos, n)
            except BaseExceptionGroup as group:     # the first part's error, not a group
                first = _first_error(group)
                if first is None:
                    raise
                raise first from None
            parts = [{"PartNumber": n, "ETag": etags[n]} for n, _, _ in ranges]
            try:
                await self._call("PUT", key, lambda: self._s3.complete_multipart_upload(
                    Bucket=self.cfg.bucket, Key=full, UploadId=upload_id,
                    MultipartUpload={"Parts": parts}))
            except NotFound:
                # NoSuchUpload: a retried complete whose first try had succeeded
                if await self.head(key) != length:
                    raise Unavailable(f"{self.cfg.where}: the multipart upload of {full} "
                                      "vanished before it completed") from None
        except BaseException:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self.cfg.connect_timeout + 1):
                    try:
                        await trio.to_thread.run_sync(
                            lambda: self._s3.abort_multipart_upload(
                                Bucket=self.cfg.bucket, Key=full, UploadId=upload_id),
                            limiter=self._limiter, abandon_on_cancel=True)
                    except Exception:   # garbage parts: the bucket's lifecycle rule or reaper
                        log.info("could not abort the multipart upload of %s", full)
            raise

    # ------------------------------------------------------------------ retries

    async def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """Run `fn` in a worker thread; retry transient failures with backoff and jitter for
        up to retry_time; map everything else to the engine's errors."""
        deadline = trio.current_time() + self.cfg.retry_time
        attempt = 0
        while True:
            try:
                return await trio.to_thread.run_sync(self._attempt, op, key, fn,
                                                     limiter=self._limiter,
                                                     abandon_on_cancel=op in READS)
            except _Retry as exc:
                reason = str(exc)
            attempt += 1
            ceiling = min(self.cfg.retry_cap, self.cfg.retry_base * 2 ** (attempt - 1))
            left = deadline - trio.current_time()
            pause = min(self._random.uniform(0, ceiling), left)   # a last try at the deadline
            if left <= 0:
                raise Unavailable(f"{self.cfg.where} is unavailable: {op} {key} failed "
                                  f"{attempt} times in {self.cfg.retry_time:g} s "
                                  f"(last: {reason})")
            log.info("%s %s: %s; retry %d in %.2f s", op, key, reason, attempt, pause)
            await trio.sleep(pause)

    def _attempt(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """One try, in a worker thread: the result, or _Retry / an engine error."""
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError,
                                         HTTPClientError, IncompleteReadError,
                                         ResponseStreamingError)
        try:
            return fn()
        except ClientError as exc:
            status, code = _status(exc), _code(exc)
            if status >= 500 or status == 429 or code in RETRY_CODES:
                raise _Retry(f"{status} {code}") from None
            if status == 403 or code in DENIED_CODES:
                raise StoreAccessDenied(f"{self.cfg.where} refused access ({status} {code}) "
                                        f"to {op} {key or '/'}: check the store's "
                                        "credentials and the bucket's permissions") from None
            if code == "NoSuchBucket":
                raise Unavailable(f"{self.cfg.where}: the bucket does not exist") from None
            if status == 404:
                raise NotFound(f"{self.cfg.where}: {op} {key}: {code}") from None
            raise Unavailable(f"{self.cfg.where}: {op} {key} failed ({status} {code})") \
                from None
        except (ConnectionError, HTTPClientError, IncompleteReadError,
                ResponseStreamingError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"{self.cfg.where}: {op} {key} failed: {exc}") from None
        except OSError as exc:              # a socket error botocore did not wrap
            if isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None):
                raise
            raise _Retry(f"{type(exc).__name__}: {exc}") from None


def _isolated_session() -> Any:
    """A botocore session that takes nothing from AWS_* variables or ~/.aws files (a stray
    AWS_PROFILE would otherwise fail the store's start): everything comes from S3Config."""
    import botocore.session
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES as DEFAULTS

    quiet = {name: (cfg_name, None, os.devnull if name in ("config_file", "credentials_file")
                    else default, convert)
             for name, (cfg_name, _env, default, convert) in DEFAULTS.items()}
    return botocore.session.Session(session_vars=quiet)


def _first_error(group: BaseExceptionGroup) -> Exception | None:
    """The first ordinary exception in a (nested) group; None if it holds only
    cancellations and the like."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_error(exc)
            if found is not None:
                return found
        elif isinstance(exc, Exception):
            return exc
    return None


def _status(exc: BaseException) -> int:
    resp = getattr(exc, "response", None) or {}
    return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _code(exc: BaseException) -> str:
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code") or "")
