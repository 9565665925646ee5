# Downloading an image to a file: resumable, optionally in N parallel ranges, verified at the
# end against the image's os_hash_value (or its MD5 checksum when the server has no
# multihash). Invariants: bytes go to `FILE.part` (pwrite at their offset) and a small state
# file `FILE.part.json` records, per range, how far the written bytes reach; the state is
# rewritten only after the bytes it names were written, so a resumed download never skips a
# hole; the final file appears (by rename) only after the whole-file hash matched; a mismatch
# removes the partial files and is an error. A server that ignores Range (200 to a ranged
# GET) gets one sequential stream from offset 0, whatever --parallel asked for.
from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tessera.client.api import BLOCK, Client, ClientError
from tessera.client.progress import Progress

STATE_EVERY = 8 * BLOCK       # rewrite the state file after this many new bytes in a range


@dataclass
class Span:
    start: int
    end: int        # exclusive
    done: int       # bytes of [start, start+done) are written

    @property
    def remaining(self) -> int:
        return self.end - self.start - self.done


class DownloadError(ClientError):
    pass


class RangeUnsupported(DownloadError):
    """The server answered a ranged GET with the whole image (200)."""


def expected_digest(image: dict) -> tuple[str, str]:
    """(hashlib algorithm, hex digest) the finished file must have."""
    algo, value = image.get("os_hash_algo"), image.get("os_hash_value")
    if algo and value:
        return algo, value
    if image.get("checksum"):
        return "md5", image["checksum"]
    raise DownloadError(f"image {image.get('id')} has no os_hash_value or checksum to verify")


def split(size: int, parts: int) -> list[Span]:
    parts = max(1, min(parts, size // BLOCK or 1))
    step = -(-size // parts)
    return [Span(s, min(size, s + step), 0) for s in range(0, size, step)] or [Span(0, 0, 0)]


class _State:
    """The state file: the image's identity (id, size, hash) and the spans' progress."""

    def __init__(self, path: Path, image: dict, spans: list[Span]) -> None:
        self.path = path
        self.key = {"id": image["id"], "size": image["size"],
                    "hash": list(expected_digest(image))}
        self.spans = spans
        self._lock = threading.Lock()

    @classmethod
    def resume(cls, path: Path, image: dict) -> "_State | None":
        try:
            doc = json.loads(path.read_text())
            state = cls(path, image, [Span(*s) for s in doc["spans"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state if doc.get("key") == state.key else None

    def save(self) -> None:
        with self._lock:
            doc = {"key": self.key, "spans": [[s.start, s.end, s.done] for s in self.spans]}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.path)


def download(client: Client, image_id: str, out: Path, *, parallel: int = 1,
             progress_stream=None, resume: bool = True) -> dict:
    """Download image `image_id` to `out`; the image record. Raises ClientError."""
    image = client.get_image(image_id)
    if image.get("status") != "active" or image.get("size") is None:
        raise DownloadError(f"image {image_id} is {image.get('status')}: no data to download")
    size = int(image["size"])
    algo, want = expected_digest(image)
    part = out.with_name(out.name + ".part")
    state_path = out.with_name(out.name + ".part.json")
    state = _State.resume(state_path, image) if resume and part.exists() else None
    if state is None:
        state = _State(state_path, image, split(size, parallel))
        with open(part, "wb") as f:
            f.truncate(size)
        state.save()
    progress = Progress(f"{image_id[:8]} download", size, progress_stream)
    progress.start_at(sum(s.done for s in state.spans))
    fd = os.open(part, os.O_WRONLY)
    try:
        # A fresh single stream is hashed on the way in; anything else is re-read at the end.
        spans = state.spans
        hasher = hashlib.new(algo) if len(spans) == 1 and spans[0].done == 0 else None
        try:
            _fetch_all(client, image_id, fd, state, progress, hasher)
        except RangeUnsupported:       # one stream of the whole image instead
            state.spans = [Span(0, size, 0)]
            state.save()
            progress.start_at(0)
            hasher = None
            _fetch_all(client, image_id, fd, state, progress, None)
        os.fsync(fd)
    finally:
        os.close(fd)
    progress.finish()
    got = hasher.hexdigest() if hasher is not None else _hash_file(part, algo)
    if got != want:
        part.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)
        raise DownloadError(f"image {image_id}: {algo} of the downloaded bytes is {got}, the "
                            f"server says {want}; partial download removed")
    os.replace(part, out)
    state_path.unlink(missing_ok=True)
    return image


def _fetch_all(client: Client, image_id: str, fd: int, state: _State,
               progress: Progress, hasher=None) -> None:
    """Fetch every unfinished span; `hasher` (one span only) sees the bytes in order."""
    todo = [s for s in state.spans if s.remaining > 0]
    if len(todo) <= 1:
        for span in todo:
            _fetch(client, image_id, fd, span, state, progress, hasher)
        return
    with ThreadPoolExecutor(len(todo)) as pool:
        futures = [pool.submit(_fetch, client, image_id, fd, s, state, progress) for s in todo]
    for future in futures:
        future.result()


def _fetch(client: Client, image_id: str, fd: int, span: Span, state: _State,
           progress: Progress, hasher=None) -> None:
    first = span.start + span.done
    to_end = span.end >= state.key["size"]       # no Range at all for a whole fresh image
    conn, resp, ranged = client.open_range(image_id, first, None if to_end else span.end - 1)
    try:
        if not ranged and first > 0:
            if span.start > 0 or len(state.spans) > 1:
                raise RangeUnsupported("the server ignores Range")
            span.done = 0                 # the whole image again, from offset 0
            progress.start_at(0)
        offset = span.start + span.done
        since_save = 0
        while span.remaining > 0:
            block = resp.read(min(BLOCK, span.remaining))
            if not block:
                raise DownloadError(f"connection ended with {span.remaining} bytes of "
                                    f"[{span.start}, {span.end}) missing; run again to resume")
            os.pwrite(fd, block, offset)
            if hasher is not None:
                hasher.update(block)
            offset += len(block)
            span.done += len(block)
            since_save += len(block)
            progress.add(len(block))
            if since_save >= STATE_EVERY:
                state.save()
                since_save = 0
    except OSError as exc:
        raise DownloadError(f"download interrupted ({exc}); run again to resume") from exc
    finally:
        conn.close()
        state.save()


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()
