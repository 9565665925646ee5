#!/usr/bin/env python3
# Cluster benchmark (three nodes on 127.0.0.1, R=3, W=2), ratios in one run:
# - upload through node a while c is down (quorum a+b), then a start of c: c holds (almost)
#   none of the image's chunks (max_hints = 1 here: the hinted handoff of the upload's
#   chunks to c overflows, and anti-entropy runs once an hour);
# - cold pull from c (every chunk fetched from a and b, verified, cached) against a warm pull
#   from a (holds everything), and c again once warm; time to first byte of each;
# - the image pulled from all three nodes at once (aggregate);
# - rebuild of a wiped node c by anti-entropy (MB/s, repair_rate raised for the run);
# - anti-entropy bytes per round between identical nodes (peer client byte counters).
# Every process started here is stopped by its pid; temp data is removed unless --keep.
#
#   python bench/cluster.py [--size-mib 1024] [--keep]
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

MiB = 1024 * 1024


def configs(base: Path, ids: list[str], *, interval: float, repair_rate: int) -> dict:
    ports = {i: (B.free_port(), B.free_port()) for i in ids}
    nodes = "".join(f'\n[[cluster.nodes]]\nid = "{i}"\napi = "127.0.0.1:{a}"\n'
                    f'peer = "127.0.0.1:{p}"\n' for i, (a, p) in ports.items())
    out = {}
    for i, (api, peer) in ports.items():
        path = base / f"{i}.toml"
        path.write_text(f'[node]\nid = "{i}"\ndata_dir = "{base / i}"\n\n'
                        f'[api]\nbind = "127.0.0.1:{api}"\n\n'
                        f'[cluster]\nbind = "127.0.0.1:{peer}"\nkey_file = "cluster.key"\n'
                        f'replicas = 3\nwrite_quorum = 2\nanti_entropy_interval = {interval}\n'
                        f'repair_rate = {repair_rate}\nmax_hints = 1\n' + nodes)
        out[i] = {"config": path, "api": api, "peer": peer}
    return out


class Node:
    def __init__(self, base: Path, node_id: str, info: dict) -> None:
        self.base, self.id, self.info = base, node_id, info
        self.port = info["api"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.base / f"{self.id}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tessera", "serve", "--config",
                                      str(self.info["config"])], stdout=log,
                                     stderr=subprocess.STDOUT, cwd=self.base)
        B.wait_port(self.port, self.proc)
        B.wait_port(self.info["peer"], self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            B.stop(self.proc, timeout=30)


def pull(port: int, path: str) -> dict:
    """One GET: time to first body byte, seconds, bytes (recv_into, 1 MiB buffer)."""
    buf = bytearray(MiB)
    view = memoryview(buf)
    sock = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        n = sock.recv_into(view, 65536)
        if n == 0:
            raise RuntimeError("EOF in head")
        head += bytes(view[:n])
    head, _, rest = head.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise RuntimeError(head[:200])
    length = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                  if ln.lower().startswith(b"content-length")][0])
    got = len(rest)
    ttfb = time.perf_counter() - t0 if got else None
    while got < length:
        n = sock.recv_into(view, min(MiB, length - got))
        if n == 0:
            raise RuntimeError(f"EOF after {got}")
        if ttfb is None:
            ttfb = time.perf_counter() - t0
        got += n
    seconds = time.perf_counter() - t0
    sock.close()
    return {"bytes": got, "seconds": seconds, "ttfb_s": ttfb, "gbps": got / seconds / 1e9}


def status(config: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "tessera", "status", "--config", str(config),
                          "--json"], capture_output=True, text=True, timeout=60,
                         cwd=config.parent)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    size = args.size_mib * MiB
    result: dict = {"size_bytes": size, "nodes": 3, "replicas": 3, "write_quorum": 2}
    with B.workspace("tessera-cluster-", keep=args.keep) as base:
        (base / "cluster.key").write_text(os.urandom(32).hex() + "\n")
        payload = base / "payload.bin"
        B.make_payload(payload, size)
        info = configs(base, ["a", "b", "c"], interval=3600.0, repair_rate=64 * MiB)
        nodes = {i: Node(base, i, info[i]) for i in info}
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        try:
            a.start()
            b.start()
            image = B.create_image(a.port, "bench")
            code, secs, _ = B.put_file(a.port, f"/v2/images/{image}/file", payload)
            assert code == 204, code
            result["upload_quorum_mbps"] = size / secs / 1e6
            print(f"upload via a (W=2 with a+b): {size / secs / 1e6:.0f} MB/s", flush=True)
            a.stop()
            b.stop()
            for n in (a, b, c):
                n.start()
            path = f"/v2/images/{image}/file"
            deadline = time.monotonic() + 30
            while B.http_json(c.port, "GET", f"/v2/images/{image}")[1].get("status") != "active":
                if time.monotonic() > deadline:
                    raise RuntimeError("record never reached c")
                time.sleep(0.1)
            held = {r["node"]: r["chunks"] for r in status(info["a"]["config"])["nodes"]}
            result["chunks_held_before_cold_pull"] = held
            cpu0 = {n.id: B.cpu_seconds(n.proc.pid) for n in (a, b, c)}
            cold = pull(c.port, path)
            cpu1 = {n.id: B.cpu_seconds(n.proc.pid) for n in (a, b, c)}
            warm = pull(a.port, path)
            cpu2 = {n.id: B.cpu_seconds(n.proc.pid) for n in (a, b, c)}
            gib = size / (1024 * MiB)
            result["cold_pull_cpu_s_per_gib"] = {i: (cpu1[i] - cpu0[i]) / gib for i in cpu0}
            result["warm_pull_cpu_s_per_gib"] = {i: (cpu2[i] - cpu1[i]) / gib for i in cpu0}
            print("node CPU s/GiB, cold pull from c: " + ", ".join(
                f"{i} {v:.2f}" for i, v in result["cold_pull_cpu_s_per_gib"].items())
                + f"; warm pull from a: a {result['warm_pull_cpu_s_per_gib']['a']:.2f}",
                flush=True)
            warm_c = pull(c.port, path)
            warm2 = pull(a.port, path)
            base_gbps = (warm["gbps"] + warm2["gbps"]) / 2
            result.update(cold_pull=cold, warm_pull_a=[warm, warm2], warm_pull_c=warm_c,
                          cold_over_warm=cold["gbps"] / base_gbps)
            print(f"cold pull from c: {cold['gbps']:.2f} GB/s, TTFB {cold['ttfb_s'] * 1000:.1f} ms;"
                  f" warm from a: {base_gbps:.2f} GB/s (TTFB {warm['ttfb_s'] * 1000:.1f} ms); "
                  f"ratio {cold['gbps'] / base_gbps:.2f}; c warm: {warm_c['gbps']:.2f} GB/s",
                  flush=True)
            outs: dict = {}
            threads = [threading.Thread(target=lambda n=n: outs.__setitem__(n.id, pull(n.port, path)))
                       for n in (a, b, c)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            result["aggregate_three_nodes_gbps"] = 3 * size / wall / 1e9
            result["aggregate_per_node"] = outs
            print(f"pulled from a, b, c at once: {3 * size / wall / 1e9:.2f} GB/s aggregate",
                  flush=True)
            # rebuild a wiped c: anti-entropy every 0.5 s, repair rate raised to 1 GB/s
            for n in (a, b, c):
                n.stop()
            shutil.rmtree(base / "c")
            text = info["c"]["config"].read_text()
            for n in (a, b, c):
                cfg = n.info["config"]
                cfg.write_text(cfg.read_text().replace("anti_entropy_interval = 3600.0",
                                                       "anti_entropy_interval = 0.5")
                               .replace(f"repair_rate = {64 * MiB}", "repair_rate = 1000000000"))
            del text
            a.start()
            b.start()
            full = status(info["a"]["config"])["nodes"][0]["chunks"]
            t0 = time.perf_counter()
            c.start()
            while True:
                doc = status(info["a"]["config"])
                rc = next(r for r in doc["nodes"] if r["node"] == "c")
                if rc.get("up") and rc.get("images") == 1 and rc["chunks"] == full \
                        and rc["under_replicated"] == 0:
                    break
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError("rebuild did not finish")
                time.sleep(0.2)
            secs = time.perf_counter() - t0
            result["rebuild_seconds"] = secs
            result["rebuild_mbps"] = size / secs / 1e6
            print(f"wiped c rebuilt in {secs:.1f} s ({size / secs / 1e6:.0f} MB/s, "
                  f"including its start)", flush=True)
            # anti-entropy traffic between identical nodes: counters over a few rounds
            settled = {r["node"]: r["rounds"] for r in status(info["a"]["config"])["nodes"]}
            while any(r["rounds"] < settled[r["node"]] + 2      # rounds that repaired c end
                      for r in status(info["a"]["config"])["nodes"]):
                time.sleep(0.5)
            before = status(info["a"]["config"])
            time.sleep(5.0)
            after = status(info["a"]["config"])
            ra = {r["node"]: r for r in before["nodes"]}
            per_round = {}
            for r in after["nodes"]:
                rounds = r["rounds"] - ra[r["node"]]["rounds"]
                moved = (r["peer_bytes_sent"] + r["peer_bytes_received"]
                         - ra[r["node"]]["peer_bytes_sent"] - ra[r["node"]]["peer_bytes_received"])
                per_round[r["node"]] = moved / max(1, rounds) / 2     # two peers each
            result["anti_entropy_bytes_per_round_per_peer_identical"] = per_round
            result["chunks"] = full
            print(f"anti-entropy between identical nodes ({full} chunks): "
                  + ", ".join(f"{k}: {v / 1024:.1f} KiB/round/peer" for k, v in per_round.items()),
                  flush=True)
        finally:
            for n in nodes.values():
                n.stop()
    print("results:", B.write_results("cluster", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
