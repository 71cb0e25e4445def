"""The README documents every setting and names the two quick-start commands that .ci/run uses."""

from __future__ import annotations

from pathlib import Path

from robert_common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f"ROBERT_{n.upper()}" for n in Settings.model_fields if f"`ROBERT_{n.upper()}`" not in readme]
    assert not missing, f"document these settings in README.md: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
