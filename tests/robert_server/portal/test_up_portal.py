"""What ``robert up`` decides about the portal before it starts anything."""

from __future__ import annotations

import socket
from pathlib import Path

from robert_common.mongo import free_port
from robert_common.settings import load_settings
from robert_server.portal.up import prepare_portal


def test_a_taken_port_leaves_the_portal_out_instead_of_crash_looping(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for values in ({"portal_port": port}, {"portal_port": free_port(), "portal_dev_idp_port": port}):
            settings = load_settings(data_dir=tmp_path, portal_issuer_token="t" * 32, **values)
            assert prepare_portal(settings, {}, []) == {"dev-idp", "portal"}
    free = load_settings(
        data_dir=tmp_path,
        portal_issuer_token="t" * 32,
        portal_port=free_port(),
        portal_dev_idp_port=free_port(),
    )
    assert prepare_portal(free, {}, []) == set()
    assert prepare_portal(free, {}, ["portal"]) == {"dev-idp"}
    production = load_settings(
        data_dir=tmp_path,
        portal_issuer_token="t" * 32,
        portal_port=free_port(),
        portal_oidc_issuer="https://psc",
    )
    assert prepare_portal(production, {}, []) == {"dev-idp"}  # a real provider: no dev provider
