# The [cluster] table (config.py ClusterConfig) and `tessera cluster keygen`.
import subprocess
import sys

import pytest

from tessera import config
from tessera.config import ConfigError

NODES = """
[[cluster.nodes]]
id = "a"
api = "127.0.0.1:9292"
peer = "127.0.0.1:9393"

[[cluster.nodes]]
id = "b"
api = "127.0.0.1:9294"
peer = "127.0.0.1:9395"
"""


def write(tmp_path, cluster: str, nodes: str = NODES, node_id: str = "a"):
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nid = "{node_id}"\ndata_dir = "d"\n\n{cluster}\n{nodes}')
    return path


def test_cluster_table_parses_exactly_as_documented(tmp_path):
    path = write(tmp_path, '[cluster]\nbind = "127.0.0.1:9393"\nkey_file = "cluster.key"\n'
                           'replicas = 3\nwrite_quorum = 2\n')
    cfg = config.load(path).cluster
    assert cfg.node_id == "a" and cfg.bind == "127.0.0.1:9393"
    assert cfg.key_file == tmp_path / "cluster.key"           # relative to the config file
    assert (cfg.replicas, cfg.write_quorum) == (3, 2)
    assert [n.id for n in cfg.nodes] == ["a", "b"]
    assert [n.id for n in cfg.peers] == ["b"]
    assert cfg.node("b").peer == "127.0.0.1:9395"


def test_single_node_has_no_cluster(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text('[node]\nid = "a"\n')
    assert config.load(path).cluster is None


@pytest.mark.parametrize("cluster, nodes, message", [
    ('[cluster]\nkey_file = "k"\n', NODES, "needs bind"),
    ('[cluster]\nbind = "127.0.0.1:1"\n', NODES, "needs key_file"),
    ('[cluster]\nbind = "x"\nkey_file = "k"\n', NODES, "HOST:PORT"),
    ('[cluster]\nbind = "127.0.0.1:1"\nkey_file = "k"\nreplica = 3\n', NODES, "unknown key"),
    ('[cluster]\nbind = "127.0.0.1:1"\nkey_file = "k"\nreplicas = 2\nwrite_quorum = 3\n',
     NODES, "write_quorum"),
    ('[cluster]\nbind = "127.0.0.1:1"\nkey_file = "k"\n', "", "not in [[cluster.nodes]]"),
    ('[cluster]\nbind = "127.0.0.1:1"\nkey_file = "k"\n',
     NODES.replace('id = "b"', 'id = "a"'), "unique"),
    ('[cluster]\nbind = "127.0.0.1:1"\nkey_file = "k"\n',
     NODES.replace('peer = "127.0.0.1:9395"', ''), "exactly id, api and peer"),
])
def test_bad_cluster_tables_are_refused(tmp_path, cluster, nodes, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.load(write(tmp_path, cluster, nodes))


def test_keygen_writes_a_private_key_once(tmp_path):
    key = tmp_path / "cluster.key"
    cmd = [sys.executable, "-m", "tessera", "cluster", "keygen", str(key)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert len(bytes.fromhex(key.read_text().strip())) == 32
    assert key.stat().st_mode & 0o077 == 0
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr
    path = write(tmp_path, '[cluster]\nbind = "127.0.0.1:9393"\nkey_file = "cluster.key"\n')
    assert config.load(path).cluster.read_key() == bytes.fromhex(key.read_text().strip())


def test_short_key_is_refused(tmp_path):
    (tmp_path / "cluster.key").write_text("abcd\n")
    path = write(tmp_path, '[cluster]\nbind = "127.0.0.1:9393"\nkey_file = "cluster.key"\n')
    with pytest.raises(ConfigError, match="shorter"):
        config.load(path).cluster.read_key()
