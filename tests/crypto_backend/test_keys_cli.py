"""``robert keys init --dev``: the key-store step ``robert up`` runs as a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _keys_init_dev(data: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")},
        "ROBERT_DATA_DIR": str(data),
    }
    return subprocess.run(
        [sys.executable, "-m", "robert_server.cli", "keys", "init", "--dev"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_keys_init_dev_creates_once_then_keeps(tmp_path: Path) -> None:
    first = _keys_init_dev(tmp_path)
    assert first.returncode == 0, first.stderr
    store, passphrase = tmp_path / "keystore.json", tmp_path / "keystore.pass"
    assert store.exists() and passphrase.stat().st_mode & 0o777 == 0o600
    before = (store.read_bytes(), passphrase.read_bytes())
    second = _keys_init_dev(tmp_path)
    assert second.returncode == 0, second.stderr
    assert (store.read_bytes(), passphrase.read_bytes()) == before  # first start only
    assert passphrase.read_text().strip() not in first.stdout + first.stderr  # never printed
    # without --dev an existing store is never overwritten
    again = subprocess.run(
        [sys.executable, "-m", "robert_server.cli", "keys", "init"],
        env={**os.environ, "ROBERT_DATA_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert again.returncode != 0 and store.read_bytes() == before[0]
