"""OpenID Connect relying party of the portal, shaped by what Pro Santé Connect expects.

Authorization code flow with PKCE (S256), ``state`` and ``nonce``; the provider's discovery document;
the id_token's signature checked against the provider's JWKS (an unknown ``kid`` refetches the JWKS,
at most once per ``JWKS_REFETCH_SECONDS``: key rotation without letting forged tokens hammer the
provider); ``iss``, ``aud``, ``exp``, ``nonce`` and ``acr`` checked; userinfo (JSON, or a signed JWT as
Pro Santé Connect sends it) read for the professional's identifier and professions.

Every network call has a short timeout and goes through the circuit breaker: ProviderUnavailable means
"tell the user and offer the fallback login", LoginError means "this login attempt is refused".
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from robert_common.clock import Clock

from .breaker import CircuitBreaker

JWKS_REFETCH_SECONDS = 10.0
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_LEEWAY = 60  # seconds of clock difference tolerated on exp / iat
ALGORITHMS = ["RS256", "PS256", "ES256"]


class ProviderUnavailable(Exception):
    """The provider did not answer in time, answered 5xx, or the breaker is open."""


class LoginError(Exception):
    """A login attempt refused (bad state, bad token, provider error); the message is safe to log."""


@dataclass(frozen=True)
class LoginStart:
    url: str
    state: str
    nonce: str
    verifier: str


@dataclass(frozen=True)
class Professional:
    identifier: str  # never logged, never stored in clear
    professions: frozenset[str]
    name: str
    id_token: str  # the provider's id_token, kept server-side as the logout hint


def load_client_key(pem: bytes) -> Any:
    """The private key of private_key_jwt: RSA, or EC P-256."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    ):
        return key
    raise ValueError("the client key must be RSA or EC P-256")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _basic(user: str, password: str) -> str:
    """client_secret_basic (RFC 6749 2.3.1): both parts form-urlencoded, then base64."""
    raw = f"{quote(user, safe='')}:{quote(password, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def professions_of(claims: dict[str, Any]) -> frozenset[str]:
    """Profession codes of a Pro Santé Connect userinfo: SubjectRefPro.exercices[].codeProfession."""
    ref = claims.get("SubjectRefPro")
    out: set[str] = set()
    if isinstance(ref, dict) and isinstance(ref.get("exercices"), list):
        for ex in ref["exercices"]:
            if isinstance(ex, dict) and isinstance(ex.get("codeProfession"), str):
                out.add(ex["codeProfession"])
    return frozenset(out)


class OidcClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        clock: Clock,
        breaker: CircuitBreaker,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        client_key: bytes | None = None,
        scopes: str,
        acr_values: str,
        id_claim: str,
        timeout: float,
    ) -> None:
        self.http = http
        self.clock = clock
        self.breaker = breaker
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_key = load_client_key(client_key) if client_key else None
        self.redirect_uri = redirect_uri
        self.scopes = scopes
        self.acr_values = acr_values.split()
        self.id_claim = id_claim
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.metadata: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched_at = float("-inf")

    async def _call(self, method: str, url: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """One request to the provider through the breaker; the body is read before returning.

        Whatever ends the call (an answer, an error, a cancellation) is reported to the breaker: a
        half-open breaker must never wait forever for a probe that was cut short.
        """
        if not self.breaker.allow():
            raise ProviderUnavailable("circuit open")
        healthy = False
        try:
            async with self.http.request(method, url, timeout=self.timeout, **kwargs) as r:
                await r.read()
            healthy = r.status < 500
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ProviderUnavailable(type(e).__name__) from None
        finally:
            if healthy:
                self.breaker.success()
            else:
                self.breaker.failure()
        if not healthy:
            raise ProviderUnavailable(f"HTTP {r.status}")
        return r

    async def _json(self, r: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
        try:
            data = await r.json(content_type=None)
        except ValueError:
            raise LoginError(f"{what}: not JSON") from None
        if not isinstance(data, dict):
            raise LoginError(f"{what}: not a JSON object")
        return data

    async def discover(self) -> dict[str, Any]:
        """Fetch the discovery document (every login: it is also the provider's health probe)."""
        r = await self._call("GET", self.issuer + "/.well-known/openid-configuration")
        if r.status != 200:
            raise LoginError(f"discovery: HTTP {r.status}")
        doc = await self._json(r, "discovery")
        if doc.get("issuer") != self.issuer:
            raise LoginError("discovery: issuer mismatch")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(key), str):
                raise LoginError(f"discovery: no {key}")
        self.metadata = doc
        return doc

    async def start(self) -> LoginStart:
        """A fresh state, nonce and PKCE verifier, and the authorization URL to send the browser to."""
        doc = await self.discover()
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if self.acr_values:
            params["acr_values"] = " ".join(self.acr_values)
        return LoginStart(f"{doc['authorization_endpoint']}?{urlencode(params)}", state, nonce, verifier)

    async def _jwk(self, kid: str | None) -> jwt.PyJWK:
        if kid not in self._keys and self.clock.now() - self._jwks_fetched_at >= JWKS_REFETCH_SECONDS:
            await self._fetch_jwks()
        key = self._keys.get(kid or "")
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise LoginError("token signed by an unknown key")
        return key

    async def _fetch_jwks(self) -> None:
        assert self.metadata is not None
        self._jwks_fetched_at = self.clock.now()
        r = await self._call("GET", self.metadata["jwks_uri"])
        if r.status != 200:
            raise LoginError(f"jwks: HTTP {r.status}")
        keys: dict[str, jwt.PyJWK] = {}
        for item in (await self._json(r, "jwks")).get("keys", []):
            if isinstance(item, dict) and item.get("use", "sig") == "sig":
                try:
                    keys[str(item.get("kid", ""))] = jwt.PyJWK(item)
                except jwt.PyJWTError:
                    continue  # a key type or algorithm we do not use
        self._keys = keys

    async def verify_jwt(self, token: str, what: str) -> dict[str, Any]:
        """Signature (JWKS), iss and aud of a JWT of the provider; exp and iat by the portal's clock."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise LoginError(f"{what}: malformed") from None
        key = await self._jwk(header.get("kid"))
        try:
            claims = jwt.decode(
                token, key, algorithms=ALGORITHMS, audience=self.client_id, issuer=self.issuer,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )  # fmt: skip
        except jwt.PyJWTError as e:
            raise LoginError(f"{what}: {type(e).__name__}") from None
        return claims

    def _check_times(self, claims: dict[str, Any], what: str) -> None:
        now = self.clock.now()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or exp + CLOCK_LEEWAY < now:
            raise LoginError(f"{what}: expired")
        if not isinstance(iat, int | float) or iat - CLOCK_LEEWAY > now:
            raise LoginError(f"{what}: issued in the future")

    async def finish(self, code: str, nonce: str, verifier: str) -> Professional:
        """Exchange the code, check the id_token, read userinfo."""
        if self.metadata is None:
            await self.discover()
        assert self.metadata is not None
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                "code_verifier": verifier}  # fmt: skip
        headers = {}
        if self.client_key is not None:
            form.update(client_id=self.client_id, client_assertion_type=ASSERTION_TYPE,
                        client_assertion=self._client_assertion())  # fmt: skip
        else:
            headers["Authorization"] = _basic(self.client_id, self.client_secret)
        r = await self._call("POST", self.metadata["token_endpoint"], data=form, headers=headers)
        tokens = await self._json(r, "token")
        if r.status != 200:
            raise LoginError(f"token: HTTP {r.status} {str(tokens.get('error', ''))[:40]}")
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str):
            raise LoginError("token: no id_token or access_token")
        claims = await self.verify_jwt(id_token, "id_token")
        self._check_times(claims, "id_token")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
            raise LoginError("id_token: nonce mismatch")
        if self.acr_values and claims.get("acr") not in self.acr_values:
            raise LoginError("id_token: acr not as asked")
        info = await self.userinfo(access_token)
        if info.get("sub") != claims.get("sub"):
            raise LoginError("userinfo: sub differs from the id_token's")
        identifier = info.get(self.id_claim)
        if not isinstance(identifier, str) or not identifier:
            raise LoginError(f"userinfo: no {self.id_claim}")
        name = " ".join(str(info.get(k, "")) for k in ("given_name", "family_name")).strip()
        return Professional(identifier, professions_of(info), name, id_token)

    def _client_assertion(self) -> str:
        """private_key_jwt (RFC 7523): a short-lived JWT signed with the client's key, audience the issuer."""
        now = int(self.clock.now())
        key = self.client_key
        assert key is not None
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.issuer, "iat": now,
                  "exp": now + 60, "jti": secrets.token_urlsafe(16)}  # fmt: skip
        return jwt.encode(
            claims, key, algorithm="ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        )

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        assert self.metadata is not None
        url = self.metadata.get("userinfo_endpoint")
        if not isinstance(url, str):
            raise LoginError("discovery: no userinfo_endpoint")
        r = await self._call("GET", url, headers={"Authorization": f"Bearer {access_token}"})
        if r.status != 200:
            raise LoginError(f"userinfo: HTTP {r.status}")
        if r.content_type == "application/jwt":
            return await self.verify_jwt((await r.text()).strip(), "userinfo")
        return await self._json(r, "userinfo")

    async def logout_url(self, id_token: str, post_logout_uri: str, state: str) -> str | None:
        """The provider's end-session URL, or None when it has none or cannot be reached now."""
        try:
            doc = await self.discover()
        except (ProviderUnavailable, LoginError):
            return None
        endpoint = doc.get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        query = {"id_token_hint": id_token, "post_logout_redirect_uri": post_logout_uri,
                 "client_id": self.client_id, "state": state}  # fmt: skip
        return f"{endpoint}?{urlencode(query)}"
