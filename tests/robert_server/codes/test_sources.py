"""Whose guesses a code attempt counts against (issue 10 item 5): trusted proxies, IPv6 /64, global budget."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from robert_server.codes import make_verifier
from robert_server.codes.sources import parse_networks, source_of
from tests.fixtures.codes import CODES_PEPPER, make_code

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])


def test_a_direct_client_is_its_own_source_whatever_it_forwards() -> None:
    assert source_of("198.51.100.7", ["203.0.113.1"], PROXIES) == "198.51.100.7"
    assert source_of("198.51.100.7", ["203.0.113.1"], ()) == "198.51.100.7"


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_source() -> None:
    assert source_of("10.0.0.2", ["203.0.113.1"], PROXIES) == "203.0.113.1"
    # The client wrote the leftmost hops: it cannot choose its source by forging them.
    assert source_of("10.0.0.2", ["1.2.3.4, 203.0.113.1, 10.0.0.9"], PROXIES) == "203.0.113.1"
    assert source_of("10.0.0.2", ["1.2.3.4", "203.0.113.1"], PROXIES) == "203.0.113.1"  # two headers
    assert source_of("10.0.0.2", ["garbage, 203.0.113.1"], PROXIES) == "203.0.113.1"
    assert source_of("10.0.0.2", ["10.1.1.1"], PROXIES) == "10.1.1.1"  # all trusted: the leftmost
    assert source_of("10.0.0.2", [], PROXIES) == "10.0.0.2"


def test_ipv6_sources_are_counted_per_64() -> None:
    a = source_of("2001:db8:1:2:aaaa::1", [], ())
    b = source_of("2001:db8:1:2:ffff:1:2:3", [], ())
    assert a == b == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1", [], ()) != a
    assert source_of("2001:db8:ffff::5", ["[2001:db8:7:7::9]:443"], PROXIES) == "2001:db8:7:7::/64"
    assert source_of("::ffff:198.51.100.7", [], ()) == "198.51.100.7"


async def _report(http: aiohttp.ClientSession, base: str, code: str, client: str) -> int:
    body = {"token": code, "contacts": []}
    async with http.post(f"{base}/api/v6/report", json=body, headers={"X-Forwarded-For": client}) as r:
        return r.status


@pytest.mark.api_settings(
    codes_pepper=CODES_PEPPER, codes_rate_limit_failures=3, trusted_proxies=["127.0.0.1"]
)
async def test_behind_a_proxy_one_guessing_client_does_not_lock_out_the_others(api_server) -> None:
    """Before: every request came from the proxy (127.0.0.1), so 3 bad codes locked /report for everyone."""
    api_server.use_verifier(make_verifier(api_server.db, api_server.settings, api_server.clock))
    base = api_server.base_url
    async with aiohttp.ClientSession() as http:
        for guess in ("AAAAAA", "AAAAAB", "AAAAAC"):
            assert await _report(http, base, guess, "198.51.100.1") == 401
        code = await make_code(api_server.db, api_server.settings, api_server.clock, "short")
        assert await _report(http, base, code, "198.51.100.1") == 401  # the guesser is locked out
        assert await _report(http, base, code, "198.51.100.2") == 200  # its neighbours are not


@pytest.mark.api_settings(codes_pepper=CODES_PEPPER, codes_rate_limit_failures=3)
async def test_forwarded_for_from_an_untrusted_peer_is_ignored(api_server) -> None:
    api_server.use_verifier(make_verifier(api_server.db, api_server.settings, api_server.clock))
    base = api_server.base_url
    async with aiohttp.ClientSession() as http:
        for i, guess in enumerate(("AAAAAA", "AAAAAB", "AAAAAC")):
            assert await _report(http, base, guess, f"198.51.100.{i}") == 401
        code = await make_code(api_server.db, api_server.settings, api_server.clock, "short")
        assert await _report(http, base, code, "198.51.100.77") == 401  # still 127.0.0.1: locked out


@pytest.mark.api_settings(
    codes_pepper=CODES_PEPPER,
    codes_global_failures=5,
    codes_global_window=3600,
    trusted_proxies=["127.0.0.1"],
)
async def test_guessing_spread_over_many_sources_is_bounded_by_the_global_budget(api_server) -> None:
    api_server.use_verifier(make_verifier(api_server.db, api_server.settings, api_server.clock))
    base, db, settings, clock = api_server.base_url, api_server.db, api_server.settings, api_server.clock
    async with aiohttp.ClientSession() as http:
        good = [await make_code(db, settings, clock, "short") for _ in range(2)]
        assert await _report(http, base, good[0], "203.0.113.200") == 200  # a good code spends nothing
        for i in range(5):  # one guess from each of 5 sources: the window's budget
            assert await _report(http, base, f"BBBBB{i}", f"203.0.113.{i}") == 401
        # Spent: no short code is checked this window, from any source...
        assert await _report(http, base, good[1], "203.0.113.100") == 401
        # ...but long codes cannot be guessed and are not held back.
        long_code = await make_code(db, settings, clock, "long")
        assert await _report(http, base, long_code, "203.0.113.101") == 200
        clock.advance(3601)  # the next window: short codes are checked again
        good.append(await make_code(db, settings, clock, "short"))
        assert await _report(http, base, good[2], "203.0.113.102") == 200


def test_a_bad_trusted_proxy_stops_the_settings(tmp_path) -> None:
    from robert_common.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="not an IP address or CIDR"):
        load_settings(data_dir=tmp_path, trusted_proxies=["10.0.0.0/8", "proxy.example"])


@pytest.mark.slow
@pytest.mark.api_settings(codes_pepper=CODES_PEPPER, api_request_deadline=120.0)  # a busy machine: no 503
async def test_hundreds_of_concurrent_guesses_through_the_api_check_the_limit_only(api_server) -> None:
    """Issue 10 item 4 through the real HTTP API: 120 concurrent bad codes from one source, 20 checked.

    (120, not more, and a long request deadline: on a loaded 2-core machine a few hundred concurrent
    reports outlast the API's deadline and answer 503, which says nothing about the limiter.)"""
    from prometheus_client import REGISTRY

    def checked() -> float:
        value = REGISTRY.get_sample_value(
            "robert_codes_verifications_total", {"kind": "short", "result": "unknown"}
        )
        return value or 0.0

    api_server.use_verifier(make_verifier(api_server.db, api_server.settings, api_server.clock))
    before = checked()
    connector = aiohttp.TCPConnector(limit=120)
    async with aiohttp.ClientSession(connector=connector) as http:
        statuses = await asyncio.gather(
            *(_report(http, api_server.base_url, f"G{i:05d}", "ignored") for i in range(120))
        )
    assert set(statuses) <= {401, 503} and statuses.count(401) >= 20  # 503: shed before the code is read
    assert checked() - before == api_server.settings.codes_rate_limit_failures
