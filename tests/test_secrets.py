from __future__ import annotations

import re

import pytest

from rfm_sync import secrets


def test_env_var_wins_and_value_never_shows(monkeypatch):
    monkeypatch.setenv("RFM_SYNC_SECRET_SHOPIFY_MAIN", "shpat_very_secret")
    secret = secrets.resolve("shopify-main")
    assert secret.reveal() == "shpat_very_secret"
    assert "very_secret" not in repr(secret) and "very_secret" not in str(secret)
    assert "very_secret" not in f"{secret!r} {secret}"


def test_missing_secret_points_to_the_env_var(monkeypatch):
    monkeypatch.delenv("RFM_SYNC_SECRET_NOPE_1", raising=False)
    monkeypatch.setattr("keyring.get_password", lambda service, name: None)
    with pytest.raises(secrets.SecretError, match="RFM_SYNC_SECRET_NOPE_1"):
        secrets.resolve("nope.1")


KEYS = [
    "pk_0a1b2c3d4e5f60718293a4b5c6d7e8f9ab",
    "sk_live_51HxQeLKz9aB3cD4eF5gH6iJ",
    "shpat_0123456789abcdef0123456789abcdef",
    "EAABsbCS1iHgBAKZCqZBv1mNzZC4ZBxYZA",
    "q7w3e9r1t5y8u2i4o6p0a3s5d7f9g1h3",
]


@pytest.mark.parametrize("key", KEYS)
def test_a_key_pasted_as_the_name_is_never_echoed(monkeypatch, key):
    monkeypatch.setattr("keyring.get_password", lambda service, name: None)
    with pytest.raises(secrets.SecretError) as info:
        secrets.resolve(key)
    message = str(info.value)
    assert "looks like a key or token was pasted where the secret's name belongs" in message
    assert key not in message and key.upper() not in message and secrets.env_var_name(key) not in message


@pytest.mark.parametrize(
    "name",
    [
        "shopify-main",
        "klaviyo-key",
        "meta-token",
        "bc-token",
        "shop-hooks",
        "nope.1",
        "klaviyo_private_key_2024",
        "pk_store",
        "sk-main",
        "meta-app-secret-production",
    ],
)
def test_ordinary_names_are_named_in_the_hint(monkeypatch, name):
    monkeypatch.delenv(secrets.env_var_name(name), raising=False)
    monkeypatch.setattr("keyring.get_password", lambda service, n: None)
    assert not secrets.looks_like_a_value(name)
    with pytest.raises(
        secrets.SecretError, match=re.escape(f"secret {name!r} is not set: export {secrets.env_var_name(name)}=...")
    ):
        secrets.resolve(name)
