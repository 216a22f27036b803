from __future__ import annotations

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
