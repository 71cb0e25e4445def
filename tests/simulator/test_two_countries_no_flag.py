"""``robert-sim run simulator/scenarios/two-countries.yaml`` with no flag: it starts a throw-away system
per country (fr 0x21, de 0x22), federated with each other, runs the scenario, reports against the ground
truth and removes everything. carl (de) reports in de; alice (fr) is told by fr's server through the
federation, dora (de) by de's; bob, carl and emil are not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import cli

SCENARIO = Path(__file__).parents[2] / "simulator" / "scenarios" / "two-countries.yaml"
ROBERT_SIM = Path(sys.executable).parent / "robert-sim"  # the console script `make install` puts there


@pytest.mark.slow
def test_two_countries_with_no_flag_run_on_two_federated_systems_of_their_own() -> None:
    assert ROBERT_SIM.exists(), f"{ROBERT_SIM} missing: run make install"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")}  # nothing set up by hand
    env["COLUMNS"] = "160"
    command = [str(ROBERT_SIM), "run", str(SCENARIO), "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = done.stdout
    print(out, done.stderr)
    assert done.returncode == 0, done.stderr[-2000:]
    # the summary: 5 phones, TP 2, FP 0, FN 0, TN 3
    assert re.search(r"│\s*5\s*│\s*2\s*│\s*0\s*│\s*0\s*│\s*3\s*│\s*100 %\s*│\s*100 %\s*│", out), out
    rows = re.findall(r"│ (alice|bob|carl|dora|emil)\s*│\s*(fr|de)\s*│.*?│\s*(TP|TN|FP|FN)\s*│", out)
    assert sorted(rows) == [
        ("alice", "fr", "TP"), ("bob", "fr", "TN"), ("carl", "de", "TN"), ("dora", "de", "TP"),
        ("emil", "de", "TN"),
    ]  # fmt: skip
    assert "1/1" in out  # carl's report went through, with a code issued in de
    folders = re.findall(r"(?:data in|federation folder \(clock shift, K_G\):) (\S+)", out)
    assert len(folders) == 3 and not any(Path(f).exists() for f in folders)  # everything is gone


def test_country_flags_still_mean_systems_someone_else_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ROBERT_CLOCK_SHIFT_FILE", raising=False)
    assert cli.main(["run", str(SCENARIO), "--country", "fr=http://127.0.0.1:1,a:1,b:1,T"]) == 2
    assert "no clock-shift file" in capsys.readouterr().err
    argv = ["run", str(SCENARIO), "--clock-shift-file", "f", "--country", "fr=http://127.0.0.1:1,a:1,b:1,T"]
    assert cli.main(argv) == 2
    assert "no system for countries de" in capsys.readouterr().err


def test_a_federated_system_needs_its_country_and_partners_of_other_countries() -> None:
    from simulator.system import LocalFederation, LocalSystem

    with pytest.raises(ValueError, match="need a country_code"):
        LocalSystem(("api", "federation"))
    fr, other_fr = LocalSystem(("api",), country_code=0x21), LocalSystem(("api",), country_code=0x21)
    try:
        with pytest.raises(ValueError, match="another country"):
            fr.partner_with(other_fr)
    finally:
        fr.stop()
        other_fr.stop()
    with pytest.raises(ValueError, match="two countries or more"):
        LocalFederation({"fr": 0x21})


def test_a_federation_shares_k_g_from_its_first_country_and_partners_every_pair() -> None:
    from simulator.system import LocalFederation

    fed = LocalFederation({"fr": 0x21, "de": 0x22, "it": 0x27}, ("api", "federation"))
    try:
        fr, de, it = fed.systems.values()
        assert fr.federation_key_export is not None and fr.federation_key_import is None
        assert de.federation_key_import == it.federation_key_import == fr.federation_key_export
        assert [p.country_code for p in de.partners] == [0x21, 0x27]
        assert fr.clock_shift_file == de.clock_shift_file == fed.clock_shift_file
        env = de._federation_env()  # makes de's development certificate
        assert env["ROBERT_COUNTRY_CODE"] == str(0x22)
        assert env["ROBERT_FEDERATION_LISTEN"] == de.federation_address
        assert (de.federation_pki / "ca.pem").exists() and Path(env["ROBERT_FEDERATION_TLS_KEY"]).exists()
        assert f'"endpoint": "{it.federation_address}"' in env["ROBERT_FEDERATION_PARTNERS"]
    finally:
        fed.stop()
    assert not fed.dir.exists() and not any(s.dir.exists() for s in fed.systems.values())
