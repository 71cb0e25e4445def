"""JWTs of the phone API: ES256, kid, iss, exp; keys generated once in development, read from files."""

from __future__ import annotations

import jwt
import pytest

from robert_common.settings import load_settings
from robert_server.tokens import TokenKeyError, TokenSigner

NOW = 1_717_409_250


def test_each_kind_is_signed_with_its_own_key(tmp_path) -> None:
    settings = load_settings(data_dir=tmp_path, jwt_issuer="test-issuer")
    signer = TokenSigner.from_settings(settings)
    tokens = {
        "analytics": signer.analytics_token(NOW),
        "report": signer.report_validation_token(NOW),
        "declaration": signer.declaration_token(
            NOW, last_contact_ntp=3_926_000_000, notification_ntp=3_926_100_000, jti="j1"
        ),
    }
    assert len({signer.keys[k].kid for k in tokens}) == 3
    for kind, token in tokens.items():
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "ES256" and header["kid"] == signer.keys[kind].kid
        claims = jwt.decode(
            token, signer.public_key_pem(kind), algorithms=["ES256"], options={"verify_exp": False}
        )
        assert claims["iss"] == "test-issuer" and claims["iat"] == NOW
        assert claims["exp"] == NOW + signer.lifetimes[kind]
        other = "report" if kind != "report" else "analytics"
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(
                token, signer.public_key_pem(other), algorithms=["ES256"], options={"verify_exp": False}
            )
    claims = jwt.decode(tokens["declaration"], options={"verify_signature": False})
    assert claims["lastContactDateTimestamp"] == 3_926_000_000 and claims["jti"] == "j1"


def test_development_keys_are_generated_once_and_kept(tmp_path) -> None:
    settings = load_settings(data_dir=tmp_path)
    first = TokenSigner.from_settings(settings)
    assert (tmp_path / "jwt" / "analytics.pem").stat().st_mode & 0o077 == 0
    second = TokenSigner.from_settings(settings)
    assert {k: v.kid for k, v in first.keys.items()} == {k: v.kid for k, v in second.keys.items()}


def test_a_configured_key_file_must_exist_and_be_p256(tmp_path) -> None:
    missing = load_settings(data_dir=tmp_path, report_token_key_file=tmp_path / "nope.pem")
    with pytest.raises(TokenKeyError, match="cannot read"):
        TokenSigner.from_settings(missing)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(TokenKeyError):
        TokenSigner.from_settings(load_settings(data_dir=tmp_path, report_token_key_file=bad))


def test_tokens_are_the_compact_jws_pyjwt_writes(tmp_path) -> None:
    """Assembled by hand for speed: same header and claims segments as jwt.encode, a valid signature."""
    signer = TokenSigner.from_settings(load_settings(data_dir=tmp_path))
    token = signer.declaration_token(
        NOW, last_contact_ntp=3_926_000_000, notification_ntp=3_926_100_000, jti="j"
    )
    key = signer.keys["declaration"]
    claims = jwt.decode(token, key.public_pem, algorithms=["ES256"], options={"verify_exp": False})
    reference = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    assert token.split(".")[:2] == reference.split(".")[:2]
    assert len(token.split(".")[2]) == 86  # r | s, 64 bytes, base64url without padding
    jtis = {
        jwt.decode(signer.analytics_token(NOW), options={"verify_signature": False})["jti"] for _ in range(3)
    }
    assert len(jtis) == 3 and all(len(j) == 32 and int(j, 16) >= 0 for j in jtis)


def test_declaration_jti_is_stable_per_exposure_and_keyed(tmp_path) -> None:
    from robert_common.settings import load_settings
    from robert_server.tokens import TokenSigner

    a = TokenSigner.from_settings(load_settings(data_dir=tmp_path / "a"))
    b = TokenSigner.from_settings(load_settings(data_dir=tmp_path / "b"))
    id_a = bytes.fromhex("ead5af9535")
    assert a.declaration_jti(id_a, 5239) == a.declaration_jti(id_a, 5239)  # one exposure, one jti
    assert a.declaration_jti(id_a, 5239) != a.declaration_jti(id_a, 5240)
    assert a.declaration_jti(id_a, 5239) != b.declaration_jti(id_a, 5239)  # keyed by the server's key
    assert len(a.declaration_jti(id_a, 5239)) == 32
