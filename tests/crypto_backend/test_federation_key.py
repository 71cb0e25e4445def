"""``robert keys export-federation-key`` / ``import-federation-key``: two key stores come to share K_G."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto_backend import protocol
from crypto_backend.keystore import FileKeyStore
from robert_server.cli import main

PASS = "a passphrase"  # noqa: S105


def _use(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    monkeypatch.setenv("ROBERT_DATA_DIR", str(folder))
    monkeypatch.setenv("ROBERT_KEYSTORE_PASSPHRASE", PASS)
    return folder / "keystore.json"


def test_a_second_country_imports_the_first_ones_k_g(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _use(monkeypatch, tmp_path / "a"), tmp_path / "b" / "keystore.json"
    assert main(["keys", "init"]) == 0
    shared = tmp_path / "k_g"
    assert main(["keys", "export-federation-key", str(shared)]) == 0
    assert shared.stat().st_mode & 0o777 == 0o600
    assert main(["keys", "export-federation-key", str(shared)]) == 1  # never overwritten
    k_g = FileKeyStore.load(a, PASS.encode()).federation_key()
    assert k_g.hex() not in capsys.readouterr().out  # never printed

    _use(monkeypatch, tmp_path / "b")
    assert main(["keys", "init"]) == 0
    assert FileKeyStore.load(b, PASS.encode()).federation_key() != k_g
    assert main(["keys", "import-federation-key", str(shared)]) == 0
    store = FileKeyStore.load(b, PASS.encode())
    assert store.federation_key() == k_g and store.federation_key_version == 2
    assert main(["keys", "import-federation-key", str(shared)]) == 0  # again: nothing changes
    assert FileKeyStore.load(b, PASS.encode()).federation_key_version == 2
    # B now reads the country of A's EBIDs.
    ebid = bytes(range(8))
    ecc = protocol.encrypt_country_code(k_g, ebid, 0x21)
    assert list(protocol.country_codes(store.federation_key(), ebid, ecc)) == [0x21]


def test_a_file_that_is_not_an_exported_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(monkeypatch, tmp_path)
    assert main(["keys", "init"]) == 0
    bad = tmp_path / "bad"
    bad.write_text("ROBERT-FEDERATION-KEY-V1\nc2hvcnQ=\n")  # 5 bytes
    assert main(["keys", "import-federation-key", str(bad)]) == 1
    bad.write_text("hello\n")
    assert main(["keys", "import-federation-key", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "a federation key is 32 bytes" in err and "is not a file written by" in err
