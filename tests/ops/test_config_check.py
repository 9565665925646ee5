# `tessera config check FILE`: a good file prints the effective configuration (which loads
# back to the same values); unknown keys and bad values are errors with exit status 2.
from __future__ import annotations

import subprocess
import sys

from tessera import config as config_mod


def check(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tessera", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_good_file_prints_effective_config(tmp_path):
    conf = tmp_path / "good.toml"
    conf.write_text('[node]\nid = "n1"\ndata_dir = "/srv/tessera"\n'
                    '[engine]\nreaper_grace = 60\n'
                    '[api]\nbind = "127.0.0.1:9393"\nmetrics = "off"\n'
                    '[log]\nformat = "json"\n')
    proc = check(conf)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert 'id = "n1"' in out and 'bind = "127.0.0.1:9393"' in out
    assert "reaper_grace = 60" in out and 'format = "json"' in out
    assert "segment_size = 268435456" in out          # defaults are shown too
    assert "# max_stored_bytes = (unset)" in out
    again = tmp_path / "again.toml"
    again.write_text(out)
    assert config_mod.load(again) == config_mod.load(conf)


def test_unknown_key_is_an_error(tmp_path):
    conf = tmp_path / "unknown.toml"
    conf.write_text('[api]\nbind = "127.0.0.1:9393"\nmax_conections = 10\n')
    proc = check(conf)
    assert proc.returncode == 2
    assert "unknown key(s) in [api]: max_conections" in proc.stderr and not proc.stdout


def test_unknown_table_is_an_error(tmp_path):
    conf = tmp_path / "table.toml"
    conf.write_text('[logging]\nformat = "json"\n')
    proc = check(conf)
    assert proc.returncode == 2 and "unknown table(s): logging" in proc.stderr


def test_bad_values_are_errors(tmp_path):
    cases = {'[api]\nmax_connections = "many"\n': "[api] max_connections must be int",
             '[api]\nauth = "keystone"\n': "[api] auth must be one of",
             '[log]\nformat = "xml"\n': "[log] format must be one of",
             '[engine]\ndurable = 1\n': "[engine] durable must be bool",
             '[api]\nbind = "nowhere"\n': "bind must be HOST:PORT",
             '[api\n': "cannot read config"}
    for i, (text, message) in enumerate(cases.items()):
        conf = tmp_path / f"bad{i}.toml"
        conf.write_text(text)
        proc = check(conf)
        assert proc.returncode == 2 and message in proc.stderr, (text, proc.stderr)


def test_every_table_round_trips(tmp_path):
    """The printed configuration loads back to the same values, [import], [cluster] with its
    nodes and [[stores]] included."""
    (tmp_path / "cluster.key").write_text("ab" * 32 + "\n")
    conf = tmp_path / "full.toml"
    conf.write_text('[node]\nid = "a"\n'
                    '[import]\nallowed_ports = [80, 8080]\nallowed_hosts = ["images.test"]\n'
                    '[cluster]\nbind = "127.0.0.1:9400"\nkey_file = "cluster.key"\n'
                    'replicas = 2\nwrite_quorum = 1\n'
                    '[[cluster.nodes]]\nid = "a"\napi = "127.0.0.1:9292"\n'
                    'peer = "127.0.0.1:9400"\n'
                    '[[cluster.nodes]]\nid = "b"\napi = "127.0.0.1:9293"\n'
                    'peer = "127.0.0.1:9401"\n'
                    '[[stores]]\nid = "fast"\ndefault = true\n'
                    '[[stores]]\nid = "cheap"\n')
    proc = check(conf)
    assert proc.returncode == 0, proc.stderr
    assert "allowed_ports = [80, 8080]" in proc.stdout and "[[cluster.nodes]]" in proc.stdout
    again = tmp_path / "again.toml"
    again.write_text(proc.stdout)
    assert config_mod.load(again) == config_mod.load(conf)
