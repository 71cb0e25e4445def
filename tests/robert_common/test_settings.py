"""The one Settings object: every bad value named, a settings file read, the environment wins."""

from __future__ import annotations

import pytest

from robert_common.settings import SettingsError, load_settings


def test_bad_settings_name_each_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBERT_TIME_START", "2020-06-01")
    monkeypatch.setenv("ROBERT_BUNDLE_DAYS", "0")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "ROBERT_TIME_START" in str(e.value) and "ROBERT_BUNDLE_DAYS" in str(e.value)


def test_settings_file_is_read_and_environment_wins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "robert.toml"
    f.write_text("bundle_days = 2\nhttp_port = 9999\n")
    monkeypatch.setenv("ROBERT_SETTINGS_FILE", str(f))
    monkeypatch.setenv("ROBERT_HTTP_PORT", "8181")
    s = load_settings()
    assert (s.bundle_days, s.http_port) == (2, 8181)
