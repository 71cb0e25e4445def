"""The typed async client of the crypto service (proto/crypto.proto), for the API and the matching worker.

Every call has a deadline (``timeout``, the ROBERT_CRYPTO_TIMEOUT setting). Every gRPC failure becomes
one exception type, :class:`CryptoError`, with ``.reason`` (the ErrorReason name the service put in the
``robert-reason`` trailer, e.g. ``"UNKNOWN_IDENTITY"``, ``"NO_KEY_FOR_DAY"``, ``"INVALID_MAC"``) and
``.unavailable`` (the service is down or too slow: the caller should answer 503, not 4xx). An answer
that breaks the contract of proto/crypto.proto (not a message of the method's type, a result count that
differs from the request's, a value outside its enum...) raises CryptoError too, with reason
:data:`MALFORMED_ANSWER`: the client checks with real errors, never ``assert`` (``python -O`` drops them).

Usage::

    async with CryptoClient.from_settings(settings, "api") as crypto:  # mutual TLS, as the API
        reg = await crypto.create_registration(spki_der, epoch, settings.bundle_days, settings.country_code)
        auth = await crypto.authenticate(ebid, epoch, time4, mac, RequestType.STATUS,
                                         bundle=Bundle(epoch, settings.bundle_days, settings.country_code))
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar, cast

import grpc
import numpy as np

from robert_common.rpc import crypto_pb2 as pb
from robert_common.rpc import crypto_pb2_grpc as pb_grpc
from robert_common.settings import Settings
from robert_common.tls import open_channel

REASON_KEY = "robert-reason"
UNSPECIFIED = "ERROR_REASON_UNSPECIFIED"
# The one reason the client gives itself (with code INTERNAL): the service's answer broke the contract.
MALFORMED_ANSWER = "MALFORMED_ANSWER"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ID_A_SIZE = 5  # bytes of an id_A (PROTOCOL.md 2)
_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_STATUS_CODES = {c.name: c for c in grpc.StatusCode if c is not grpc.StatusCode.OK}


class CryptoError(Exception):
    """A failed crypto call. ``reason``: ErrorReason name (``"ERROR_REASON_UNSPECIFIED"`` if none or one
    this client does not know), or :data:`MALFORMED_ANSWER`; ``code``: the gRPC status code;
    ``unavailable``: UNAVAILABLE or DEADLINE_EXCEEDED."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(f"{code.name}: {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message

    @property
    def unavailable(self) -> bool:
        return self.code in _UNAVAILABLE


def _malformed(message: str) -> CryptoError:
    return CryptoError(grpc.StatusCode.INTERNAL, MALFORMED_ANSWER, message)


class RequestType(enum.IntEnum):
    """Which authenticated request (PROTOCOL.md 5); the value is the salt byte."""

    STATUS = pb.STATUS
    UNREGISTER = pb.UNREGISTER
    DELETE_EXPOSURE_HISTORY = pb.DELETE_EXPOSURE_HISTORY


class ContactStatus(enum.IntEnum):
    VALID = pb.CONTACT_VALID
    FOREIGN_COUNTRY = pb.CONTACT_FOREIGN_COUNTRY
    UNDECRYPTABLE = pb.CONTACT_UNDECRYPTABLE
    UNKNOWN_IDENTITY = pb.CONTACT_UNKNOWN_IDENTITY
    MALFORMED = pb.CONTACT_MALFORMED


class HelloVerdict(enum.IntEnum):
    VALID = pb.HELLO_VALID
    BAD_MAC = pb.HELLO_BAD_MAC
    TIME_MISMATCH = pb.HELLO_TIME_MISMATCH
    BAD_EPOCH = pb.HELLO_BAD_EPOCH


@dataclass(frozen=True, slots=True)
class Bundle:
    """Ask for a fresh sealed bundle (PROTOCOL.md 3) with an authenticated request."""

    first_epoch_id: int
    bundle_days: int
    country_code: int


@dataclass(frozen=True, slots=True)
class Registration:
    id_a: bytes
    sealed_tuples: bytes  # IV | AES-GCM ciphertext | tag, for the phone (b64 it into "tuples")


@dataclass(frozen=True, slots=True)
class Authentication:
    id_a: bytes
    epoch_id: int
    sealed_tuples: bytes | None  # None unless a bundle was asked for


@dataclass(frozen=True, slots=True)
class ContactToValidate:
    """One reported Contact (PROTOCOL.md 6) with its HELLOs packed as the contacts collection stores them:
    ``time_collected`` 4 bytes per HELLO (uint32 BE), ``time_from_hello`` 2 bytes (uint16 BE),
    ``macs`` 5 bytes. :meth:`from_lists` builds one from Python ints."""

    ebid: bytes
    ecc: bytes
    time_collected: bytes
    time_from_hello: bytes
    macs: bytes

    @classmethod
    def from_lists(
        cls,
        ebid: bytes,
        ecc: bytes,
        time_collected: Sequence[int],
        time_from_hello: Sequence[int],
        macs: Sequence[bytes],
    ) -> ContactToValidate:
        return cls(
            ebid=ebid,
            ecc=ecc,
            time_collected=np.asarray(time_collected, dtype=np.uint64).astype(">u4").tobytes(),
            time_from_hello=np.asarray(time_from_hello, dtype=np.uint64).astype(">u2").tobytes(),
            macs=b"".join(macs),
        )


@dataclass(frozen=True, slots=True)
class ContactResult:
    """What ValidateContacts says of one contact (PROTOCOL.md 8 steps 1 to 4).

    ``verdicts``: one HelloVerdict value per byte, one per HELLO in the request's order (VALID only).
    """

    status: ContactStatus
    country_code: int
    id_a: bytes | None
    epoch_id: int | None
    verdicts: bytes

    @property
    def valid_hellos(self) -> np.ndarray:
        """Boolean mask of the HELLOs to score."""
        return np.frombuffer(self.verdicts, dtype=np.uint8) == HelloVerdict.VALID


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """One authenticated request to check (PROTOCOL.md 5), for :meth:`CryptoClient.authenticate_many`.
    ``time``: the 4 bytes the phone sent (or the uint32)."""

    ebid: bytes
    epoch_id: int
    time: bytes | int
    mac: bytes
    request_type: RequestType | int
    bundle: Bundle | None = None


def _auth_message(r: AuthRequest) -> pb.AuthenticateRequestRequest:
    time = r.time
    if isinstance(time, int):
        time = (time & 0xFFFFFFFF).to_bytes(4, "big")
    request = pb.AuthenticateRequestRequest(
        ebid=r.ebid,
        epoch_id=r.epoch_id,
        time=time,
        mac=r.mac,
        request_type=cast(pb.RequestType, int(r.request_type)),  # any int: the service checks it
    )
    if r.bundle is not None:
        b = r.bundle
        request.bundle.CopyFrom(
            pb.BundleRequest(
                first_epoch_id=b.first_epoch_id, bundle_days=b.bundle_days, country_code=b.country_code
            )
        )
    return request


def _authentication(response: pb.AuthenticateRequestResponse, asked: AuthRequest) -> Authentication:
    if asked.bundle is not None and not response.sealed_tuples:
        raise _malformed("a bundle was asked for and none came")
    return Authentication(
        id_a=response.id_a,
        epoch_id=response.epoch_id,
        sealed_tuples=response.sealed_tuples if asked.bundle is not None else None,
    )


def _refusal(error: pb.AuthenticateRequestError) -> CryptoError:
    """One request of a batch refused: its gRPC code (by name) and reason, as a unary call would raise."""
    code = _STATUS_CODES.get(error.code, grpc.StatusCode.UNKNOWN)
    reason = pb.ErrorReason.Name(error.reason) if error.reason in pb.ErrorReason.values() else UNSPECIFIED
    return CryptoError(code, reason, "request refused")


def _contact_result(r: pb.ContactValidation) -> ContactResult:
    try:
        status = ContactStatus(r.status)
    except ValueError:
        raise _malformed(f"contact status {r.status} is not one of ContactStatus") from None
    valid = status == ContactStatus.VALID
    return ContactResult(
        status=status,
        country_code=r.country_code,
        id_a=r.id_a if valid else None,
        epoch_id=r.epoch_id if valid else None,
        verdicts=r.hello_verdicts,
    )


def _error(e: grpc.aio.AioRpcError) -> CryptoError:
    reason = UNSPECIFIED
    for key, value in e.trailing_metadata() or ():
        if key == REASON_KEY:
            reason = str(value)
    return CryptoError(e.code(), reason, e.details() or "")


_Req = TypeVar("_Req", contravariant=True)
_Resp = TypeVar("_Resp", covariant=True)
_R = TypeVar("_R")


class _Rpc(Protocol[_Req, _Resp]):
    """One unary method of the service. grpc.aio answers None for an answer it cannot deserialize into
    the method's response type (it logs the parse error and does not raise)."""

    def __call__(self, request: _Req, *, timeout: float | None = None) -> Awaitable[_Resp | None]: ...


@dataclass(frozen=True, slots=True)
class _Stub:
    """The methods of proto/crypto.proto with their message types (the generated stub is untyped)."""

    create_registration: _Rpc[pb.CreateRegistrationRequest, pb.CreateRegistrationResponse]
    create_registrations: _Rpc[pb.CreateRegistrationsRequest, pb.CreateRegistrationsResponse]
    authenticate_request: _Rpc[pb.AuthenticateRequestRequest, pb.AuthenticateRequestResponse]
    authenticate_requests: _Rpc[pb.AuthenticateRequestsRequest, pb.AuthenticateRequestsResponse]
    delete_identity: _Rpc[pb.DeleteIdentityRequest, pb.DeleteIdentityResponse]
    list_identities: _Rpc[pb.ListIdentitiesRequest, pb.ListIdentitiesResponse]
    validate_contacts: _Rpc[pb.ValidateContactsRequest, pb.ValidateContactsResponse]
    get_registration_public_key: _Rpc[pb.GetRegistrationPublicKeyRequest, pb.GetRegistrationPublicKeyResponse]

    @classmethod
    def of(cls, channel: grpc.aio.Channel) -> _Stub:
        stub = pb_grpc.CryptoServiceStub(channel)
        return cls(
            create_registration=stub.CreateRegistration,
            create_registrations=stub.CreateRegistrations,
            authenticate_request=stub.AuthenticateRequest,
            authenticate_requests=stub.AuthenticateRequests,
            delete_identity=stub.DeleteIdentity,
            list_identities=stub.ListIdentities,
            validate_contacts=stub.ValidateContacts,
            get_registration_public_key=stub.GetRegistrationPublicKey,
        )


async def _answer(call: Awaitable[_R | None]) -> _R:
    """The answer of one call, or CryptoError (the service's error, or MALFORMED_ANSWER)."""
    try:
        response = await call
    except grpc.aio.AioRpcError as e:
        raise _error(e) from None
    if response is None:
        raise _malformed("the answer is not a message of the method's response type")
    return response


def channel_target(address: str) -> tuple[str, list[tuple[str, str | int]]]:
    """The gRPC target of ``address`` and the channel options it needs. One ``host:port``: as it is.
    Several, comma-separated (several crypto processes, ROBERT_CRYPTO_PROCESSES): IP literals only
    (``127.0.0.1:50051,127.0.0.1:50052``, or ``[::1]:50051,...``), one subchannel each and calls spread
    over them in turn (client-side round robin); ValueError otherwise."""
    parts = [a.strip() for a in address.split(",")]
    if len(parts) == 1:
        return address, []
    if not all(parts):
        raise ValueError(f"empty address in the crypto address list {address!r}")
    try:
        hosts = [ipaddress.ip_address(p.rsplit(":", 1)[0].strip("[]")) for p in parts]
        ports = [int(p.rsplit(":", 1)[1]) for p in parts if ":" in p]
    except ValueError:
        raise ValueError(f"a crypto address list takes IP:port only: {address!r}") from None
    if len(ports) != len(parts) or len({h.version for h in hosts}) != 1:
        raise ValueError(f"a crypto address list takes IP:port, all IPv4 or all IPv6: {address!r}")
    return f"ipv{hosts[0].version}:{','.join(parts)}", [("grpc.lb_policy_name", "round_robin")]


class CryptoClient:
    """Async client of the crypto service: one channel shared by every call. Close it, or ``async with``.
    ``address``: one ``host:port``, or several IP:port comma-separated (see :func:`channel_target`)."""

    def __init__(
        self, address: str, timeout: float = 2.0, *, settings: Settings | None = None, identity: str = "api"
    ) -> None:
        """With ``settings``: mutual TLS as ``identity`` (its certificate, see robert_common.tls), or
        plaintext where ROBERT_GRPC_PLAINTEXT allows it. Without: a plaintext channel (development)."""
        self.address = address
        self.timeout = timeout
        target, lb_options = channel_target(address)
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # A crypto process that (re)starts is taken back within about 2 s, not after gRPC's default
            # back-off of up to 2 minutes during which round robin sends everything to the others.
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
            *lb_options,
        ]
        if settings is not None:
            self._channel = open_channel(settings, identity, address, "crypto", options, target=target)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = _Stub.of(self._channel)

    @classmethod
    def from_settings(cls, settings: Settings, identity: str = "api") -> CryptoClient:
        """The client of component ``identity`` (``api``, ``matcher``, ``seed``) at ROBERT_CRYPTO_ADDRESS."""
        return cls(settings.crypto_address, settings.crypto_timeout, settings=settings, identity=identity)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> CryptoClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def create_registration(
        self, client_public_key: bytes, first_epoch_id: int, bundle_days: int, country_code: int
    ) -> Registration:
        """/register (PROTOCOL.md 2, 3): ``client_public_key`` is the SPKI DER (base64-decoded)."""
        request = pb.CreateRegistrationRequest(
            client_public_key=client_public_key,
            first_epoch_id=first_epoch_id,
            bundle_days=bundle_days,
            country_code=country_code,
        )
        response = await _answer(self._stub.create_registration(request, timeout=self.timeout))
        return Registration(id_a=response.id_a, sealed_tuples=response.sealed_tuples)

    async def create_registrations(self, count: int, *, deadline: float | None = None) -> list[bytes]:
        """``robert seed``: ``count`` (at most 10 000) new sealed identities with random keys; their id_A."""
        request = pb.CreateRegistrationsRequest(count=count)
        response = await _answer(self._stub.create_registrations(request, timeout=deadline or self.timeout))
        ids = response.id_as
        return [ids[k : k + ID_A_SIZE] for k in range(0, len(ids), ID_A_SIZE)]

    async def authenticate(
        self,
        ebid: bytes,
        epoch_id: int,
        time: bytes | int,
        mac: bytes,
        request_type: RequestType | int,
        *,
        bundle: Bundle | None = None,
    ) -> Authentication:
        """Check an authenticated request (PROTOCOL.md 5). ``time``: the 4 bytes the phone sent (or the
        uint32). A refusal raises CryptoError with its reason; the phone API answers (its REASON_STATUS,
        robert_server/api/auth.py, following the deployed server): UNKNOWN_IDENTITY (no identity for the
        decrypted id_A) and NO_KEY_FOR_DAY (no K_S for that epoch's day) 430; INVALID_MAC,
        EPOCH_MISMATCH and BAD_ARGUMENT 400."""
        one = AuthRequest(ebid, epoch_id, time, mac, request_type, bundle)
        response = await _answer(self._stub.authenticate_request(_auth_message(one), timeout=self.timeout))
        return _authentication(response, one)

    async def authenticate_many(self, requests: Sequence[AuthRequest]) -> list[Authentication | CryptoError]:
        """:meth:`authenticate` for a batch in one call: one result per request, same order, each an
        Authentication or the CryptoError that request alone would have raised. A failure of the call
        itself (service down, deadline) raises CryptoError for the whole batch."""
        if not requests:
            return []
        request = pb.AuthenticateRequestsRequest(requests=[_auth_message(r) for r in requests])
        response = await _answer(self._stub.authenticate_requests(request, timeout=self.timeout))
        if len(response.results) != len(requests):
            raise _malformed(f"{len(response.results)} results for {len(requests)} requests")
        out: list[Authentication | CryptoError] = []
        for one, result in zip(requests, response.results, strict=True):
            outcome = result.WhichOneof("outcome")
            if outcome == "ok":
                out.append(_authentication(result.ok, one))
            elif outcome == "error":
                out.append(_refusal(result.error))
            else:
                raise _malformed("a result is neither ok nor error")
        return out

    async def delete_identity(self, id_a: bytes) -> bool:
        """Forget a phone's keys; False when there was no such identity."""
        response = await _answer(
            self._stub.delete_identity(pb.DeleteIdentityRequest(id_a=id_a), timeout=self.timeout)
        )
        return response.deleted

    async def list_identities(self, after: bytes, created_before: float, limit: int) -> list[bytes]:
        """id_A of identities created before ``created_before`` (Unix s), after ``after``, in order."""
        request = pb.ListIdentitiesRequest(after_id_a=after, created_before=int(created_before), limit=limit)
        response = await _answer(self._stub.list_identities(request, timeout=self.timeout))
        return [bytes(i) for i in response.id_as]

    async def validate_contacts(
        self,
        contacts: Sequence[ContactToValidate],
        *,
        server_country_code: int = 0,
        hello_tolerance: int = 0,
        deadline: float | None = None,
    ) -> list[ContactResult]:
        """PROTOCOL.md section 8 steps 1 to 4 for a batch; one result per contact, same order.

        0 for ``server_country_code`` / ``hello_tolerance`` means the service's own settings. Large
        batches may need a longer ``deadline`` (seconds) than the client's default ``timeout``.
        """
        request = pb.ValidateContactsRequest(
            contacts=[
                pb.Contact(
                    ebid=c.ebid,
                    ecc=c.ecc,
                    time_collected=c.time_collected,
                    time_from_hello=c.time_from_hello,
                    macs=c.macs,
                )
                for c in contacts
            ],
            server_country_code=server_country_code,
            hello_tolerance=hello_tolerance,
        )
        response = await _answer(self._stub.validate_contacts(request, timeout=deadline or self.timeout))
        if len(response.results) != len(contacts):
            raise _malformed(f"{len(response.results)} results for {len(contacts)} contacts")
        return [_contact_result(r) for r in response.results]

    async def registration_public_key(self) -> bytes:
        """The registration public key (SPKI DER) apps embed."""
        request = pb.GetRegistrationPublicKeyRequest()
        response = await _answer(self._stub.get_registration_public_key(request, timeout=self.timeout))
        return response.public_key
