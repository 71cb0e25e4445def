"""The crypto service does not share its port (issue 10 item 8): with SO_REUSEPORT a stray second
``robert crypto`` silently took part of the calls; now it fails to start, loudly."""

from __future__ import annotations

import pytest

from crypto_backend.service import CryptoServer


async def test_a_second_crypto_service_on_the_same_port_fails_to_start(crypto_service) -> None:
    cs = crypto_service
    second = CryptoServer(cs.settings, cs.clock, cs.keystore, cs.db, listen=cs.address)
    with pytest.raises(OSError, match="cannot listen"):
        await second.start()
    await second.stop()
    assert await cs.client.registration_public_key()  # the first one still serves
