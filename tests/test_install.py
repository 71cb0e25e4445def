"""The package installs with its declared dependencies alone (no extras) and every entry point imports.

A fresh virtual environment, ``pip install`` of a copy of this source tree without extras (pip resolves
and installs the declared dependencies, from its cache and the configured indexes), then, from outside
the source tree, every module of the installed packages is imported and ``robert --help`` /
``robert-sim --help`` run. numpy used to arrive only through the ``embedded`` extra: an install against
a real MongoDB failed at import.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORED = (
    ".venv", ".git", "__pycache__", "build", "*.egg-info", "robert-data", "node_modules", "*.so",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "tests", "bench", "loadtests",
)  # fmt: skip

IMPORT_ALL = """
import importlib, importlib.util, pkgutil, sys
import robert_server.cli
mods = []
for package in ("robert_common", "crypto_backend", "robert_server", "simulator"):
    root = importlib.import_module(package)
    assert "site-packages" in root.__file__, root.__file__  # the installed copy, not a source tree
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(info.name)
        mods.append(info.name)
for name in robert_server.cli.COMMAND_MODULES:  # every `robert` subcommand module
    assert name in mods or name in sys.modules, name
assert importlib.util.find_spec("secantus") is None  # no extra came along
print(len(mods))
"""


@pytest.mark.slow
def test_installs_without_extras_and_every_entry_point_imports(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*IGNORED))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [str(python), "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip()) > 50
    for command in ("robert", "robert-sim"):
        helped = subprocess.run(
            [str(venv / "bin" / command), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stderr[-2000:]
