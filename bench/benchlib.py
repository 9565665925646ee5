# Shared pieces of the HTTP benchmarks (bench/pull.py, push.py, api.py, ...), one import for
# the scripts (`import benchlib as B`): processes and /proc readings (benchproc.py), the servers
# and baselines (benchnodes.py), the clients (benchclients.py), and here the payload of
# random-ish bytes, temp workspaces, medians, result files and deadlines.
# Invariants: traffic only to 127.0.0.1; every process is started and stopped by its pid
# (never by name); every wait has a timeout; temp data lives under one directory the caller
# removes. Not a test and not part of the package.
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchclients import (create_image, http_json, prune_cache, pull_verified,  # noqa: F401
                          put_file, reader_main, run_curl, run_reader)
from benchnodes import (Nginx, RawSender, Tessera, nginx_binary, start_nginx,  # noqa: F401
                        start_raw_sender, start_tessera)
from benchproc import (CLK_TCK, MemSampler, children, cpu_seconds, free_port,  # noqa: F401
                       mem_status, reset_hwm, stop, tree_cpu_seconds, wait_port)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GiB = 1 << 30
MiB = 1 << 20


# ------------------------------------------------------------------ payload

def make_payload(path: Path, size: int, seed: bytes = b"tessera-bench") -> None:
    """Random-ish bytes (BLAKE3 XOF per 64 MiB piece): incompressible, no dedup inside."""
    import blake3

    piece = 64 * MiB
    with open(path, "wb") as f:
        done, i = 0, 0
        while done < size:
            n = min(piece, size - done)
            f.write(blake3.blake3(seed + i.to_bytes(8, "big")).digest(length=n))
            done += n
            i += 1


def file_blake3(path: Path) -> str:
    import blake3

    h = blake3.blake3()
    with open(path, "rb") as f:
        while True:
            b = f.read(16 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


# ------------------------------------------------------------------ misc

@contextmanager
def workspace(prefix: str, keep: bool = False, parent: str | None = None):
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield base
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"{name}-{stamp}.json"
    payload = {**payload, "loadavg_at_end": os.getloadavg()}   # other work on the 2 vCPUs
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


@dataclass
class Deadline:
    seconds: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def over(self) -> bool:
        return self.left() <= 0


if __name__ == "__main__":      # the reader's old entry point (now benchclients.py)
    if len(sys.argv) > 1 and sys.argv[1] == "read":
        reader_main(sys.argv[2:])
    else:
        sys.exit("usage: benchlib.py read PORT PATH STREAMS [--blake3]")
