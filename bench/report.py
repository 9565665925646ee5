# The benchmark report (a script, not a test): runs the benchmarks of bench/ (--run), or
# reads their latest results from bench/results/, and writes docs/benchmarks.md with tables
# and PNG plots (matplotlib, the `bench` extra), the machine and the date.
#   python bench/report.py [--run [--quick]] [--only ingest,pull,...] [--results DIR]
#                          [--out docs/benchmarks.md]
# Invariants: every figure is shown beside the baseline measured in the same run (the
# benchmarks interleave them; absolute numbers on a shared 2-vCPU host drift); a result file
# that cannot be read becomes a note in the report, never a crash; a benchmark that does not
# exist yet (the cluster ones) is listed as not measured, with the file it would write.
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    title: str
    args: tuple[str, ...] = ()          # a full run
    quick: tuple[str, ...] = ()         # --quick: minutes, not tens of minutes
    json_flag: bool = False             # writes where --json says (else bench/results/NAME-*)
    fixed: tuple[str, ...] = ()         # older result files under fixed names
    extra: dict = field(default_factory=dict)


BENCHES = (
    Bench("ingest", "ingest.py", "Ingest (engine): chunk, hash, store",
          quick=("--size-mib", "256", "--reps", "2", "--rss-gib", "1"), json_flag=True,
          fixed=("engine_ingest.json",)),
    Bench("read", "read.py", "Read (engine): manifest to memoryviews",
          quick=("--size-mib", "256", "--reps", "2"), json_flag=True,
          fixed=("engine_read.json",)),
    Bench("push", "push.py", "Upload over HTTP (PUT /file)",
          quick=("--size-mib", "256", "--rounds", "2")),
    Bench("pull", "pull.py", "Download over HTTP (GET /file), 1 and 8 streams",
          quick=("--size-mib", "256", "--rounds", "2")),
    Bench("api", "api.py", "API requests per second",
          quick=("--counts", "1000", "--rounds", "2", "--duration", "3")),
    Bench("listing", "listing.py", "Listing (engine): one page of GET /v2/images",
          quick=("--images", "10000"), json_flag=True, fixed=("listing.json",)),
    Bench("cluster", "cluster.py", "Cluster: cold pull and rebuild",
          quick=("--size-mib", "128")),
    Bench("s3", "s3.py", "s3 store: upload, cold pull from the object store",
          quick=("--size-mib", "256", "--rounds", "2")),
    Bench("location", "location.py", "Image locations: cold pull through an HTTP origin",
          quick=("--size-mib", "256", "--rounds", "2")),
)


# -- running --------------------------------------------------------------------------------

def run(bench: Bench, results: Path, quick: bool, max_seconds: float) -> str:
    script = HERE / bench.script
    if not script.exists():
        return f"{bench.script} does not exist yet"
    cmd = [sys.executable, str(script), *(bench.quick if quick else bench.args)]
    if bench.json_flag:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        cmd += ["--json", str(results / f"{bench.name}-{stamp}.json")]
    print(f"report: running {' '.join(cmd[1:])}", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=max_seconds)
    except subprocess.TimeoutExpired:
        return f"timed out after {max_seconds:.0f} s"
    return "" if proc.returncode == 0 else f"exit status {proc.returncode}"


def latest(bench: Bench, results: Path) -> Path | None:
    """The newest NAME-<UTC stamp>.json by its stamp (file times change with checkouts),
    else the newest of the older fixed-name files."""
    stamped = sorted(results.glob(f"{bench.name}-*.json"))
    if stamped:
        return stamped[-1]
    fixed = [results / f for f in bench.fixed if (results / f).exists()]
    return max(fixed, key=lambda p: p.stat().st_mtime) if fixed else None


# -- the machine ----------------------------------------------------------------------------

def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "kernel": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
        info["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


# -- sections: each returns (markdown, plots written) ---------------------------------------

def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def _table(head: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, bool):
            return "yes" if v else "**no**"
        return str(v)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _bars(path: Path, title: str, groups: list[str], series: dict[str, list[float]],
          ylabel: str, horizontal: bool = False) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(8, 4.2 if not horizontal else 0.45 * len(groups) + 1.5))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        if horizontal:
            ax.barh(xs, values, height=width, label=label)
        else:
            ax.bar(xs, values, width=width, label=label)
    if horizontal:
        ax.set_yticks(range(len(groups)), groups, fontsize=8)
        ax.set_xlabel(ylabel)
        ax.invert_yaxis()
    else:
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sec_ingest(d: dict, img: Path) -> str:
    rows, groups, tes, floor = [], [], [], []
    for case, what in (("random", "fresh random bytes"), ("sparse", "sparse VM-like image"),
                       ("reingest", "re-ingest (all chunks known)")):
        r = d.get(case)
        if not r:
            continue
        gbps = r["ingest_gb_per_s"]
        ratio = r["ratio_vs_md5_sha512_floor"]
        rows.append([what, gbps, gbps / ratio, ratio, r.get("new_bytes", 0) / 2 ** 20,
                     r.get("zero_bytes", 0) / 2 ** 20])
        groups.append(case)
        tes.append(gbps)
        floor.append(gbps / ratio)
    text = _table(["case", "tessera GB/s", "MD5+SHA-512 floor GB/s", "ratio", "new MiB",
                   "zero MiB"], rows)
    if "rss" in d:
        text += (f"\n\nPeak RSS ingesting {d['rss']['size_bytes'] / 2 ** 30:.0f} GiB in a fresh "
                 f"process: {d['rss']['peak_rss_mb']:.0f} MB (before: "
                 f"{d['rss']['rss_before_ingest_mb']:.0f} MB).")
    _bars(img, "Ingest throughput vs hashing floor (same run)", groups,
          {"tessera ingest": tes, "MD5 + SHA-512 floor": floor}, "GB/s")
    return text


def sec_read(d: dict, img: Path) -> str:
    rows = [["first read (cold)", d.get("first_read_ratio_vs_memcpy", float("nan")), ""]]
    groups, ratios = ["first read"], [d.get("first_read_ratio_vs_memcpy", 0)]
    for mode in ("views", "copy"):
        if mode in d:
            rows.append([mode, d[mode]["ratio_vs_memcpy"], d[mode].get("gb_per_s", "")])
            groups.append(mode)
            ratios.append(d[mode]["ratio_vs_memcpy"])
    _bars(img, "Engine read vs memcpy of the same bytes (same run)", groups,
          {"ratio vs memcpy": ratios}, "ratio (1.0 = memcpy)")
    return _table(["mode", "ratio vs memcpy", "GB/s"], rows)


def sec_push(d: dict, img: Path) -> str:
    http = [s["gbps"] for s in d["http"]]
    eng = [s["gbps"] for s in d["engine"]]
    rows = [["PUT /file over HTTP", _med(http), _med([s["cpu_s_per_gib"] for s in d["http"]])],
            ["Engine.upload in-process (baseline)", _med(eng),
             _med([s["cpu_s_per_gib"] for s in d["engine"]])]]
    text = _table(["path", "GB/s (median)", "CPU s/GiB"], rows)
    target = d.get("target")
    ratio = d.get("ratio_of_medians", _med(http) / _med(eng))
    text += (f"\n\nRatio HTTP / engine: **{ratio:.2f}** (target ≥ {target}); "
             f"{d.get('rounds')} interleaved rounds of {d['size'] / 2 ** 30:.2f} GiB; node peak "
             f"RSS {d.get('peak_rss', 0) / 1e6:.0f} MB (anonymous "
             f"{d.get('peak_rss_anon', 0) / 1e6:.0f} MB).")
    _bars(img, "Upload throughput per round", [f"round {i + 1}" for i in range(len(http))],
          {"HTTP PUT": http, "engine (baseline)": eng[:len(http)]}, "GB/s")
    return text


def sec_pull(d: dict, img: Path) -> str:
    rows, groups, tes, base = [], [], [], []
    for r in d["summary"]:
        rows.append([r["client"], r["streams"], r["tessera_gbps"], r["baseline_gbps"],
                     r["ratio_of_medians"], r["tessera_cpu_s_per_gib"], r["target"], r["met"]])
        groups.append(f"{r['client']} x{r['streams']}")
        tes.append(r["tessera_gbps"])
        base.append(r["baseline_gbps"])
    text = _table(["client", "streams", "tessera GB/s", "baseline GB/s", "ratio",
                   "tessera CPU s/GiB", "target", "met"], rows)
    text += f"\n\nBaseline: {d.get('baseline')}; {d.get('rounds')} interleaved rounds; " \
            f"image {d['size'] / 2 ** 30:.2f} GiB."
    peaks = d.get("memory_peaks", {})
    if peaks:
        text += "\n\n" + _table(["phase", "VmHWM MB", "RssAnon MB", "RssFile MB"], [
            [k, v.get("VmHWM", 0) / 1e6, v.get("RssAnon", 0) / 1e6, v.get("RssFile", 0) / 1e6]
            for k, v in peaks.items()])
        text += "\n\n(RssFile is page cache of the memory-mapped segments, shared and " \
                "reclaimable; RssAnon is the node's own memory.)"
    _bars(img, "Download throughput (medians, same run)", groups,
          {"tessera": tes, "baseline": base}, "GB/s")
    return text


def sec_api(d: dict, img: Path) -> str:
    rows, groups, series = [], [], {"tessera": [], "trio+h11 canned": [], "nginx": []}
    for count, c in d["counts"].items():
        for kind, s in c["summary"].items():
            rows.append([f"{int(count):,}", kind, s["tessera_rps"],
                         s.get("tessera 1 process_rps"), s.get("trio+h11 canned_rps"),
                         s.get("nginx_rps"), s.get("ratio_vs_trio+h11 canned"),
                         s["target_rps"], s["met"]])
            groups.append(f"{kind}\n{int(count):,} images")
            series["tessera"].append(s["tessera_rps"])
            series["trio+h11 canned"].append(s.get("trio+h11 canned_rps") or 0)
            series["nginx"].append(s.get("nginx_rps") or 0)
    workers = d.get("workers", 1)
    text = _table(["images", "request", f"tessera req/s ({workers} processes)",
                   "tessera 1 process req/s", "canned trio+h11 req/s", "nginx req/s",
                   "ratio vs canned", "target req/s", "met"], rows)
    text += f"\n\nLoad: {d.get('client')}. `image` is `GET /v2/images/{{id}}` (200 ids in " \
            "rotation), `list20` is `GET /v2/images?limit=20`. tessera runs with `[api] " \
            f"workers = {workers}` (the main process and API worker processes answering reads); " \
            "the one-process figure is the same node without workers, in the same rounds."
    _bars(img, "API requests per second (same run)", groups, series, "requests/s")
    return text


def sec_listing(d: dict, img: Path) -> str:
    rows, groups, served = [], [], []
    for name, c in d["cases"].items():
        rows.append([name, c["served_us"], c["served_ratio"], c["computed_us"],
                     c["computed_ratio"]])
        groups.append(name if len(name) < 60 else name[:57] + "...")
        served.append(c["computed_us"])
    text = _table(["case", "served µs", "× baseline", "computed µs", "× baseline"], rows)
    text += (f"\n\n{d.get('images', 0):,} images; baseline ({d.get('baseline_us')} µs): "
             "reading 20 records by id in one transaction. *served*: the page cache hit; "
             "*computed*: the page built from the indexes.")
    _bars(img, "One page of GET /v2/images, computed (µs)", groups,
          {"computed": served}, "µs per page", horizontal=True)
    return text


def sec_cluster(d: dict, img: Path) -> str:
    warm_a = d.get("warm_pull_a") or []
    warm_a = warm_a if isinstance(warm_a, list) else [warm_a]
    base = _med([w["gbps"] for w in warm_a])
    rows, groups, values = [], [], []

    def pull(label: str, r: dict | None) -> None:
        if not r:
            return
        rows.append([label, r["gbps"], r["gbps"] / base if base == base else "",
                     r["ttfb_s"] * 1000 if "ttfb_s" in r else ""])
        groups.append(label)
        values.append(r["gbps"])

    pull("warm pull from a (holds every chunk): baseline",
         {"gbps": base, "ttfb_s": _med([w.get("ttfb_s", 0) for w in warm_a])})
    pull("cold pull from c (every chunk fetched from peers)", d.get("cold_pull"))
    pull("pull from c once warm", d.get("warm_pull_c"))
    if "aggregate_three_nodes_gbps" in d:
        pull("the image from a, b and c at once (aggregate)",
             {"gbps": d["aggregate_three_nodes_gbps"]})
    text = _table(["pull", "GB/s", "× warm pull", "time to first byte ms"], rows)
    facts = []
    if "rebuild_mbps" in d:
        facts.append(f"rebuild of a wiped node by anti-entropy: **{d['rebuild_mbps']:.1f} MB/s**"
                     f" ({d.get('rebuild_seconds', float('nan')):.1f} s)")
    if "upload_quorum_mbps" in d:
        facts.append(f"upload with one node down (W={d.get('write_quorum')} of "
                     f"R={d.get('replicas')}): {d['upload_quorum_mbps']:.1f} MB/s")
    ae = d.get("anti_entropy_bytes_per_round_identical")
    if isinstance(ae, dict) and ae:
        facts.append("anti-entropy between identical nodes: "
                     f"{_med(list(ae.values())) / 1024:.1f} KiB per round")
    if "size_bytes" in d:
        facts.append(f"image {d['size_bytes'] / 2 ** 20:.0f} MiB, {d.get('chunks', '?')} chunks,"
                     f" {d.get('nodes', '?')} nodes on one host")
    text += "\n\n" + "\n".join(f"- {f}" for f in facts)
    _bars(img, "Cluster pulls vs a warm pull (same run)", [g.split(" (")[0] for g in groups],
          {"GB/s": values}, "GB/s")
    return text


def _summary_section(d: dict, img: Path, rows: list[tuple[str, str, str]], title: str,
                     facts: list[str]) -> str:
    """A table of (label, MB/s key, ratio-to-baseline key) rows from a result's summary."""
    sm = d.get("summary", {})
    table = [[label, sm[rate], sm[ratio] if ratio else (1 if "baseline" in label else "")]
             for label, rate, ratio in rows
             if rate in sm]
    _bars(img, title, [r[0].split(" (")[0] for r in table], {"MB/s": [r[1] for r in table]},
          "MB/s")
    text = _table(["", "MB/s", "× baseline"], table)
    return text + ("\n\n" + "\n".join(f"- {f}" for f in facts) if facts else "")


def sec_s3(d: dict, img: Path) -> str:
    sm = d.get("summary", {})
    return _summary_section(d, img, [
        ("upload to a local store: baseline", "upload_local_mbps", ""),
        ("upload to the s3 store (active once its packs are in the bucket)",
         "upload_s3_mbps", "upload_ratio"),
        ("pull, warm (s3 store, chunks in the local cache): baseline", "pull_warm_mbps", ""),
        ("pull, cold (local cache empty: ranged GETs from the bucket)", "pull_cold_mbps",
         "pull_cold_over_warm"),
        ("pull from a local store", "pull_local_mbps", "")],
        "s3 store vs local (same run)",
        [f"objects written per GiB: **{sm.get('objects_per_gib', float('nan')):.0f}**",
         f"{d.get('object_store', '')}, {d.get('size', 0) / 2 ** 20:.0f} MiB, "
         f"{d.get('rounds', '?')} rounds (medians)"])


def sec_location(d: dict, img: Path) -> str:
    return _summary_section(d, img, [
        ("warm pull (chunks in the cache tier): baseline", "pull_warm_mbps", ""),
        ("cold pull (ranged GETs from the origin, verified, kept)", "pull_cold_mbps",
         "pull_cold_over_warm"),
        ("registration (the origin read once, hashed, chunked)", "register_mbps", ""),
        ("the origin read directly", "origin_mbps", "")],
        "Location image pulls (same run)",
        [f"origin: {d.get('origin', '')}, {d.get('size', 0) / 2 ** 20:.0f} MiB, "
         f"{d.get('rounds', '?')} rounds (medians)"])


def sec_generic(d: dict, img: Path) -> str:
    flat = {k: v for k, v in d.items() if isinstance(v, (int, float, str))}
    return _table(["figure", "value"], [[k, v] for k, v in sorted(flat.items())])


SECTIONS = {"ingest": sec_ingest, "read": sec_read, "push": sec_push, "pull": sec_pull,
            "api": sec_api, "listing": sec_listing, "cluster": sec_cluster, "s3": sec_s3,
            "location": sec_location}


# -- the report -----------------------------------------------------------------------------

def write_report(results: Path, out: Path, only: set[str], notes: dict[str, str]) -> Path:
    img_dir = out.parent / "benchmarks"
    img_dir.mkdir(parents=True, exist_ok=True)
    m = machine()
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["# Benchmarks", "",
             f"Generated by `bench/report.py` on {now}.", "",
             "| machine | |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in m.items()], "",
             "Every figure stands beside a baseline measured in the same run, interleaved "
             "round by round: on this shared host absolute speeds drift by up to 2x within "
             "minutes, the ratios much less. The scripts and their targets are described in "
             "`bench/README.md`; raw results are the JSON files named below.", ""]
    for bench in BENCHES:
        if only and bench.name not in only:
            continue
        lines += [f"## {bench.title}", ""]
        path = latest(bench, results)
        if notes.get(bench.name):
            lines += [f"*This run:* {notes[bench.name]}.", ""]
        if path is None:
            lines += [f"Not measured: no `bench/results/{bench.name}-*.json` "
                      f"(`bench/{bench.script}`).", ""]
            continue
        try:
            data = json.loads(path.read_text())
            img = img_dir / f"{bench.name}.png"
            body = SECTIONS[bench.name](data, img)
        except Exception as exc:          # a format changed under us: say so, go on
            lines += [f"Results in `{path.name}` could not be read: "
                      f"{type(exc).__name__}: {exc}.", ""]
            continue
        when = data.get("host", {}).get("time") if isinstance(data.get("host"), dict) else None
        when = when or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
        lines += [body, "", f"![{bench.name}](benchmarks/{img.name})", "",
                  f"Source: `bench/results/{path.name}` ({when}).", ""]
    out.write_text("\n".join(lines))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="run the benchmarks and write docs/benchmarks.md")
    ap.add_argument("--run", action="store_true", help="run the benchmarks first")
    ap.add_argument("--quick", action="store_true", help="with --run: small sizes, few rounds")
    ap.add_argument("--only", default="", help="comma-separated: " +
                    ",".join(b.name for b in BENCHES))
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--max-seconds", type=float, default=1800,
                    help="per benchmark, when running")
    args = ap.parse_args()
    only = {x for x in args.only.split(",") if x}
    unknown = only - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    notes: dict[str, str] = {}
    if args.run:
        args.results.mkdir(parents=True, exist_ok=True)
        for bench in BENCHES:
            if not only or bench.name in only:
                notes[bench.name] = run(bench, args.results, args.quick, args.max_seconds)
    out = write_report(args.results, args.out, only, notes)
    print(f"report: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
