"""A key store in one file, encrypted at rest under a passphrase (PROTOCOL.md section 2).

File layout (JSON)::

    {"format": "robert-keystore/1",
     "kdf": {"alg": "scrypt", "salt": b64, "n": 32768, "r": 8, "p": 1},
     "aead": "AES-256-GCM", "nonce": b64(12), "ciphertext": b64}

The ciphertext is AES-256-GCM under ``scrypt(passphrase, salt)`` with the header (format, kdf, aead)
as associated data, so a tampered header fails like a wrong passphrase. The plaintext is the JSON of
:class:`KeyMaterial`. Every write is atomic (temp file, fsync, rename, fsync of the folder) and made
under an exclusive lock on ``<file>.lock``, so ``robert keys rotate`` and a running crypto service
that rotates by itself never lose each other's changes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from crypto_backend import protocol
from crypto_backend.keystore.base import KeyStoreError, RotationResult, UnknownKeyVersionError
from robert_common.files import write_private

FORMAT = "robert-keystore/1"
DAY_KEY_SIZE = 24  # K_S: SKINNY-64/192 key
FEDERATION_KEY_SIZE = 32  # K_G: AES-256
KEK_SIZE = 32  # AES-256-GCM
NONCE_SIZE = 12
DEFAULT_SCRYPT_N = 2**15  # ~0.1 s and 32 MiB here: paid once per start or rotation
_SCRYPT_LIMITS = {"n": (2**10, 2**20), "r": (1, 16), "p": (1, 4)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise KeyStoreError("key store file is malformed")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyStoreError("key store file is malformed") from None


@dataclass
class KeyMaterial:
    """Everything a key store holds. Versions let the KEK and K_G be rotated."""

    day_keys: dict[dt.date, bytes] = field(default_factory=dict)
    federation_keys: dict[int, bytes] = field(default_factory=dict)
    federation_version: int = 0
    keks: dict[int, bytes] = field(default_factory=dict)
    kek_version: int = 0
    registration_private_key: bytes = b""  # PKCS#8 DER

    @classmethod
    def generate(cls) -> KeyMaterial:
        """Fresh K_G, KEK and registration key pair (version 1 each), no day key yet."""
        private = ec.generate_private_key(ec.SECP256R1())
        pkcs8 = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(
            federation_keys={1: secrets.token_bytes(FEDERATION_KEY_SIZE)},
            federation_version=1,
            keks={1: secrets.token_bytes(KEK_SIZE)},
            kek_version=1,
            registration_private_key=pkcs8,
        )

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "day_keys": {d.isoformat(): _b64(k) for d, k in sorted(self.day_keys.items())},
                "federation_keys": {str(v): _b64(k) for v, k in self.federation_keys.items()},
                "federation_version": self.federation_version,
                "keks": {str(v): _b64(k) for v, k in self.keks.items()},
                "kek_version": self.kek_version,
                "registration_private_key": _b64(self.registration_private_key),
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> KeyMaterial:
        try:
            raw = json.loads(data)
            material = cls(
                day_keys={dt.date.fromisoformat(d): _unb64(k) for d, k in raw["day_keys"].items()},
                federation_keys={int(v): _unb64(k) for v, k in raw["federation_keys"].items()},
                federation_version=int(raw["federation_version"]),
                keks={int(v): _unb64(k) for v, k in raw["keks"].items()},
                kek_version=int(raw["kek_version"]),
                registration_private_key=_unb64(raw["registration_private_key"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyStoreError("key store content is malformed") from None
        material.check()
        return material

    def check(self) -> None:
        """Sizes and versions are consistent (a store that fails this is never used)."""
        ok = (
            all(len(k) == DAY_KEY_SIZE for k in self.day_keys.values())
            and all(len(k) == FEDERATION_KEY_SIZE for k in self.federation_keys.values())
            and all(len(k) == KEK_SIZE for k in self.keks.values())
            and self.federation_version in self.federation_keys
            and self.kek_version in self.keks
        )
        if not ok:
            raise KeyStoreError("key store content is inconsistent")


def _header(salt: bytes, n: int, r: int, p: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kdf": {"alg": "scrypt", "salt": _b64(salt), "n": n, "r": r, "p": p},
        "aead": "AES-256-GCM",
    }


def _header_aad(header: dict[str, Any]) -> bytes:
    return json.dumps(
        {k: header[k] for k in ("format", "kdf", "aead")}, sort_keys=True, separators=(",", ":")
    ).encode()


_Derived = dict[tuple[bytes, int, int, int], bytes]


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int, cache: _Derived | None = None) -> bytes:
    """scrypt(passphrase, salt); ``cache`` (one per open store) saves re-deriving on every rotation."""
    if cache is not None and (salt, n, r, p) in cache:
        return cache[(salt, n, r, p)]
    key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)
    if cache is not None:
        cache[(salt, n, r, p)] = key
    return key


def _check_header(header: Any) -> tuple[bytes, int, int, int]:
    """Validate the header of a file before paying for the KDF (a hostile n must not hang us)."""
    try:
        kdf = header["kdf"]
        if header["format"] != FORMAT or header["aead"] != "AES-256-GCM" or kdf["alg"] != "scrypt":
            raise KeyStoreError("unsupported key store format")
        n, r, p = (kdf[k] for k in ("n", "r", "p"))
        salt = _unb64(kdf["salt"])
    except (KeyError, TypeError):
        raise KeyStoreError("key store file is malformed") from None
    for name, value in (("n", n), ("r", r), ("p", p)):
        low, high = _SCRYPT_LIMITS[name]
        if not isinstance(value, int) or not low <= value <= high:
            raise KeyStoreError("key store file has unsupported KDF parameters")
    if n & (n - 1) or not 16 <= len(salt) <= 64:
        raise KeyStoreError("key store file has unsupported KDF parameters")
    return salt, n, r, p


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of the store (other writers wait)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class FileKeyStore:
    """The file implementation of :class:`~crypto_backend.keystore.base.KeyStore`."""

    def __init__(
        self,
        path: Path,
        passphrase: bytes,
        material: KeyMaterial,
        header: dict[str, Any],
        derived: _Derived | None = None,
    ) -> None:
        self.path = path
        self._passphrase = passphrase
        self._derived: _Derived = derived if derived is not None else {}
        self._material = material
        self._header = header
        self._stamp = self._file_stamp()
        self._load_derived()

    # --- life cycle ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        passphrase: bytes,
        *,
        material: KeyMaterial | None = None,
        scrypt_n: int = DEFAULT_SCRYPT_N,
    ) -> FileKeyStore:
        """Write a new store (fresh K_G, KEK, key pair unless ``material`` is given). Never overwrites."""
        if not passphrase:
            raise KeyStoreError("the key store passphrase is empty")
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            if path.exists():
                raise KeyStoreError(f"a key store already exists at {path}")
            material = material or KeyMaterial.generate()
            material.check()
            header = _header(secrets.token_bytes(16), scrypt_n, 8, 1)
            derived: _Derived = {}
            _write(path, passphrase, header, material, derived)
        return cls(path, passphrase, material, header, derived)

    @classmethod
    def load(cls, path: Path, passphrase: bytes) -> FileKeyStore:
        """Read and decrypt a store; KeyStoreError on a missing file, wrong passphrase or tampering."""
        derived: _Derived = {}
        header, material = _read(path, passphrase, derived)
        return cls(path, passphrase, material, header, derived)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load_derived(self) -> None:
        m = self._material
        self._keks = {v: AESGCM(k) for v, k in m.keks.items()}
        try:
            private = serialization.load_der_private_key(m.registration_private_key, password=None)
        except (ValueError, TypeError):
            raise KeyStoreError("key store holds an unreadable registration key") from None
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
            raise KeyStoreError("key store registration key is not a P-256 key")
        self._private_key = private
        self._public_spki = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def changed_on_disk(self) -> bool:
        return self._file_stamp() != self._stamp

    def changed(self) -> bool:
        return self.changed_on_disk()

    def close(self) -> None:
        """Nothing is held open between calls."""

    def reload(self) -> None:
        """Re-read the file (after ``robert keys rotate`` changed it)."""
        self._header, self._material = _read(self.path, self._passphrase, self._derived)
        self._stamp = self._file_stamp()
        self._load_derived()

    def _update(self, change: Any) -> Any:
        """Locked read-modify-write: re-read the file, apply ``change(material)``, write it back."""
        with _locked(self.path):
            header, material = _read(self.path, self._passphrase, self._derived)
            result = change(material)
            material.check()
            _write(self.path, self._passphrase, header, material, self._derived)
        self._header, self._material = header, material
        self._stamp = self._file_stamp()
        self._load_derived()
        return result

    # --- rotation ----------------------------------------------------------------------------------

    def rotate(self, today: dt.date, days_ahead: int, retention_days: int) -> RotationResult:
        """Add a fresh K_S for every day from ``today`` to ``today + days_ahead`` that lacks one, and
        destroy the keys of days older than ``today - retention_days`` (PROTOCOL.md 2)."""

        def change(m: KeyMaterial) -> RotationResult:
            added = []
            for i in range(days_ahead + 1):
                day = today + dt.timedelta(days=i)
                if day not in m.day_keys:
                    m.day_keys[day] = secrets.token_bytes(DAY_KEY_SIZE)
                    added.append(day)
            oldest = today - dt.timedelta(days=retention_days)
            purged = sorted(d for d in m.day_keys if d < oldest)
            for day in purged:
                del m.day_keys[day]
            return RotationResult(added=added, purged=purged)

        result: RotationResult = self._update(change)
        return result

    def needs_rotation(self, today: dt.date, days_ahead: int, retention_days: int) -> bool:
        days = self._material.day_keys
        oldest = today - dt.timedelta(days=retention_days)
        missing = any(today + dt.timedelta(days=i) not in days for i in range(days_ahead + 1))
        return missing or any(d < oldest for d in days)

    def rotate_kek(self) -> int:
        """Add a new KEK and seal with it from now on; old versions stay to open older identities."""

        def change(m: KeyMaterial) -> int:
            m.kek_version = max(m.keks) + 1
            m.keks[m.kek_version] = secrets.token_bytes(KEK_SIZE)
            return m.kek_version

        version: int = self._update(change)
        return version

    def kek_versions(self) -> list[int]:
        return sorted(self._material.keks)

    def retire_kek(self, version: int) -> None:
        """Destroy KEK ``version`` once nothing sealed under it remains (see crypto_backend/reseal.py)."""

        def change(m: KeyMaterial) -> None:
            if version == m.kek_version:
                raise KeyStoreError("the current KEK cannot be retired")
            m.keks.pop(version, None)

        self._update(change)

    def rotate_federation_key(self) -> int:
        """Add a new K_G and use it from now on (a federation-wide change: all servers at once)."""

        def change(m: KeyMaterial) -> int:
            m.federation_version = max(m.federation_keys) + 1
            m.federation_keys[m.federation_version] = secrets.token_bytes(FEDERATION_KEY_SIZE)
            return m.federation_version

        version: int = self._update(change)
        return version

    def import_federation_key(self, k_g: bytes) -> int:
        """Use a K_G shared by the federation from now on (a new version; the same key already in use
        changes nothing); return the version in use."""
        if len(k_g) != FEDERATION_KEY_SIZE:
            raise KeyStoreError(f"a federation key is {FEDERATION_KEY_SIZE} bytes")

        def change(m: KeyMaterial) -> int:
            if m.federation_keys[m.federation_version] != k_g:
                m.federation_version = max(m.federation_keys) + 1
                m.federation_keys[m.federation_version] = k_g
            return m.federation_version

        version: int = self._update(change)
        return version

    # --- KeyStore --------------------------------------------------------------------------------

    def day_key(self, day: dt.date) -> bytes | None:
        return self._material.day_keys.get(day)

    def days(self) -> list[dt.date]:
        return sorted(self._material.day_keys)

    def federation_key(self) -> bytes:
        return self._material.federation_keys[self._material.federation_version]

    @property
    def federation_key_version(self) -> int:
        return self._material.federation_version

    @property
    def kek_version(self) -> int:
        return self._material.kek_version

    def registration_public_key(self) -> bytes:
        return self._public_spki

    def derive_client_keys(self, client_public_spki: bytes) -> tuple[bytes, bytes]:
        return protocol.derive_client_keys(self._private_key, client_public_spki)  # type: ignore[no-any-return]

    def seal(self, plaintext: bytes, associated_data: bytes) -> tuple[int, bytes]:
        version = self._material.kek_version
        nonce = secrets.token_bytes(NONCE_SIZE)
        return version, nonce + self._keks[version].encrypt(nonce, plaintext, associated_data)

    def unseal(self, kek_version: int, sealed: bytes, associated_data: bytes) -> bytes:
        aead = self._keks.get(kek_version)
        if aead is None:
            raise UnknownKeyVersionError("sealed with a KEK version this key store does not hold")
        try:
            return aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], associated_data)
        except InvalidTag:
            raise KeyStoreError("sealed value does not authenticate under the KEK") from None

    def __repr__(self) -> str:  # never show key material
        return f"FileKeyStore(path={str(self.path)!r}, days={len(self._material.day_keys)})"


def _read(path: Path, passphrase: bytes, cache: _Derived | None = None) -> tuple[dict[str, Any], KeyMaterial]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyStoreError(f"no key store at {path} (create one with `robert keys init`)") from None
    except OSError as e:
        raise KeyStoreError(f"cannot read the key store at {path}: {e.strerror}") from None
    try:
        header = json.loads(raw)
    except ValueError:
        raise KeyStoreError("key store file is malformed") from None
    if not isinstance(header, dict):
        raise KeyStoreError("key store file is malformed")
    salt, n, r, p = _check_header(header)
    nonce, ciphertext = _unb64(header.get("nonce")), _unb64(header.get("ciphertext"))
    key = _derive(passphrase, salt, n, r, p, cache)
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _header_aad(header))
    except (InvalidTag, ValueError):
        raise KeyStoreError("wrong passphrase, or the key store file was altered") from None
    return {k: header[k] for k in ("format", "kdf", "aead")}, KeyMaterial.from_json(plaintext)


def _write(
    path: Path,
    passphrase: bytes,
    header: dict[str, Any],
    material: KeyMaterial,
    cache: _Derived | None = None,
) -> None:
    kdf = header["kdf"]
    key = _derive(passphrase, _unb64(kdf["salt"]), kdf["n"], kdf["r"], kdf["p"], cache)
    nonce = secrets.token_bytes(NONCE_SIZE)
    ciphertext = AESGCM(key).encrypt(nonce, material.to_json(), _header_aad(header))
    doc = {**header, "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
    write_private(path, json.dumps(doc, indent=1).encode() + b"\n")
