"""WebAuthn ceremonies of the fallback login (library ``webauthn``).

Why a passkey: it is phishing-resistant like a CPS card, needs no provider, no shared secret to leak
from our database (only public keys are stored), and professionals already hold an authenticator
(phone, laptop, security key). It is enrolled during a provider login, so it inherits the provider's
identity proof; the profession is checked again at each use against the current settings.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
from pymongo.asynchronous.database import AsyncDatabase
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from . import credentials

RP_NAME = "ProStopCovid"


class PasskeyError(Exception):
    """A refused ceremony; the message is safe to show and log."""


@dataclass(frozen=True)
class FallbackLogin:
    pro: str
    profession: str
    name: str


def registration_options(rp_id: str, pro: str, name: str) -> tuple[dict[str, Any], str]:
    """(options for navigator.credentials.create, challenge to keep in the session)."""
    selection = AuthenticatorSelectionCriteria(
        resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.REQUIRED
    )
    options = generate_registration_options(
        rp_id=rp_id, rp_name=RP_NAME, user_id=bytes.fromhex(pro)[:32], user_name=name or "professionnel",
        authenticator_selection=selection,
    )  # fmt: skip
    return orjson.loads(options_to_json(options)), bytes_to_base64url(options.challenge)


async def register(
    db: AsyncDatabase, rp_id: str, origin: str, challenge: str, credential: Any, pro: str, profession: str,
    name: str, now: dt.datetime,
) -> None:  # fmt: skip
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=base64url_to_bytes(challenge), expected_rp_id=rp_id,
            expected_origin=origin, require_user_verification=True,
        )  # fmt: skip
    except (InvalidRegistrationResponse, ValueError, KeyError, TypeError) as e:
        raise PasskeyError(f"registration refused: {type(e).__name__}") from None
    await credentials.add(
        db, verified.credential_id, pro, profession, name, verified.credential_public_key,
        verified.sign_count, now,
    )  # fmt: skip


def authentication_options(rp_id: str) -> tuple[dict[str, Any], str]:
    """Options for navigator.credentials.get: a discoverable credential, no user named beforehand."""
    options = generate_authentication_options(
        rp_id=rp_id, user_verification=UserVerificationRequirement.REQUIRED
    )
    return orjson.loads(options_to_json(options)), bytes_to_base64url(options.challenge)


async def authenticate(
    db: AsyncDatabase, rp_id: str, origin: str, challenge: str, credential: Any, now: dt.datetime
) -> FallbackLogin:
    try:
        credential_id = base64url_to_bytes(credential["rawId"])
    except (KeyError, TypeError, ValueError):
        raise PasskeyError("malformed credential") from None
    stored = await credentials.get(db, credential_id)
    if stored is None:
        raise PasskeyError("unknown passkey")
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=base64url_to_bytes(challenge), expected_rp_id=rp_id,
            expected_origin=origin, credential_public_key=stored["public_key"],
            credential_current_sign_count=stored["sign_count"], require_user_verification=True,
        )  # fmt: skip
    except (InvalidAuthenticationResponse, ValueError, KeyError, TypeError) as e:
        raise PasskeyError(f"authentication refused: {type(e).__name__}") from None
    if not await credentials.used(db, credential_id, stored["sign_count"], verified.new_sign_count, now):
        raise PasskeyError("passkey used concurrently")
    return FallbackLogin(stored["pro"], stored["profession"], stored["name"])
