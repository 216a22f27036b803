"""`doctor`, `secrets set/check`, and the log format: behaviour seen from the command line."""

from __future__ import annotations

import io
import json
import logging

import keyring
import pytest
from click.testing import CliRunner
from keyring.backend import KeyringBackend

from rfm_sync import masking, secrets
from rfm_sync.cli import main
from rfm_sync.daemon import logs
from tests.configs import config_toml

BASE = config_toml("sqlite:///s.sqlite", destinations=())


@pytest.fixture
def no_keyring(monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setattr(keyring, "get_password", lambda service, name: None)


def test_doctor_passes_on_a_sound_config(write_config, write_csv):
    write_csv("customer_id,placed_at,amount\nc1,2026-01-01,10\n")
    path = write_config(BASE + '[[destinations]]\ntype = "file"\nname = "sink"\n')
    result = CliRunner().invoke(main, ["doctor", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok  source shop: self-check passed" in result.output  # the CSV exists and its header maps
    assert "ok  destination sink: self-check passed" in result.output  # its folder takes a file
    assert "ok  store: integrity check passed (PRAGMA quick_check)" in result.output
    assert "schedule: next runs: incremental at" in result.output and "full at" in result.output
    assert "no problems found" in result.output
    assert "RFM eligibility: no orders stored yet" in result.output


def test_doctor_reports_every_problem_with_its_fix(write_config, write_csv, no_keyring, monkeypatch):
    monkeypatch.delenv("RFM_SYNC_SECRET_SHOP_HOOK", raising=False)
    write_csv("customer_id,placed_at,amount\nc1,2026-01-01,10\n")
    path = write_config("""
        [store]
        url = "sqlite:///s.sqlite"
        [webhooks]
        enabled = true
        [[sources]]
        type = "tests.daemon_fakes:FakeWebhookSource"
        name = "shop"
        path = "orders.csv"
        webhook_secret = "shop-hook"
        [[destinations]]
        type = "tests.daemon_fakes:CheckedFileSink"
        name = "sink"
        problems = ["token lacks scope profiles:write"]
        """)
    result = CliRunner().invoke(main, ["doctor", "-c", str(path)])
    assert result.exit_code == 1
    out = result.output
    assert "ERR source shop: secret 'shop-hook' is not available" in out
    assert "fix: export RFM_SYNC_SECRET_SHOP_HOOK=... or run `rfm-sync secrets set shop-hook`" in out
    assert "ERR destination sink: token lacks scope profiles:write" in out and "fix: fix for token lacks" in out
    assert "ERR webhooks: webhooks are enabled but no source that accepts webhooks could be set up" in out
    assert "3 problem(s) found" in out


def test_doctor_prints_eligibility_warnings_from_the_last_run(write_config, write_csv):
    write_csv("customer_id,placed_at,amount\nc1,2025-01-01,10\nc2,2025-02-01,20\n")
    path = write_config(BASE + '[[destinations]]\ntype = "file"\nname = "sink"\n')
    assert CliRunner().invoke(main, ["run", "--once", "-c", str(path), "--as-of", "2026-01-01"]).exit_code == 0
    result = CliRunner().invoke(main, ["doctor", "-c", str(path)])
    assert "RFM eligibility: only 2 customers with orders" in result.output
    assert result.exit_code == 0  # warnings are not problems


def test_secrets_set_on_a_headless_machine_points_to_the_env_var(no_keyring):
    result = CliRunner().invoke(main, ["secrets", "set", "klaviyo-key"], input="pk_live_123\n")
    assert result.exit_code == 1
    assert "no OS keyring is available" in result.output and "RFM_SYNC_SECRET_KLAVIYO_KEY" in result.output
    assert "pk_live_123" not in result.output


@pytest.mark.parametrize("backend", ["fail", "null"])
def test_secrets_set_says_there_is_no_keyring_before_asking_for_the_value(backend):
    from keyring.backends import fail, null

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring() if backend == "fail" else null.Keyring())  # null keeps nothing
    try:
        result = CliRunner().invoke(main, ["secrets", "set", "klaviyo-key"], input="pk_live_123\n")
    finally:
        keyring.set_keyring(previous)
    assert result.exit_code == 1
    assert "value of secret" not in result.stdout  # never prompted: nothing typed in vain
    assert "no OS keyring is available" in result.stderr and "RFM_SYNC_SECRET_KLAVIYO_KEY=<value>" in result.stderr


PASTED = "pk_0a1b2c3d4e5f60718293a4b5c6d7e8f9ab"  # a Klaviyo private key's shape


def test_a_key_pasted_as_a_secret_name_is_not_echoed_by_doctor_or_secrets(write_config, write_csv, no_keyring):
    write_csv("customer_id,placed_at,amount\nc1,2026-01-01,10\n")
    path = write_config(BASE + f'[[destinations]]\ntype = "klaviyo"\nname = "k"\napi_key_secret = "{PASTED}"\n')
    result = CliRunner().invoke(main, ["doctor", "-c", str(path), "--offline"])
    assert result.exit_code == 2  # found when the config is read, as check-config finds it
    assert (
        "destinations[0].api_key_secret: it looks like a key or token was pasted where the secret's name "
        "belongs" in result.output
    )
    everything = result.output
    for args in (["secrets", "check", PASTED], ["secrets", "set", PASTED]):
        said = CliRunner().invoke(main, args, input="x\n")
        assert said.exit_code == 1 and "pasted where the secret's name belongs" in said.output
        assert "value of secret" not in said.output  # `set` asks for nothing
        everything += said.output
    assert PASTED not in everything and PASTED.upper() not in everything


class MemoryKeyring(KeyringBackend):
    priority = 1

    def __init__(self):
        super().__init__()
        self.data = {}

    def get_password(self, service, username):
        return self.data.get((service, username))

    def set_password(self, service, username, password):
        self.data[(service, username)] = password

    def delete_password(self, service, username):
        self.data.pop((service, username), None)


def test_secrets_set_stores_in_the_keyring_without_echo_and_env_overrides(monkeypatch):
    monkeypatch.delenv("RFM_SYNC_SECRET_KLAVIYO_KEY", raising=False)
    previous = keyring.get_keyring()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    try:
        result = CliRunner().invoke(main, ["secrets", "set", "klaviyo-key"], input="pk_live_123\n")
        assert result.exit_code == 0, result.output
        assert "pk_live_123" not in result.output
        assert memory.data[("rfm-sync", "klaviyo-key")] == "pk_live_123"
        assert secrets.resolve("klaviyo-key").reveal() == "pk_live_123"
        assert "from the OS keyring" in CliRunner().invoke(main, ["secrets", "check", "klaviyo-key"]).output
        monkeypatch.setenv("RFM_SYNC_SECRET_KLAVIYO_KEY", "pk_env")
        assert secrets.resolve("klaviyo-key").reveal() == "pk_env"
        assert "environment variable" in CliRunner().invoke(main, ["secrets", "check", "klaviyo-key"]).output
    finally:
        keyring.set_keyring(previous)


def record(msg, **extra):
    rec = logging.LogRecord("rfm_sync.x", logging.INFO, __file__, 1, msg, None, None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_json_log_lines_mask_emails_and_hide_credentials():
    line = logs.JsonFormatter().format(
        record(
            "push to jane.doe@example.com failed",
            api_key="pk_live_1",
            access_token="t0k",
            customer_key="email:bob@shop.io",
            pushed={"k": 3},
        )
    )
    data = json.loads(line)
    assert data["msg"] == "push to j***@example.com failed"
    assert data["api_key"] == "***" and data["access_token"] == "***"
    assert data["customer_key"] == "email:b***@shop.io" and data["pushed"] == {"k": 3}
    assert "pk_live_1" not in line and "jane.doe" not in line


def test_an_address_with_an_apostrophe_is_masked_whole():
    assert masking.mask("to o'neil@example.com") == "to o***@example.com"  # not "o'n***@": the local part is hidden


def test_format_auto_is_json_off_a_terminal_and_text_on_one():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        pipe, tty = io.StringIO(), Tty()
        logs.configure("INFO", "auto", pipe)
        logging.getLogger("rfm_sync.t").info("cycle step done", extra={"step": "pull", "seconds": 0.5})
        logs.configure("INFO", "auto", tty)
        logging.getLogger("rfm_sync.t").info("cycle step done", extra={"step": "pull", "seconds": 0.5})
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    assert json.loads(pipe.getvalue())["step"] == "pull"
    assert 'cycle step done  step="pull" seconds=0.5' in tty.getvalue()
