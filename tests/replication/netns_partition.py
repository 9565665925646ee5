# The driver of test_netns_partition.py, run inside a fresh network namespace
# (`unshare -n`): a real network partition of node c, its peer traffic cut by the kernel,
# not by the node. Its loopback is private to the namespace, so the policy-routing rules
# here never touch the host's 127.0.0.1. Node c runs as uid 65534 (with the file-access
# capabilities, so it reads the venv and writes its data dir like the others): a uid rule
# then cuts c's outgoing peer calls while a and b still reach each other.
# Prints one JSON object of observations; the test asserts on them.
# Invariants: every process started here is stopped here by its pid.
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_cluster, reports, wait_for  # noqa: E402

UID = 65534
AS_C = ("setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
        "--inh-caps=+dac_override,+dac_read_search",
        "--ambient-caps=+dac_override,+dac_read_search")


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, capture_output=True)


def name(node, image_id):
    status, img = node.image(image_id)
    return img.get("name") if status == 200 else None


def patch_name(node, image_id, value):
    body = json.dumps([{"op": "replace", "path": "/name", "value": value}])
    status, _ = node.request("PATCH", f"/v2/images/{image_id}", body, {
        "Content-Type": "application/openstack-images-v2.1-json-patch"})
    assert status == 200, status


def main(root: Path) -> dict:
    # the namespace's own loopback; rules at pref 10/11 must come before the local table
    sh("ip link set lo up && ip rule add pref 100 lookup local && ip rule del pref 0")
    a, b, c = nodes = make_cluster(root, interval=0.3)
    c.wrapper = AS_C
    out: dict = {}
    try:
        for n in nodes:
            n.start()
        out["c_uid"] = os.stat(c.data_dir / "index").st_uid if (c.data_dir / "index").exists() \
            else os.stat(c.data_dir).st_uid
        image_id = a.create(name="first")
        wait_for(lambda: all(name(n, image_id) == "first" for n in nodes), 10, "create")

        cut = [f"ip rule add pref 10 to 127.0.0.1 ipproto tcp dport {c.peer_port} prohibit"]
        cut += [f"ip rule add pref 11 uidrange {UID}-{UID} to 127.0.0.1 ipproto tcp "
                f"dport {p} prohibit" for p in (a.peer_port, b.peer_port)]
        for rule in cut:
            sh(rule)
        # established keep-alive connections would otherwise hang until their timeout
        for port in (a.peer_port, b.peer_port, c.peer_port):
            subprocess.run(f"ss -K dst 127.0.0.1 dport = :{port}", shell=True,
                           capture_output=True)
        patch_name(a, image_id, "from-a")
        time.sleep(0.05)                               # c's write comes later
        patch_name(c, image_id, "from-c")
        other = c.create(name="made-on-c")
        wait_for(lambda: name(b, image_id) == "from-a", 10, "the majority side moves on")
        time.sleep(1.0)                                # several anti-entropy rounds
        view = reports(a.config)
        out["during"] = {
            "b": name(b, image_id), "c": name(c, image_id),
            "a_knows_other": name(a, other), "c_up_for_a": view["c"]["up"],
            "b_up_for_a": view["b"]["up"], "a_hints": view["a"]["hints"]}

        for pref in (10, 11, 11):
            sh(f"ip rule del pref {pref}")
        wait_for(lambda: all(name(n, image_id) == "from-c" for n in nodes), 20,
                 "the later write everywhere")
        wait_for(lambda: all(name(n, other) == "made-on-c" for n in nodes), 20,
                 "the record created during the partition")
        view = reports(a.config)
        out["after"] = {n.id: name(n, image_id) for n in nodes}
        out["other"] = {n.id: name(n, other) for n in nodes}
        out["images"] = {k: r["images"] for k, r in view.items()}
        out["up"] = sorted(k for k, r in view.items() if r.get("up"))
    finally:
        for n in nodes:
            n.stop()
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
