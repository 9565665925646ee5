# `tessera status`: one node at a glance -- health, images, logical and stored bytes, the
# dedup ratio, cache, periodic processes and request counts -- read from a running node's
# /healthcheck and /metrics (`--url`), or from a data directory's statistics when no node
# URL is given. Invariants: the same dict feeds the readable and the --json output; a
# figure the source does not have is absent, never invented; cluster figures are added by
# whatever `cluster` source the caller passes (replication plugs in there).
from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tessera.client.api import ClientError, Endpoint
from tessera.client.progress import human_bytes, human_time

STORAGE = ("images", "logical_bytes", "stored_bytes", "zero_bytes", "segment_bytes",
           "segments", "chunks", "unreferenced_chunks", "cache_bytes")


def from_stats(stats: dict[str, int], source: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"source": source, "health": "offline (data directory)",
                           "storage": {k: stats[k] for k in STORAGE if k in stats}}
    _ratio(doc)
    return doc


def from_node(endpoint: Endpoint) -> dict[str, Any]:
    doc: dict[str, Any] = {"source": endpoint.url}
    doc["health"] = _get(endpoint, "/healthcheck")[1].strip() or "?"
    status, text = _get(endpoint, "/metrics")
    if status != 200 or "tessera_" not in text:
        doc["metrics"] = "unavailable (see [api] metrics in docs/configuration.md)"
        return doc
    storage: dict[str, float] = {}
    procs: dict[str, dict[str, float]] = {}
    requests = errors = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name = s.name
            if name.startswith("tessera_process_"):
                procs.setdefault(s.labels.get("process", "?"), {})[
                    name[len("tessera_process_"):]] = s.value
            elif name == "tessera_http_requests_total":
                requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    errors += s.value
            elif name.startswith("tessera_") and name[len("tessera_"):] in STORAGE:
                storage[name[len("tessera_"):]] = int(s.value)
    doc["storage"] = storage
    _ratio(doc)
    doc["processes"] = procs
    doc["requests"] = {"total": int(requests), "server_errors": int(errors)}
    return doc


def _ratio(doc: dict[str, Any]) -> None:
    st = doc.get("storage", {})
    if st.get("stored_bytes"):
        doc["dedup_ratio"] = round(st.get("logical_bytes", 0) / st["stored_bytes"], 3)


def _get(endpoint: Endpoint, path: str) -> tuple[int, str]:
    conn = endpoint.connect()
    try:
        conn.request("GET", endpoint.path(path), headers=endpoint.headers())
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    except OSError as exc:
        raise ClientError(f"cannot reach {endpoint.url}: {exc}") from exc
    finally:
        conn.close()


def _process(values: dict[str, float], now: float) -> str:
    """`12 rounds, 0 failures, every 600s, last 3m ago; evicted 1.2 GiB` (zeros left out)."""
    v = dict(values)
    parts = [f"{int(v.pop('rounds', 0))} rounds", f"{int(v.pop('failures', 0))} failures"]
    interval = v.pop("interval", None)
    if interval:
        parts.append(f"every {interval:g}s")
    last = v.pop("last_round", 0)
    parts.append(f"last {human_time(max(0.0, now - last))} ago" if last else "not run yet")
    extra = [f"{k.replace('_', ' ')} "
             + (human_bytes(x) if "bytes" in k or k == "budget" else f"{x:g}")
             for k, x in sorted(v.items()) if x]
    return ", ".join(parts) + ("; " + ", ".join(extra) if extra else "")


def render(doc: dict[str, Any], as_json: bool = False, now: float | None = None) -> str:
    if as_json:
        return json.dumps(doc, sort_keys=True)
    now = time.time() if now is None else now
    st = doc.get("storage", {})
    lines = [f"node        {doc['source']}  ({doc.get('health')})"]
    if "metrics" in doc:
        lines.append(f"metrics     {doc['metrics']}")
    if "images" in st:
        lines.append(f"images      {st['images']}")
    if "logical_bytes" in st:
        lines.append(f"logical     {human_bytes(st['logical_bytes'])}"
                     + (f"  (zero runs {human_bytes(st['zero_bytes'])})"
                        if st.get("zero_bytes") else ""))
    if "stored_bytes" in st:
        ratio = doc.get("dedup_ratio")
        lines.append(f"stored      {human_bytes(st['stored_bytes'])}"
                     + (f"  dedup ratio {ratio:.2f}x" if ratio else "")
                     + (f"  in {st.get('chunks', 0)} chunks" if "chunks" in st else ""))
    if "segments" in st:
        lines.append(f"segments    {st['segments']} files, "
                     f"{human_bytes(st.get('segment_bytes', 0))}"
                     + (f", {st['unreferenced_chunks']} chunks awaiting the reaper"
                        if st.get("unreferenced_chunks") else ""))
    if "cache_bytes" in st:
        lines.append(f"cache       {human_bytes(st['cache_bytes'])}")
    procs = doc.get("processes", {})
    width = max((len(n) for n in procs), default=0)
    for name, values in sorted(procs.items()):
        lines.append(f"process     {name.ljust(width)}  {_process(values, now)}")
    if "requests" in doc:
        r = doc["requests"]
        lines.append(f"requests    {r['total']} served, {r['server_errors']} server errors")
    return "\n".join(lines)
