"""Fixtures of the crypto back end's tests.

The protocol backend a test runs on: ``pytestmark = pytest.mark.usefixtures("protocol_backend")`` runs each
test of a module once on the native extension and once on the pure-Python reference. ``softhsm``: an empty
SoftHSM2 token selected as the key store (see softhsm.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crypto_backend import protocol
from tests.crypto_backend.softhsm import SoftHsmToken, make_token, wipe


@pytest.fixture(params=["native", "pure"])
def protocol_backend(request: pytest.FixtureRequest) -> Iterator[protocol.Backend]:
    backend = protocol.NATIVE_BACKEND if request.param == "native" else protocol.PURE_BACKEND
    assert backend is not None, "the native extension is not built: run make install"
    with protocol.use_backend(backend):
        yield backend


@pytest.fixture(scope="session")
def _softhsm_session(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    return make_token(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture
def softhsm(_softhsm_session: SoftHsmToken, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsmToken]:
    """An empty SoftHSM2 token, and this process's environment selecting it as the key store."""
    wipe(_softhsm_session)
    for name, value in _softhsm_session.env().items():
        monkeypatch.setenv(name, value)
    yield _softhsm_session
    wipe(_softhsm_session)
