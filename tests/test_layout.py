# Guards for the packaging layout (DESIGN.md section 2): the repo root is the `tessera`
# package, its folders are namespace sub-packages without __init__.py, every folder with
# Python files ships in the wheel, and imports point in the allowed direction only.
import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", "bench", "docs", ".ci", ".git", ".venv", "build", "dist"}


def source_folders():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or rel.parts[0].startswith(".") or "egg-info" in rel.parts[0]:
            continue
        if "__pycache__" in rel.parts:
            continue
        yield rel.parent


def test_no_init_in_root_folders():
    for name in ("engine", "http", "replication"):
        assert not (ROOT / name / "__init__.py").exists(), name
    assert not list((ROOT / "tests").rglob("__init__.py"))


def test_every_source_folder_is_a_listed_package():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(conf["tool"]["setuptools"]["packages"])
    for folder in set(source_folders()):
        name = ".".join(("tessera",) + folder.parts)
        assert name in listed, f"{folder}/ holds .py files but {name} is not in pyproject packages"


def test_wheel_contains_every_module(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in set(source_folders()):
        for py in (ROOT / folder).glob("*.py"):
            rel = py.relative_to(ROOT)
            assert "tessera/" + rel.as_posix() in names, f"{rel} missing from the wheel"


FORBIDDEN = {
    "engine": ("tessera.http", "tessera.replication", "tessera.cli", "tessera.client", "h11"),
    "http": ("tessera.replication", "tessera.cli", "tessera.client"),
    "replication": ("tessera.http", "tessera.cli", "tessera.client"),
    # the people's client speaks HTTP to any Glance: no server layer inside it
    "client": ("tessera.http", "tessera.engine", "tessera.replication", "tessera.cli"),
}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_import_direction():
    for layer, banned in FORBIDDEN.items():
        for py in (ROOT / layer).rglob("*.py"):
            for name in _imports(py):
                for bad in banned:
                    assert not (name == bad or name.startswith(bad + ".")), \
                        f"{py.relative_to(ROOT)} imports {name}"
