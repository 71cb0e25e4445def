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

from pydantic import Field, SecretStr, ValidationError, field_validator
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROBERT_", extra="ignore", frozen=True)

    # --- core ---------------------------------------------------------------------------------
    data_dir: Path = Field(Path("robert-data"), description="Folder for the embedded database and dev keys")
    mongodb_uri: str | None = Field(None, description="MongoDB URI; unset: start the embedded SecantusDB")
    mongodb_database: str = "robert"
    crypto_mongodb_database: str = "robert_crypto"
    time_start: str = Field("20200601", description="Service start date, YYYYMMDD (UTC midnight)")
    country_code: int = Field(FRANCE_COUNTRY_CODE, ge=0, le=255)
    clock_shift_file: Path | None = Field(None, description="File holding a clock shift in seconds")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- crypto service (crypto_backend) -------------------------------------------------------
    crypto_listen: str = Field("127.0.0.1:50051", description="host:port the crypto gRPC service binds")
    crypto_address: str = Field("127.0.0.1:50051", description="host:port clients reach the crypto service at")
    crypto_timeout: float = Field(2.0, gt=0, description="Deadline in seconds of a call to the crypto service")
    keystore_path: Path | None = Field(None, description="Key store file; default <data_dir>/keystore.json")
    keystore_passphrase: SecretStr | None = Field(None, description="Passphrase of the key store")
    key_retention_days: int = Field(20, ge=15, description="Past day keys kept (contagious period + margin)")

    # --- phone API (robert_server.api) ---------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9100, ge=0, le=65535)
    bundle_days: int = Field(4, ge=1, le=10)
    status_min_epoch_gap: int = Field(2, ge=0)
    request_time_tolerance: int = Field(60, ge=0)
    captcha: Literal["builtin", "external", "off"] = "builtin"
    captcha_external_url: str | None = None

    # --- submission codes (robert_server.codes) ------------------------------------------------
    codes_listen: str = Field("127.0.0.1:50052", description="host:port the code-issuer gRPC service binds")

    # --- matching and risk (robert_server.matching) --------------------------------------------
    hello_tolerance: int = Field(180, ge=0, description="Seconds of HELLO time tolerance (PROTOCOL.md 8)")
    contagious_period_days: int = Field(14, ge=1)
    risk_retention_days: int = Field(7, ge=1)

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


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise SettingsError with one line per bad value."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"ROBERT_{name.upper()}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"cannot read ROBERT_SETTINGS_FILE: {e}") from None
