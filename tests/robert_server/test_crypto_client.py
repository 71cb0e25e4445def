"""The crypto client against answers that break the contract of proto/crypto.proto, and under ``python -O``.

A crypto service that misbehaves is a real gRPC server on 127.0.0.1 (``odd_service``) that answers each
method with the bytes a test sets. Every broken answer must raise CryptoError (reason MALFORMED_ANSWER),
never an AssertionError, a ValueError, or (under ``python -O``, which drops asserts) an AttributeError
or a silently wrong result.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from crypto_backend import protocol
from robert_common.rpc import crypto_pb2 as pb
from robert_server.crypto_client import (
    MALFORMED_ANSWER,
    AuthRequest,
    Bundle,
    ContactToValidate,
    CryptoClient,
    CryptoError,
    RequestType,
    channel_target,
)
from simulator.phone import Phone
from tests.fixtures.crypto import CryptoService

SERVICE = "robert.crypto.v1.CryptoService"
GARBAGE = b"\xff"  # a truncated field tag: no message of any type parses from it
ROOT = Path(__file__).resolve().parents[2]


class OddCryptoService:
    """Answers ``answers[method]`` (raw bytes, no serializer) to each call of the crypto service."""

    METHODS = (
        "CreateRegistration",
        "AuthenticateRequest",
        "AuthenticateRequests",
        "DeleteIdentity",
        "ValidateContacts",
        "GetRegistrationPublicKey",
    )

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.server = grpc.aio.server()
        handlers = {m: grpc.unary_unary_rpc_method_handler(self._answer(m)) for m in self.METHODS}
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def _answer(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def answer(request: bytes, context: Any) -> bytes:
            return self.answers[method]

        return answer


@pytest.fixture
async def odd_service() -> AsyncIterator[OddCryptoService]:
    service = OddCryptoService()
    await service.server.start()
    try:
        yield service
    finally:
        await service.server.stop(None)


@pytest.fixture
async def odd_client(odd_service: OddCryptoService) -> AsyncIterator[CryptoClient]:
    async with CryptoClient(odd_service.address, 5.0) as client:
        yield client


BUNDLE = Bundle(1000, 14, 0x21)


def auth_request(bundle: Bundle | None = None) -> AuthRequest:
    return AuthRequest(b"\x01" * 8, 1000, 1234, b"\x00" * 32, RequestType.STATUS, bundle)


def contact() -> ContactToValidate:
    return ContactToValidate.from_lists(b"\x01" * 8, b"\x02", [1234], [1234], [b"\x00" * 5])


async def expect_malformed(call: Awaitable[object]) -> CryptoError:
    with pytest.raises(CryptoError) as info:
        await call
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.INTERNAL, MALFORMED_ANSWER)
    assert not info.value.unavailable
    return info.value


CALLS: dict[str, Callable[[CryptoClient], Awaitable[object]]] = {
    "CreateRegistration": lambda c: c.create_registration(b"spki", 1000, 14, 0x21),
    "AuthenticateRequest": lambda c: c.authenticate(
        b"\x01" * 8, 1000, 1234, b"\x00" * 32, RequestType.STATUS
    ),
    "AuthenticateRequests": lambda c: c.authenticate_many([auth_request()]),
    "DeleteIdentity": lambda c: c.delete_identity(b"\x01" * 5),
    "ValidateContacts": lambda c: c.validate_contacts([contact()]),
    "GetRegistrationPublicKey": lambda c: c.registration_public_key(),
}


@pytest.mark.parametrize("method", OddCryptoService.METHODS)
async def test_an_answer_that_is_not_the_response_message_raises_crypto_error(
    odd_service: OddCryptoService, odd_client: CryptoClient, method: str
) -> None:
    # grpc.aio gives None for an answer it cannot parse: the client used to assert on its type.
    odd_service.answers[method] = GARBAGE
    await expect_malformed(CALLS[method](odd_client))


async def test_a_batch_answer_that_breaks_the_contract_raises_crypto_error(
    odd_service: OddCryptoService, odd_client: CryptoClient
) -> None:
    ok = pb.AuthenticateRequestResult(ok=pb.AuthenticateRequestResponse(id_a=b"\x01" * 5, epoch_id=1000))

    def answer(*results: pb.AuthenticateRequestResult) -> None:
        odd_service.answers["AuthenticateRequests"] = pb.AuthenticateRequestsResponse(
            results=results
        ).SerializeToString()

    answer(ok)  # one result for two requests
    await expect_malformed(odd_client.authenticate_many([auth_request(), auth_request()]))
    answer(ok, pb.AuthenticateRequestResult())  # a result that is neither ok nor error
    await expect_malformed(odd_client.authenticate_many([auth_request(), auth_request()]))
    answer(ok)  # a bundle was asked for: none came
    await expect_malformed(odd_client.authenticate_many([auth_request(BUNDLE)]))
    assert [r.id_a for r in await odd_client.authenticate_many([auth_request()])] == [b"\x01" * 5]

    odd_service.answers["AuthenticateRequest"] = ok.ok.SerializeToString()
    await expect_malformed(
        odd_client.authenticate(b"\x01" * 8, 1000, 1234, b"\x00" * 32, RequestType.STATUS, bundle=BUNDLE)
    )


async def test_a_refusal_the_client_cannot_name_stays_a_refusal_of_that_request(
    odd_service: OddCryptoService, odd_client: CryptoClient
) -> None:
    def refused(code: str, reason: int) -> pb.AuthenticateRequestResult:
        return pb.AuthenticateRequestResult(error=pb.AuthenticateRequestError(code=code, reason=reason))

    known = refused("NOT_FOUND", pb.UNKNOWN_IDENTITY)
    newer_reason = refused("PERMISSION_DENIED", 99)  # a reason added after this client
    odd_code = refused("mro", pb.INVALID_MAC)  # not a status code name (an attribute of the enum class)
    ok_code = refused("OK", pb.BAD_ARGUMENT)
    odd_service.answers["AuthenticateRequests"] = pb.AuthenticateRequestsResponse(
        results=[known, newer_reason, odd_code, ok_code]
    ).SerializeToString()
    results = await odd_client.authenticate_many([auth_request()] * 4)
    assert all(isinstance(r, CryptoError) for r in results)
    assert [(r.code, r.reason) for r in results] == [
        (grpc.StatusCode.NOT_FOUND, "UNKNOWN_IDENTITY"),
        (grpc.StatusCode.PERMISSION_DENIED, "ERROR_REASON_UNSPECIFIED"),
        (grpc.StatusCode.UNKNOWN, "INVALID_MAC"),
        (grpc.StatusCode.UNKNOWN, "BAD_ARGUMENT"),
    ]


async def test_a_contact_validation_that_breaks_the_contract_raises_crypto_error(
    odd_service: OddCryptoService, odd_client: CryptoClient
) -> None:
    valid = pb.ContactValidation(
        status=pb.CONTACT_VALID, country_code=0x21, id_a=b"\x01" * 5, hello_verdicts=b"\x01"
    )

    def answer(*results: pb.ContactValidation) -> None:
        odd_service.answers["ValidateContacts"] = pb.ValidateContactsResponse(
            results=results
        ).SerializeToString()

    answer(valid)  # one result for two contacts (callers pair results with contacts by position)
    await expect_malformed(odd_client.validate_contacts([contact(), contact()]))
    for status in (pb.CONTACT_STATUS_UNSPECIFIED, 99):
        answer(valid, pb.ContactValidation(status=status))
        await expect_malformed(odd_client.validate_contacts([contact(), contact()]))
    answer(valid)
    [result] = await odd_client.validate_contacts([contact()])
    assert (result.id_a, result.country_code, list(result.valid_hellos)) == (b"\x01" * 5, 0x21, [True])


# Run with ``python -O`` (asserts removed) against the real crypto service and the odd one. Prints JSON.
OPTIMIZED_CHECK = """
import asyncio, json, sys
from robert_common.settings import load_settings
from robert_server.crypto_client import AuthRequest, Bundle, CryptoClient, CryptoError, RequestType

async def main(real, odd, a, tls_dir):
    out = {"optimize": sys.flags.optimize}
    h = bytes.fromhex
    async with CryptoClient(real, 10.0, settings=load_settings(grpc_tls_dir=tls_dir)) as c:  # mutual TLS
        out["key"] = (await c.registration_public_key()).hex()
        reg = await c.create_registration(h(a["spki"]), a["epoch"], a["bundle_days"], a["cc"])
        out["registered"] = [len(reg.id_a), len(reg.sealed_tuples) > 0]
        bundle = Bundle(a["epoch"], a["bundle_days"], a["cc"])
        auth = await c.authenticate(h(a["ebid"]), a["epoch"], a["time"], h(a["mac"]), RequestType.STATUS,
                                    bundle=bundle)
        out["auth"] = [auth.id_a.hex(), auth.epoch_id, len(auth.sealed_tuples or b"") > 0]
        good = AuthRequest(h(a["ebid"]), a["epoch"], a["time"], h(a["mac"]), RequestType.STATUS)
        bad = AuthRequest(h(a["ebid"]), a["epoch"], a["time"], bytes(32), RequestType.STATUS)
        out["many"] = [r.reason if isinstance(r, CryptoError) else r.id_a.hex()
                       for r in await c.authenticate_many([good, bad])]
        out["deleted"] = await c.delete_identity(h(a["id_a"]))
        try:
            await c.authenticate(h(a["ebid"]), a["epoch"], a["time"], h(a["mac"]), RequestType.STATUS)
        except CryptoError as e:
            out["after_delete"] = e.reason
    async with CryptoClient(odd, 10.0) as c:
        try:
            await c.registration_public_key()
        except CryptoError as e:
            out["odd"] = e.reason
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]))
"""


async def test_the_client_works_under_python_optimize(
    crypto_service: CryptoService, odd_service: OddCryptoService
) -> None:
    svc = crypto_service
    phone = await svc.register_phone()
    epoch, t = svc.epoch_now(), svc.clock.ntp_now()
    _, ebid, _ = phone.key_of(epoch)
    args = {
        "spki": Phone().public_key_spki.hex(),
        "epoch": epoch,
        "bundle_days": svc.settings.bundle_days,
        "cc": svc.settings.country_code,
        "ebid": ebid.hex(),
        "time": t,
        "mac": protocol.request_mac(phone.k_mac, protocol.SALT_STATUS, ebid, epoch, t).hex(),
        "id_a": phone.id_a.hex(),
    }
    odd_service.answers["GetRegistrationPublicKey"] = GARBAGE
    # Asynchronous: both servers run on this test's event loop while the child calls them.
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-O",
        "-c",
        OPTIMIZED_CHECK,
        svc.address,
        odd_service.address,
        json.dumps(args),
        str(svc.settings.grpc_tls_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()[-2000:]
    out = json.loads(stdout)
    assert out == {
        "optimize": 1,
        "key": svc.keystore.registration_public_key().hex(),
        "registered": [5, True],
        "auth": [phone.id_a.hex(), epoch, True],
        "many": [phone.id_a.hex(), "INVALID_MAC"],
        "deleted": True,
        "after_delete": "UNKNOWN_IDENTITY",
        "odd": MALFORMED_ANSWER,
    }


async def test_a_list_of_addresses_spreads_calls_over_every_service() -> None:
    services = [OddCryptoService(), OddCryptoService()]
    for i, service in enumerate(services):
        service.answers["GetRegistrationPublicKey"] = pb.GetRegistrationPublicKeyResponse(
            public_key=f"service {i}".encode()
        ).SerializeToString()
        await service.server.start()
    try:
        async with CryptoClient(",".join(s.address for s in services), 5.0) as client:
            seen = [await client.registration_public_key() for _ in range(40)]
    finally:
        for service in services:
            await service.server.stop(None)
    # round robin: once both are connected, calls alternate (the first ones may all go to the first up)
    assert set(seen) == {b"service 0", b"service 1"}
    assert seen[-2] != seen[-1]


@pytest.mark.parametrize(
    "address",
    ["localhost:50051,localhost:50052", "127.0.0.1:50051,,127.0.0.1:50052", "127.0.0.1:50051,[::1]:50052",
     "127.0.0.1,127.0.0.1:50052", "127.0.0.1:x,127.0.0.1:50052"],
)  # fmt: skip
def test_a_list_of_addresses_takes_ip_and_port_of_one_version_only(address: str) -> None:
    with pytest.raises(ValueError, match="crypto address list"):
        channel_target(address)


def test_one_address_is_the_target_as_it_is_and_a_list_is_balanced() -> None:
    assert channel_target("crypto.internal:50051") == ("crypto.internal:50051", [])
    target, options = channel_target("127.0.0.1:1,127.0.0.1:2")
    assert target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert ("grpc.lb_policy_name", "round_robin") in options
    assert channel_target("[::1]:1,[::1]:2")[0] == "ipv6:[::1]:1,[::1]:2"
