"""The one settings object of the system, read once from ``ROBERT_*`` environment variables.

An optional TOML file named by ``ROBERT_SETTINGS_FILE`` supplies values the environment does not set
(keys are the setting names in lower case, without the prefix). Every setting is documented in the
README with its default; a bad value stops the process at start-up with one line per problem.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

FRANCE_COUNTRY_CODE = 0x21


class SettingsError(Exception):
    """Raised with a readable, multi-line message when the settings do not validate."""


class _TomlFileSource(PydanticBaseSettingsSource):
    """Values from the TOML file named by ROBERT_SETTINGS_FILE (lowest priority after defaults)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("ROBERT_SETTINGS_FILE")
        self._values: dict[str, Any] = {}
        if path:
            with open(path, "rb") as f:
                self._values = {k.lower(): v for k, v in tomllib.load(f).items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k in self.settings_cls.model_fields}


class FederationPartner(BaseModel):
    """A partner country's server (ROBERT_FEDERATION_PARTNERS): where to deliver its contacts, and the
    CA whose certificates identify it (as our client and as the server we call)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    country_code: int = Field(ge=0, le=255)
    endpoint: str = Field(min_length=3, description="host:port of its federation service")
    ca: Path = Field(description="CA certificate (PEM) that signs this partner's federation certificates")
    server_name: str | None = Field(None, description="name its server certificate bears (default: host)")

    @property
    def label(self) -> str:
        """The partner's name in KPIs, metrics and logs: its country code, e.g. ``0x22``."""
        return f"0x{self.country_code:02x}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROBERT_", extra="ignore", frozen=True)

    # --- core ---------------------------------------------------------------------------------
    data_dir: Path = Field(Path("robert-data"), description="Folder for the embedded database and dev keys")
    mongodb_uri: str | None = Field(
        None, description="MongoDB URI; unset: `robert up` starts the embedded SecantusDB (and tests do)"
    )
    mongodb_database: str = Field("robert", description="Database of the API, codes and matching")
    crypto_mongodb_database: str = Field(
        "robert_crypto", description="Database of the crypto service (sealed identities)"
    )
    time_start: str = Field("20200601", description="Service start date, YYYYMMDD (UTC midnight)")
    country_code: int = Field(
        FRANCE_COUNTRY_CODE, ge=0, le=255, description="Country code (CC) of this server; 0x21 is France"
    )
    clock_shift_file: Path | None = Field(None, description="File holding a clock shift in seconds")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    up_max_restarts: int = Field(
        5, ge=0, description="`robert up`: restarts of one component within the window before it stops all"
    )
    up_restart_window: float = Field(
        300.0, gt=0, description="`robert up`: seconds over which a component's restarts are counted"
    )
    up_restart_backoff_max: float = Field(
        30.0, gt=0, description="`robert up`: longest wait before restarting a crashed component"
    )

    # --- internal plane: mutual TLS between components (robert_common.tls) ----------------------
    grpc_tls_dir: Path | None = Field(
        None,
        description="Folder of the development CA and certificates (`robert certs`); unset: <data_dir>/tls",
    )
    grpc_tls_ca: Path | None = Field(
        None, description="CA certificate (PEM) of the internal gRPC plane; unset: <tls dir>/ca.pem"
    )
    grpc_tls_cert: Path | None = Field(
        None,
        description="Certificate (PEM) of this process on the internal plane; unset: <tls dir>/<name>.pem",
    )
    grpc_tls_key: Path | None = Field(None, description="Its private key (PEM); unset: <tls dir>/<name>.key")
    grpc_plaintext: bool = Field(
        False,
        description="Development only: internal gRPC without TLS nor rights; loopback addresses only",
    )

    # --- crypto service (crypto_backend) -------------------------------------------------------
    crypto_listen: str = Field("127.0.0.1:50051", description="host:port the crypto gRPC service binds")
    crypto_address: str = Field(
        "127.0.0.1:50051",
        description="host:port clients reach the crypto service at; several IP:port, comma-separated: "
        "calls are spread over them (round robin)",
    )
    crypto_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Crypto service processes robert up starts, on consecutive ports from "
        "ROBERT_CRYPTO_LISTEN's (the clients get them all as ROBERT_CRYPTO_ADDRESS)",
    )
    crypto_timeout: float = Field(
        2.0, gt=0, description="Deadline in seconds of a call to the crypto service"
    )
    keystore_path: Path | None = Field(None, description="Key store file; default <data_dir>/keystore.json")
    keystore_passphrase: SecretStr | None = Field(None, description="Passphrase of the key store")
    key_retention_days: int = Field(20, ge=15, description="Past day keys kept (contagious period + margin)")
    keystore_passphrase_file: Path | None = Field(
        None,
        description="File holding the key store passphrase (used when ROBERT_KEYSTORE_PASSPHRASE is unset)",
    )
    keystore_auto_rotate: bool = Field(
        False, description="Crypto service adds missing day keys and purges expired ones itself (development)"
    )
    crypto_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port of the crypto service's Prometheus metrics; unset: none"
    )
    keystore: Literal["file", "pkcs11"] = Field(
        "file", description="Where the server keys live: an encrypted file (development) or a PKCS#11 token"
    )
    pkcs11_module: Path | None = Field(
        None, description="PKCS#11 library of the HSM (e.g. /usr/lib/softhsm/libsofthsm2.so)"
    )
    pkcs11_token_label: str = Field("robert", min_length=1, description="Label of the PKCS#11 token")
    pkcs11_pin: SecretStr | None = Field(None, description="User PIN of the PKCS#11 token")
    pkcs11_pin_file: Path | None = Field(
        None, description="File holding the PKCS#11 user PIN (used when ROBERT_PKCS11_PIN is unset)"
    )
    kek_reseal_batch: int = Field(
        500, ge=1, le=10000, description="Identities re-sealed per batch after a KEK rotation"
    )
    kek_reseal_rate: float = Field(
        2000.0, ge=0, description="Identities re-sealed per second at most after a KEK rotation; 0: no limit"
    )
    kek_retire_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="Seconds a new KEK is in use before the old one may be retired (running services reload)",
    )

    # --- phone API (robert_server.api) ---------------------------------------------------------
    http_host: str = Field("127.0.0.1", description="Address the phone API listens on")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the phone API (/api/v6)")
    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Phone API processes sharing ROBERT_HTTP_PORT (SO_REUSEPORT; more than 1: each process's "
        "internal app on ROBERT_METRICS_PORT + its index)",
    )
    http_tls_cert: Path | None = Field(
        None,
        description="Phone API terminates TLS 1.2/1.3 with this certificate chain (PEM); unset: plain HTTP",
    )
    http_tls_key: Path | None = Field(None, description="Private key (PEM) of ROBERT_HTTP_TLS_CERT")
    metrics_host: str = Field("127.0.0.1", description="Address of the internal app (health, metrics, KPIs)")
    metrics_port: int = Field(9100, ge=0, le=65535, description="Port of the internal app")
    bundle_days: int = Field(4, ge=1, le=10, description="Days of tuples in each bundle (PROTOCOL.md 3)")
    status_min_epoch_gap: int = Field(2, ge=0, description="Epochs between accepted /status; 0 disables")
    request_time_tolerance: int = Field(
        60, ge=0, description="Seconds an authenticated request's time may differ from the server's"
    )
    captcha: Literal["builtin", "external", "off"] = Field(
        "builtin", description="builtin challenges, an external captcha server, or off (tests only)"
    )
    captcha_external_url: str | None = Field(None, description="Base URL of the external captcha server")
    captcha_ttl: int = Field(300, ge=10, description="Seconds a builtin captcha challenge stays valid")
    api_request_deadline: float = Field(
        5.0, gt=0, description="Seconds a phone API request may take before it is answered 503"
    )
    api_max_in_progress: int = Field(
        64,
        ge=1,
        description="Phone API requests in progress per process; beyond, 503 with Retry-After at once",
    )
    api_retry_after_max: int = Field(
        10, ge=1, le=3600, description="Largest Retry-After (s) of a refusal; each draws 1..this at random"
    )
    status_batch_max: int = Field(
        50,
        ge=1,
        le=1000,
        description="Most /status polls per batch: one crypto call, one registration read, one bulk write",
    )
    status_batch_delay_ms: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Milliseconds a /status poll waits for others to batch with; 0 disables",
    )
    report_max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest /report body accepted (bytes; larger: 413)"
    )
    report_large_uploads: int = Field(
        2,
        ge=1,
        le=64,
        description="/report bodies over 64 KiB read and parsed at once per process (in worker processes);"
        " more: 503 with Retry-After",
    )
    jwt_issuer: str = Field("robert-server", description="'iss' claim of the JWTs the API signs")
    declaration_token_key_file: Path | None = Field(
        None, description="ES256 private key (PEM) of declarationToken; unset: <data_dir>/jwt/declaration.pem"
    )
    analytics_token_key_file: Path | None = Field(
        None, description="ES256 private key (PEM) of analyticsToken; unset: <data_dir>/jwt/analytics.pem"
    )
    report_token_key_file: Path | None = Field(
        None, description="ES256 private key (PEM) of reportValidationToken; unset: <data_dir>/jwt/report.pem"
    )
    declaration_token_lifetime: int = Field(30 * 86400, ge=60, description="Seconds declarationToken lives")
    analytics_token_lifetime: int = Field(6 * 3600, ge=60, description="Seconds analyticsToken lives")
    report_token_lifetime: int = Field(300, ge=60, description="Seconds reportValidationToken lives")

    # --- submission codes (robert_server.codes) ------------------------------------------------
    codes_listen: str = Field("127.0.0.1:50052", description="host:port the code-issuer gRPC service binds")
    codes_address: str = Field("127.0.0.1:50052", description="host:port clients reach the code issuer at")
    codes_pepper: SecretStr | None = Field(
        None,
        description="Secret key of the HMAC under which codes are stored; unset: <data_dir>/codes_pepper",
    )
    codes_app_link_base: str = Field(
        "https://app.stopcovid.gouv.fr", description="Deep link base of QR payloads (PROTOCOL.md 7)"
    )
    codes_timezone: str = Field("Europe/Paris", description="Zone of the days of long-code validity")
    codes_short_validity_minutes: int = Field(60, ge=1, description="Minutes a short code stays valid")
    codes_long_validity_days: int = Field(7, ge=0, description="Long codes: day D to the end of D+N")
    codes_jwt_lifetime_days: int = Field(10, ge=1, description="Days a JWT code is valid after its iat")
    codes_jwt_clock_skew: int = Field(60, ge=0, description="Seconds a JWT code's iat may be in the future")
    codes_jwt_public_keys: dict[str, str] = Field(
        default_factory=dict, description="JWT codes: key id -> ES256 public key (PEM, or base64 DER SPKI)"
    )
    codes_reservation_seconds: int = Field(120, ge=1, description="How long /report holds a code")
    codes_rate_limit_failures: int = Field(20, ge=1, description="Failed code attempts per source and window")
    codes_rate_limit_window: int = Field(600, ge=1, description="Seconds of the failed-attempt window")
    codes_rate_limit_lockout: int = Field(3600, ge=1, description="Seconds a source is locked out")
    codes_global_failures: int = Field(
        100, ge=1, description="Failed short-code checks allowed from all sources together per global window"
    )
    codes_global_window: int = Field(3600, ge=1, description="Seconds of the global failed-check window")
    trusted_proxies: list[str] = Field(
        [],
        description="Proxies (IPs or CIDRs, JSON list) whose X-Forwarded-For names a code attempt's client",
    )
    codes_purge_expired_after_days: int = Field(
        2, ge=0, description="Unused codes are purged after expiry + N"
    )
    codes_purge_used_margin_days: int = Field(1, ge=0, description="Used codes and jtis: after validity + N")

    @field_validator("codes_timezone")
    @classmethod
    def _check_codes_timezone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for text in v:
            try:
                ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
        return v

    @field_validator("codes_jwt_public_keys")
    @classmethod
    def _check_codes_jwt_public_keys(cls, v: dict[str, str]) -> dict[str, str]:
        import base64

        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

        for kid, text in v.items():
            try:
                raw = text.strip()
                if raw.startswith("-----"):
                    key = load_pem_public_key(raw.encode())
                else:
                    key = load_der_public_key(base64.b64decode(raw, validate=True))
                if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
                    raise ValueError
            except ValueError:
                raise ValueError(f"key {kid!r} is not a P-256 public key (PEM or base64 DER)") from None
        return v

    # --- matching and risk (robert_server.matching) --------------------------------------------
    hello_tolerance: int = Field(180, ge=0, description="Seconds of HELLO time tolerance (PROTOCOL.md 8)")
    contagious_period_days: int = Field(
        14, ge=1, description="Days exposures are kept and count (PROTOCOL.md 9)"
    )
    risk_retention_days: int = Field(
        7,
        ge=1,
        description="Days after the last contact during which a risk is raised and kept (PROTOCOL.md 9)",
    )
    scoring_rssi_max: int = Field(-35, le=0, description="Scoring v2: RSSI cap (dBm)")
    scoring_p0: float = Field(-66.0, description="Scoring v2: RSSI reference p0 (dBm)")
    scoring_deltas: tuple[float, ...] = Field(
        (39.0, 27.0, 23.0, 21.0, 20.0, 15.0), min_length=1, description="Scoring v2: deltas, JSON list"
    )
    scoring_softmax_a: float = Field(4.342, gt=0, description="Scoring v2: softmax coefficient of RSSIs")
    scoring_softmax_b: float = Field(0.2, gt=0, description="Scoring v2: softmax coefficient of risks")
    scoring_epoch_tolerance: int = Field(
        180, ge=0, description="Scoring v2: seconds a contact may overrun 15 min"
    )
    risk_r0: float = Field(0.0071, gt=0, description="Risk aggregation coefficient r0 (PROTOCOL.md 9)")
    risk_threshold: float = Field(
        0.1, gt=0, le=1, description="Aggregated risk at or above which a phone is at risk"
    )
    matcher_interval: float = Field(60.0, gt=0, description="Seconds between two passes of `robert matcher`")
    matcher_lease_seconds: int = Field(
        300, ge=1, description="Seconds a worker holds a claimed contact batch before others may take it over"
    )
    matcher_risk_page: int = Field(
        500, ge=1, description="Registrations read and written per risk-evaluation round"
    )
    matcher_daily_page: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Registrations (and captchas) read per `_id`-ordered page by the daily job's walk",
    )
    matcher_daily_pause: float = Field(
        0.0,
        ge=0,
        le=60,
        description="Seconds the daily job waits between two pages (leaves the database to the hot paths)",
    )
    matcher_max_attempts: int = Field(
        5, ge=1, description="Failed attempts at a contact batch before it is parked as a dead letter"
    )
    identity_orphan_grace_hours: float = Field(
        24.0,
        gt=0,
        description="The daily job deletes identities older than this that have no registration",
    )

    # --- ProStopCovid portal (robert_server.portal) --------------------------------------------
    portal_host: str = Field("127.0.0.1", description="Address the ProStopCovid portal listens on")
    portal_port: int = Field(8090, ge=0, le=65535, description="Port of the ProStopCovid portal")
    portal_public_url: str | None = Field(
        None,
        description="Portal URL as browsers reach it (OIDC redirect, WebAuthn origin); unset: http://localhost:<port>",
    )
    portal_oidc_issuer: str | None = Field(
        None,
        description="OpenID Connect provider (issuer URL, e.g. Pro Santé Connect); unset: the dev provider",
    )
    portal_oidc_client_id: str = Field("robert-portal", description="OIDC client id of the portal")
    portal_oidc_client_secret: SecretStr | None = Field(
        None, description="OIDC client secret; unset: <data_dir>/portal/dev_client_secret (dev provider)"
    )
    portal_oidc_client_key_file: Path | None = Field(
        None,
        description="PEM private key (RSA or P-256): private_key_jwt client authentication, not a secret",
    )
    portal_oidc_acr_values: str = Field("eidas1", description="acr_values asked of the provider")
    portal_oidc_scopes: str = Field("openid scope_all", description="Scopes asked of the provider")
    portal_oidc_id_claim: str = Field(
        "SubjectNameID", description="Userinfo claim holding the professional's identifier"
    )
    portal_oidc_timeout: float = Field(
        3.0,
        gt=0,
        le=30,
        description="Seconds a call to the OIDC provider may take (then it counts as failed)",
    )
    portal_oidc_breaker_failures: int = Field(
        3, ge=1, description="Consecutive provider failures that open the circuit breaker"
    )
    portal_oidc_breaker_open_seconds: float = Field(
        30.0, gt=0, description="Seconds the breaker stays open before one probe is let through"
    )
    portal_professions: tuple[str, ...] = Field(
        ("10", "60"), min_length=1,
        description="Profession codes allowed to issue codes (JSON list; 10 doctor, 60 nurse)",
    )  # fmt: skip
    portal_session_idle_minutes: int = Field(15, ge=1, description="Minutes of inactivity ending a session")
    portal_session_absolute_hours: int = Field(
        12, ge=1, description="Hours after which a session always ends"
    )
    portal_codes_per_hour: int = Field(10, ge=1, description="Codes one professional may issue per hour")
    portal_codes_per_day: int = Field(40, ge=1, description="Codes one professional may issue per day (UTC)")
    portal_audit_key: SecretStr | None = Field(
        None, description="HMAC key of the audit trail's hashes; unset: <data_dir>/portal/audit_key"
    )
    portal_issuer_token: SecretStr | None = Field(
        None, description="Bearer token of the portal at the code issuer (`robert issuers add`)"
    )
    portal_issuer_token_file: Path | None = Field(
        None, description="File holding that token (used when ROBERT_PORTAL_ISSUER_TOKEN is unset)"
    )
    portal_codes_timeout: float = Field(3.0, gt=0, description="Seconds a call to the code issuer may take")
    portal_codes_tls_ca: Path | None = Field(
        None, description="CA (PEM) of the code issuer; set: these files, not the plane's cert `portal`"
    )
    portal_codes_tls_cert: Path | None = Field(
        None, description="Client certificate (PEM) of the portal, for a code issuer with mutual TLS"
    )
    portal_codes_tls_key: Path | None = Field(
        None, description="Private key (PEM) of that client certificate"
    )
    portal_dev_idp_port: int = Field(
        8091, ge=0, le=65535, description="Port of the development OIDC provider `robert up` starts"
    )

    # --- federation between countries (robert_server.federation) --------------------------------
    federation_listen: str = Field(
        "127.0.0.1:50060", description="host:port the federation gRPC service (partners call it) binds"
    )
    federation_partners: list[FederationPartner] = Field(
        default_factory=list,
        description="Partner countries, JSON list of {country_code, endpoint, ca, server_name?}; empty: none",
    )
    federation_tls_cert: Path | None = Field(
        None, description="This country's federation certificate (PEM), shown to partners (server and client)"
    )
    federation_tls_key: Path | None = Field(
        None, description="Private key (PEM) of ROBERT_FEDERATION_TLS_CERT"
    )
    federation_interval: float = Field(
        5.0, gt=0, description="Seconds between two rounds of `robert federation forward`"
    )
    federation_batches_per_call: int = Field(
        20, ge=1, le=500, description="Outbox batches (up to 100 contacts each) sent per delivery call"
    )
    federation_timeout: float = Field(30.0, gt=0, description="Deadline in seconds of a delivery call")
    federation_backoff_max: float = Field(
        300.0, gt=0, description="Longest wait in seconds between two failed deliveries to a partner"
    )
    federation_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus metrics port of `robert federation serve`; unset: none"
    )
    federation_forwarder_metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Prometheus metrics port of `robert federation forward`; unset: none",
    )

    @field_validator("federation_partners")
    @classmethod
    def _check_federation_partners(cls, v: list[FederationPartner]) -> list[FederationPartner]:
        codes = [p.country_code for p in v]
        if len(set(codes)) != len(codes):
            raise ValueError("a country code appears twice")
        return v

    @field_validator("time_start")
    @classmethod
    def _check_time_start(cls, v: str) -> str:
        try:
            dt.datetime.strptime(v, "%Y%m%d")
        except ValueError:
            raise ValueError("must be a date written YYYYMMDD") from None
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls))

    @cached_property
    def time_start_date(self) -> dt.date:
        return dt.datetime.strptime(self.time_start, "%Y%m%d").date()

    @property
    def resolved_keystore_path(self) -> Path:
        return self.keystore_path or self.data_dir / "keystore.json"


EMBEDDED_URI_FILE = "mongodb.uri"  # written in data_dir by a running `robert up`, removed when it stops


def load_settings(*, use_running_embedded: bool = True, **overrides: Any) -> Settings:
    """Read and validate the settings; raise SettingsError with one line per bad value.

    When ROBERT_MONGODB_URI is unset and a `robert up` of the same data_dir is running, its embedded
    database is used: so `robert config`, `robert issuers` or `robert matcher --once` work beside it.
    """
    try:
        settings = Settings(**overrides)
        uri_file = settings.data_dir / EMBEDDED_URI_FILE
        if use_running_embedded and settings.mongodb_uri is None and uri_file.is_file():
            settings = Settings(**{**overrides, "mongodb_uri": uri_file.read_text().strip()})
        return settings
    except ValidationError as e:
        lines = []
        for err in e.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"ROBERT_{name.upper()}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"cannot read ROBERT_SETTINGS_FILE: {e}") from None
