"""The gRPC crypto service (proto/crypto.proto, package robert.crypto.v1), served by ``robert crypto``.

The only process that holds K_S, K_G, the KEK and the registration private key (ARCHITECTURE.md).
Errors are gRPC status codes with the ErrorReason name in the trailing metadata ``robert-reason``:
bad input INVALID_ARGUMENT, unknown identity NOT_FOUND, no day key FAILED_PRECONDITION, bad MAC or
epoch mismatch PERMISSION_DENIED. Messages are short and never quote keys, EBIDs, MACs or id_A.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter, Histogram
from pymongo.asynchronous.database import AsyncDatabase

from crypto_backend import protocol, validation
from crypto_backend.identities import Identity, IdentityError, IdentityStore
from crypto_backend.keystore import KeyStore, days_ahead, utc_today
from robert_common.clock import EPOCHS_PER_DAY, Clock, ServiceTime
from robert_common.rpc import crypto_pb2 as pb
from robert_common.rpc import crypto_pb2_grpc as pb_grpc
from robert_common.settings import Settings
from robert_common.tls import MethodRights, secure_server

log = logging.getLogger(__name__)

REASON_KEY = "robert-reason"
MAX_BUNDLE_DAYS = 30
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a ValidateContacts batch of thousands of contacts
KEYSTORE_CHECK_SECONDS = 10.0
MAX_AUTH_BATCH = 1000  # requests in one AuthenticateRequests call
LIST_PAGE_MAX = 1000  # id_A per ListIdentities page
MAX_SEED_BATCH = 10_000  # identities in one CreateRegistrations call

RPC_CALLS = Counter("robert_crypto_rpc_total", "Crypto service calls", ["method", "code"])
RPC_SECONDS = Histogram(
    "robert_crypto_rpc_seconds",
    "Crypto service call duration",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
HELLOS = Counter("robert_crypto_hellos_total", "HELLOs validated", ["verdict"])

SERVICE = "robert.crypto.v1.CryptoService"
# Who may call what (certificate identity -> methods); anything else is PERMISSION_DENIED. The public
# key is public: any certificate of the plane may read it.
RIGHTS = MethodRights(
    SERVICE,
    {
        "api": ("CreateRegistration", "AuthenticateRequest", "AuthenticateRequests", "DeleteIdentity"),
        # the daily job also deletes identities left without a registration (matching/orphans.py)
        "matcher": ("ValidateContacts", "ListIdentities", "DeleteIdentity"),
        "seed": ("CreateRegistrations",),
        "*": ("GetRegistrationPublicKey",),
    },
)

_REQUEST_SALTS = {
    pb.STATUS: protocol.SALT_STATUS,
    pb.UNREGISTER: protocol.SALT_UNREGISTER,
    pb.DELETE_EXPOSURE_HISTORY: protocol.SALT_DELETE_HISTORY,
}


class RpcFailure(Exception):
    """Ends a call with a status code and an ErrorReason (caught by :func:`_rpc`)."""

    def __init__(self, code: grpc.StatusCode, reason: pb.ErrorReason, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def bad_argument(message: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, pb.BAD_ARGUMENT, message)


def no_day_key() -> RpcFailure:
    return RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, pb.NO_KEY_FOR_DAY, "no server key for that day")


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def _rpc(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Metrics, and errors mapped to status codes: RpcFailure as told, anything else INTERNAL."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            try:
                return await method(self, request, context)
            except protocol.NoDayKeyError:
                raise no_day_key() from None
            except protocol.ProtocolError:
                raise bad_argument("invalid argument") from None
        except RpcFailure as failure:
            code = failure.code
            reason = pb.ErrorReason.Name(failure.reason)
            await context.abort(failure.code, failure.message, trailing_metadata=((REASON_KEY, reason),))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as e:  # never a stack trace or a value in the answer or the log
            code = grpc.StatusCode.INTERNAL
            log.error("crypto call failed", extra={"method": name, "error": type(e).__name__})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            RPC_CALLS.labels(name, code.name).inc()
            RPC_SECONDS.labels(name).observe(time.perf_counter() - started)
        raise AssertionError("unreachable")  # abort() always raises

    return wrapper


def _check_len(value: bytes, size: int, name: str) -> bytes:
    if len(value) != size:
        raise bad_argument(f"{name} must be {size} bytes")
    return value


class CryptoServicer(pb_grpc.CryptoServiceServicer):
    """The five calls of the crypto service, over a key store and the sealed identities."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        keystore: KeyStore,
        crypto_db: AsyncDatabase,
        *,
        auto_rotate: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.time = ServiceTime(settings.time_start_date, clock)
        self.keystore = keystore
        self.identities = IdentityStore(crypto_db, keystore)
        self.auto_rotate = auto_rotate
        self._checked_at = time.monotonic()

    # --- keys ----------------------------------------------------------------------------------

    def refresh_keys(self, *, force: bool = False) -> None:
        """Pick up ``robert keys rotate`` (file or token changed) and, with auto-rotation, add missing
        day keys and purge expired ones. Checked every KEYSTORE_CHECK_SECONDS, and whenever a day key
        is missing (``force``): a stat of the file, or one object listing of the token (under 1 ms)."""
        store = self.keystore
        now = time.monotonic()
        if not force and now - self._checked_at < KEYSTORE_CHECK_SECONDS:
            return
        self._checked_at = now
        try:
            if store.changed():
                store.reload()
                log.info("key store reloaded", extra={"days": len(store.days())})
            today, ahead = utc_today(self.clock), days_ahead(self.settings)
            keep = self.settings.key_retention_days
            if self.auto_rotate and store.needs_rotation(today, ahead, keep):
                result = store.rotate(today, ahead, keep)
                log.info("day keys rotated", extra={"added": len(result.added), "purged": len(result.purged)})
        except Exception as e:  # keep serving with the keys in memory
            log.error("key store refresh failed", extra={"error": type(e).__name__})

    def day_key(self, day_index: int) -> bytes | None:
        """K_S of a day counted from timeStart (epoch_id // 96), or None."""
        if day_index < 0:
            return None
        day = self.settings.time_start_date + dt.timedelta(days=day_index)
        k_s = self.keystore.day_key(day)
        if k_s is None:
            self.refresh_keys(force=True)
            k_s = self.keystore.day_key(day)
        return k_s

    def _bundle(self, k_tuples: bytes, id_a: bytes, first_epoch: int, bundle_days: int, cc: int) -> bytes:
        """A fresh sealed bundle (PROTOCOL.md 3)."""
        # day_key answers None for a missing day: seal_bundle then raises NoDayKeyError.
        day_keys: Any = self.day_key
        k_g = self.keystore.federation_key()
        return protocol.seal_bundle(k_tuples, day_keys, k_g, id_a, first_epoch, bundle_days, cc)

    def _check_bundle_args(self, first_epoch: int, bundle_days: int, cc: int) -> None:
        if not 1 <= bundle_days <= MAX_BUNDLE_DAYS:
            raise bad_argument(f"bundle_days must be between 1 and {MAX_BUNDLE_DAYS}")
        if cc > 255:
            raise bad_argument("country_code must be one byte")
        last = first_epoch + protocol.bundle_epochs(first_epoch, bundle_days) - 1
        for day in range(first_epoch // EPOCHS_PER_DAY, last // EPOCHS_PER_DAY + 1):
            if self.day_key(day) is None:
                raise no_day_key()

    # --- calls ---------------------------------------------------------------------------------

    @_rpc
    async def CreateRegistration(  # noqa: N802 - gRPC method name
        self, request: pb.CreateRegistrationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateRegistrationResponse:
        """/register: ECDH with the phone, a new sealed identity, its first bundle (PROTOCOL.md 2, 3)."""
        self.refresh_keys()
        self._check_bundle_args(request.first_epoch_id, request.bundle_days, request.country_code)
        try:
            k_mac, k_tuples = self.keystore.derive_client_keys(request.client_public_key)
        except ValueError:
            raise bad_argument("client public key is not a valid P-256 SubjectPublicKeyInfo") from None
        id_a = await self.identities.create(k_mac, k_tuples, self.clock.utcnow())
        try:
            sealed = self._bundle(
                k_tuples, id_a, request.first_epoch_id, request.bundle_days, request.country_code
            )
        except BaseException:
            await self.identities.delete(id_a)  # nothing half-written
            raise
        return pb.CreateRegistrationResponse(id_a=id_a, sealed_tuples=sealed)

    @_rpc
    async def CreateRegistrations(  # noqa: N802
        self, request: pb.CreateRegistrationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateRegistrationsResponse:
        """``robert seed``: ``count`` new sealed identities with random keys, one insert for all."""
        if not 1 <= request.count <= MAX_SEED_BATCH:
            raise bad_argument(f"count must be 1 to {MAX_SEED_BATCH}")
        self.refresh_keys()
        id_as = await self.identities.create_many(request.count, self.clock.utcnow())
        return pb.CreateRegistrationsResponse(id_as=b"".join(id_as))

    @_rpc
    async def AuthenticateRequest(  # noqa: N802
        self, request: pb.AuthenticateRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateRequestResponse:
        """/status, /unregister, /deleteExposureHistory: EBID, identity, request MAC (PROTOCOL.md 5)."""
        self.refresh_keys()
        id_a, salt = self._open_request(request)
        identity = await self.identities.get(id_a)
        return self._finish_request(request, id_a, salt, identity)

    @_rpc
    async def AuthenticateRequests(  # noqa: N802
        self, request: pb.AuthenticateRequestsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateRequestsResponse:
        """AuthenticateRequest for a batch: one identity read for all, one result (or error) per request."""
        if len(request.requests) > MAX_AUTH_BATCH:
            raise bad_argument(f"at most {MAX_AUTH_BATCH} requests per call")
        self.refresh_keys()
        results: dict[int, pb.AuthenticateRequestResult] = {}  # by index in the request
        opened: list[tuple[int, bytes, int]] = []  # (index, id_A, salt) of the requests still valid
        bundles_checked: set[tuple[int, int, int]] = set()  # a batch usually asks for one kind of bundle
        for k, one in enumerate(request.requests):
            try:
                id_a, salt = _protocol_failures(self._open_request, one, bundles_checked)
            except RpcFailure as failure:
                results[k] = _result_error(failure)
                continue
            opened.append((k, id_a, salt))
        identities = await self.identities.get_many(id_a for _, id_a, _ in opened) if opened else {}
        for k, id_a, salt in opened:
            try:
                response = _protocol_failures(
                    self._finish_request, request.requests[k], id_a, salt, identities.get(id_a)
                )
            except RpcFailure as failure:
                results[k] = _result_error(failure)
                continue
            results[k] = pb.AuthenticateRequestResult(ok=response)
        return pb.AuthenticateRequestsResponse(results=[results[k] for k in range(len(request.requests))])

    def _open_request(
        self, request: pb.AuthenticateRequestRequest, bundles_checked: set[tuple[int, int, int]] | None = None
    ) -> tuple[bytes, int]:
        """Check the arguments and decrypt the EBID (PROTOCOL.md 5): (id_A, salt) or RpcFailure.
        ``bundles_checked``: bundle arguments already found valid in this call (checked once)."""
        ebid = _check_len(request.ebid, protocol.EBID_SIZE, "ebid")
        _check_len(request.time, protocol.REQUEST_TIME_SIZE, "time")
        _check_len(request.mac, protocol.REQUEST_MAC_SIZE, "mac")
        salt = _REQUEST_SALTS.get(request.request_type)
        if salt is None:
            raise bad_argument("unknown request_type")
        if request.HasField("bundle"):
            b = request.bundle
            args = (b.first_epoch_id, b.bundle_days, b.country_code)
            if bundles_checked is None or args not in bundles_checked:
                self._check_bundle_args(*args)
                if bundles_checked is not None:
                    bundles_checked.add(args)
        k_s = self.day_key(request.epoch_id // EPOCHS_PER_DAY)
        if k_s is None:
            raise no_day_key()
        epoch_24, id_a = protocol.decrypt_ebid(k_s, ebid)
        if epoch_24 != request.epoch_id & 0xFFFFFF:
            raise RpcFailure(
                grpc.StatusCode.PERMISSION_DENIED, pb.EPOCH_MISMATCH, "EBID does not match epoch_id"
            )
        return id_a, salt

    def _finish_request(
        self, request: pb.AuthenticateRequestRequest, id_a: bytes, salt: int, identity: Identity | None
    ) -> pb.AuthenticateRequestResponse:
        """The identity found for the decrypted id_A: check the MAC, seal the bundle if asked."""
        if identity is None:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, pb.UNKNOWN_IDENTITY, "unknown identity")
        if not protocol.verify_request_mac(
            identity.k_mac, salt, request.ebid, request.epoch_id, request.time, request.mac
        ):
            raise RpcFailure(grpc.StatusCode.PERMISSION_DENIED, pb.INVALID_MAC, "invalid MAC")
        sealed = b""
        if request.HasField("bundle"):
            b = request.bundle
            sealed = self._bundle(identity.k_tuples, id_a, b.first_epoch_id, b.bundle_days, b.country_code)
        return pb.AuthenticateRequestResponse(id_a=id_a, epoch_id=request.epoch_id, sealed_tuples=sealed)

    @_rpc
    async def DeleteIdentity(  # noqa: N802
        self, request: pb.DeleteIdentityRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteIdentityResponse:
        """/unregister: forget a phone's keys."""
        id_a = _check_len(request.id_a, protocol.ID_A_SIZE, "id_a")
        return pb.DeleteIdentityResponse(deleted=await self.identities.delete(id_a))

    @_rpc
    async def ListIdentities(  # noqa: N802
        self, request: pb.ListIdentitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIdentitiesResponse:
        """Reconciliation of identities left without a registration: id_A only, a page at a time."""
        if request.after_id_a:
            _check_len(request.after_id_a, protocol.ID_A_SIZE, "after_id_a")
        limit = min(request.limit or LIST_PAGE_MAX, LIST_PAGE_MAX)
        before = dt.datetime.fromtimestamp(request.created_before, tz=dt.UTC)
        id_as = await self.identities.list_created_before(request.after_id_a, before, limit)
        return pb.ListIdentitiesResponse(id_as=id_as)

    @_rpc
    async def ValidateContacts(  # noqa: N802
        self, request: pb.ValidateContactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateContactsResponse:
        """Matching: PROTOCOL.md section 8 steps 1 to 4 for a batch (see crypto_backend.validation)."""
        self.refresh_keys()
        cc = request.server_country_code or self.settings.country_code
        if cc > 255:
            raise bad_argument("server_country_code must be one byte")
        tolerance = request.hello_tolerance or self.settings.hello_tolerance
        contacts = list(request.contacts)
        decrypted = await asyncio.to_thread(
            validation.decrypt_contacts,
            contacts,
            k_g=self.keystore.federation_key(),
            day_key=self.day_key,
            time_start_ntp=self.time.time_start,
            server_cc=cc,
            tolerance=tolerance,
        )
        identities = await self.identities.get_many(decrypted.id_as())
        k_macs = {id_a: identity.k_mac for id_a, identity in identities.items()}
        del identities
        results = await asyncio.to_thread(validation.check_hellos, decrypted, contacts, k_macs)
        _count_verdicts(results)
        return pb.ValidateContactsResponse(results=results)

    @_rpc
    async def GetRegistrationPublicKey(  # noqa: N802
        self, request: pb.GetRegistrationPublicKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRegistrationPublicKeyResponse:
        """The registration public key apps embed (SPKI DER)."""
        return pb.GetRegistrationPublicKeyResponse(public_key=self.keystore.registration_public_key())


T = TypeVar("T")


def _protocol_failures(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn``, turning protocol errors into the RpcFailure :func:`_rpc` would have answered."""
    try:
        return fn(*args)
    except protocol.NoDayKeyError:
        raise no_day_key() from None
    except protocol.ProtocolError:
        raise bad_argument("invalid argument") from None


def _result_error(failure: RpcFailure) -> pb.AuthenticateRequestResult:
    error = pb.AuthenticateRequestError(code=failure.code.name, reason=failure.reason)
    return pb.AuthenticateRequestResult(error=error)


def _count_verdicts(results: list[pb.ContactValidation]) -> None:
    verdicts = b"".join(r.hello_verdicts for r in results)  # one byte per HELLO: count in C, not per contact
    for v in (pb.HELLO_VALID, pb.HELLO_BAD_MAC, pb.HELLO_TIME_MISMATCH, pb.HELLO_BAD_EPOCH):
        count = verdicts.count(v)
        if count:
            HELLOS.labels(pb.HelloVerdict.Name(v)).inc(count)


class CryptoServer:
    """A grpc.aio crypto server that can be started and stopped in-process (tests, ``robert crypto``).

    ``listen`` defaults to ``settings.crypto_listen``; a port of 0 picks a free one, and
    :attr:`address` tells which after :meth:`start`.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        keystore: KeyStore,
        crypto_db: AsyncDatabase,
        *,
        listen: str | None = None,
        auto_rotate: bool = False,
    ) -> None:
        self.servicer = CryptoServicer(settings, clock, keystore, crypto_db, auto_rotate=auto_rotate)
        self.settings = settings
        self.listen = listen or settings.crypto_listen
        self.address = ""
        self._server: grpc.aio.Server | None = None

    async def start(self) -> str:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Never share the port: a stray second ``robert crypto`` must fail to start, loudly,
            # not silently take half the calls (scale out on distinct ports or machines).
            ("grpc.so_reuseport", 0),
        ]
        # mutual TLS and RIGHTS (robert_common.tls); plaintext only on loopback, when asked for
        server, port = secure_server(self.settings, "crypto", self.listen, RIGHTS, options)
        pb_grpc.add_CryptoServiceServicer_to_server(self.servicer, server)
        host = self.listen.rsplit(":", 1)[0]
        await server.start()
        self._server = server
        self.address = f"{host}:{port}"
        return self.address

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(settings: Settings, clock: Clock) -> None:
    """``robert crypto``: open the key store and the crypto database, serve until cancelled."""
    from crypto_backend.keystore import is_dev_keystore, open_keystore
    from robert_common import heap
    from robert_common.mongo import mongo_client, require_uri
    from robert_common.signals import stop_event

    heap.watch_pauses()
    keystore = open_keystore(settings)
    auto_rotate = settings.keystore_auto_rotate or is_dev_keystore(settings)
    if auto_rotate:
        today, ahead = utc_today(clock), days_ahead(settings)
        if keystore.needs_rotation(today, ahead, settings.key_retention_days):
            keystore.rotate(today, ahead, settings.key_retention_days)
    if settings.crypto_metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.crypto_metrics_port, addr=settings.metrics_host)
    client = mongo_client(require_uri(settings, "robert crypto"))
    server = CryptoServer(
        settings, clock, keystore, client[settings.crypto_mongodb_database], auto_rotate=auto_rotate
    )
    stop = stop_event()
    try:
        address = await server.start()
        log.info("crypto service listening", extra={"address": address, "days": len(keystore.days())})
        heap.settle()
        await stop.wait()
        log.info("crypto service stopping")
    finally:
        await server.stop(2.0)
        await client.close()
        keystore.close()


__all__ = ["CryptoServer", "CryptoServicer", "IdentityError", "RpcFailure", "serve"]
