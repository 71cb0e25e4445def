"""``robert-sim run``: with no flag it runs on a throw-away system of its own; with system flags, on
someone else's (and then it needs the clock-shift file and an issuer token)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import cli

SMALL = Path(__file__).parents[2] / "simulator" / "scenarios" / "small.yaml"
ROBERT_SIM = Path(sys.executable).parent / "robert-sim"  # the console script `make install` puts there


@pytest.mark.slow
def test_run_with_no_flag_starts_its_own_system_and_reports_the_ground_truth() -> None:
    assert ROBERT_SIM.exists(), f"{ROBERT_SIM} missing: run make install"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")}  # nothing set up by hand
    env["COLUMNS"] = "160"
    command = [str(ROBERT_SIM), "run", str(SMALL)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = done.stdout
    print(out, done.stderr)
    assert done.returncode == 0, done.stderr[-2000:]
    # the summary: 4 phones, TP 1, FP 0, FN 0, TN 3 (bob is the one exposed and notified)
    assert re.search(r"│\s*4\s*│\s*1\s*│\s*0\s*│\s*0\s*│\s*3\s*│\s*100 %\s*│\s*100 %\s*│", out), out
    verdicts = dict(re.findall(r"│ (alice|bob|carol|dave)\s*│.*?│\s*(TP|TN|FP|FN)\s*│", out))
    assert verdicts == {"alice": "TN", "bob": "TP", "carol": "TN", "dave": "TN"}
    assert "1/1" in out  # alice's report went through
    data_dir = re.search(r"data in (\S+)", out)
    assert data_dir is not None and not Path(data_dir.group(1)).exists()  # the system is gone


def test_a_system_flag_means_someone_else_s_system_which_needs_a_shift_file_and_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ROBERT_CLOCK_SHIFT_FILE", "ROBERT_SIM_ISSUER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["run", str(SMALL), "--issuer-token", "T"]) == 2
    assert "no clock-shift file" in capsys.readouterr().err
    assert cli.main(["run", str(SMALL), "--server", "http://127.0.0.1:1", "--clock-shift-file", "f"]) == 2
    assert "no issuer token" in capsys.readouterr().err


def test_external_defaults_follow_the_robert_up_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBERT_HTTP_PORT", "9999")
    monkeypatch.setenv("ROBERT_CLOCK_SHIFT_FILE", "/tmp/shift")
    monkeypatch.setenv("ROBERT_SIM_ISSUER_TOKEN", "tok")
    args = cli.build_parser().parse_args(["run", str(SMALL), "--matcher-wait", "5"])
    cli._external_defaults(args)
    assert args.server == "http://127.0.0.1:9999"
    assert args.clock_shift_file == Path("/tmp/shift") and args.issuer_token == "tok"
    assert args.matcher_cmd is None and args.matcher_wait == 5
    plain = cli.build_parser().parse_args(["run", str(SMALL), "--server", "http://h:1"])
    cli._external_defaults(plain)
    assert plain.server == "http://h:1" and plain.matcher_cmd == "robert matcher --once"
