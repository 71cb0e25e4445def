"""The protocol backend a test runs on: ``pytestmark = pytest.mark.usefixtures("protocol_backend")`` runs each
test of a module once on the native extension and once on the pure-Python reference."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crypto_backend import protocol


@pytest.fixture(params=["native", "pure"])
def protocol_backend(request: pytest.FixtureRequest) -> Iterator[protocol.Backend]:
    backend = protocol.NATIVE_BACKEND if request.param == "native" else protocol.PURE_BACKEND
    assert backend is not None, "the native extension is not built: run make install"
    with protocol.use_backend(backend):
        yield backend
