"""`rfm-sync doctor` finds what would stop a run: a damaged store, a missing export, an unwritable sink
folder, a missing credential; it shows the store driver's own message; `--offline` sends nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses
from click.testing import CliRunner

from connectors.base import ConnectorContext, FatalError
from connectors.bigcommerce.source import BigCommerceSettings, BigCommerceSource
from connectors.csv.source import CsvSettings, CsvSource
from connectors.file.destination import FileSink, FileSinkSettings
from connectors.klaviyo.destination import KlaviyoDestination, KlaviyoSettings
from connectors.mailchimp.destination import MailchimpDestination, MailchimpSettings
from connectors.meta.destination import MetaAudiencesDestination, MetaAudiencesSettings
from connectors.shopify.source import ShopifySettings, ShopifySource
from rfm_sync.cli import main
from rfm_sync.secrets import Secret, SecretError
from rfm_sync.store import Store
from tests.configs import config_toml, file_sink

CONFIG = config_toml("sqlite:///data/s.sqlite", destinations=[file_sink(path="out/profiles.jsonl")])


def doctor(config: Path, *extra: str):
    result = CliRunner().invoke(main, ["doctor", "-c", str(config), *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def orders(n: int) -> str:
    return "order_id,customer_id,placed_at,amount,email\n" + "".join(
        f"o{i},c{i % 700},2025-{1 + i % 12:02d}-{1 + i % 28:02d},{1 + i % 500}.25,u{i % 700}@example.com\n"
        for i in range(n)
    )


# ---------------------------------------------------------------------------------------- the store
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["cells", "whole pages"])
def test_a_store_that_opens_but_has_damaged_pages_is_a_problem(write_config, write_csv, damage):
    write_csv(orders(3000))
    config = write_config(CONFIG)
    assert CliRunner().invoke(main, ["run", "-c", str(config), "--as-of", "2026-01-01"]).exit_code == 0
    path = config.parent / "data" / "s.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    for page in range(pages // 2, pages // 2 + 3):  # orders, customers, state and outbox rows live there
        start = page * 4096 + (512 if damage == "cells" else 0)
        data[start : page * 4096 + 4096] = b"\x5a" * (page * 4096 + 4096 - start)
    path.write_bytes(bytes(data))
    Store.open(f"sqlite:///{path}").close()  # it still opens and migrates: only a full check sees the damage

    result = doctor(config)
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if line.startswith("ERR store"))
    assert str(path) in line
    assert "PRAGMA quick_check" in line and ("out of order" in line or "malformed" in line or "page" in line)
    assert "restore the store from a backup" in result.output
    assert "no problems found" not in result.output


def test_a_store_that_cannot_be_opened_says_why_in_the_driver_s_words(write_config, write_csv):
    write_csv(orders(3))
    config = write_config(CONFIG)
    (config.parent / "data").mkdir()
    (config.parent / "data" / "s.sqlite").write_bytes(b"not a database at all" * 300)
    result = doctor(config)
    assert result.exit_code == 1
    assert "ERR store: cannot open the store:" in result.output
    assert "file is not a database" in result.output  # the real cause, not just "StoreError"
    assert "fix: point [store] url at the right file, or restore it from a backup" in result.output


def test_every_built_in_connector_has_a_check_that_can_stay_offline():
    import inspect

    from connectors.registry import DESTINATIONS, SOURCES, connector_class

    for kind, table in (("source", SOURCES), ("destination", DESTINATIONS)):
        for type_ in table:
            check = getattr(connector_class(kind, type_), "check", None)
            assert callable(check), f"{kind} {type_} has no check()"
            assert inspect.signature(check).parameters["online"].default is True, f"{kind} {type_}"


# ---------------------------------------------------------------------------------------- CSV source
def test_a_missing_export_is_a_problem(write_config):
    config = write_config(CONFIG)
    result = doctor(config)
    assert result.exit_code == 1
    assert f"ERR source shop: {config.parent / 'orders.csv'}: no such file" in result.output
    assert "1 problem(s) found" in result.output


def test_a_header_without_the_mapped_columns_is_a_problem(write_config, write_csv):
    write_csv("Customer,Date,Total\nc1,2026-01-01,10\n")
    config = write_config(
        CONFIG + '[sources.columns]\ncustomer_id = "Customer"\nplaced_at = "Date"\norder_id = "Order Number"\n'
    )
    out = doctor(config).output
    assert "missing required column(s): amount (column 'amount'); the header has 'Customer', 'Date', 'Total'" in out
    assert "maps order_id = 'Order Number', but the header has no such column" in out
    assert "2 problem(s) found" in out


def test_a_csv_check_reads_only_the_header(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("customer_id,placed_at,amount\n" + "c1,not a date,x\n" * 10)
    src = CsvSource(CsvSettings(name="shop", path=str(path)), context(tmp_path))
    assert src.check() == [] and src.check(online=False) == []  # bad rows are quarantined by a pull, not here
    path.unlink()
    path.mkdir()
    [(problem, fix)] = src.check()
    assert problem == f"{path}: not a file" and "CSV file itself" in fix


@pytest.mark.parametrize("preset", ["shopify-export", "bigcommerce-export", "woocommerce-export"])
def test_a_shop_s_own_export_is_checked_through_its_preset(tmp_path, preset):
    from tests.test_csv_presets import EXPORTS, WOOCOMMERCE_HEADER, WOOCOMMERCE_ROWS, write_export

    header, rows, _ = EXPORTS[preset]
    path = write_export(tmp_path / "orders_export.csv", header, rows)
    src = CsvSource(CsvSettings(name="shop", path=str(path), preset=preset), context(tmp_path))
    assert src.check() == []  # its own column names are what the preset reads, not ours
    if preset != "woocommerce-export":
        write_export(path, WOOCOMMERCE_HEADER, WOOCOMMERCE_ROWS)  # another shop's export
        [(problem, fix)] = src.check()
        assert f"as preset {preset!r} reads it: missing column(s)" in problem and "remove the preset" in fix


# ---------------------------------------------------------------------------------------- file sink
@pytest.fixture
def unwritable(tmp_path):
    """A folder this user cannot create files in: mode 0555, or for root (who ignores modes) the
    immutable attribute; skipped where neither is possible."""
    folder = tmp_path / "out"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root and this file system has no immutable attribute (chattr +i)")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_sink_folder_that_takes_no_file_is_a_problem(write_config, write_csv, unwritable):
    write_csv(orders(3))
    config = write_config(CONFIG)
    result = doctor(config)
    assert result.exit_code == 1
    assert f"ERR destination sink: {unwritable}: cannot write in the sink's folder" in result.output
    assert list(unwritable.iterdir()) == []


def test_the_sink_check_leaves_no_file_behind(tmp_path):
    sink = FileSink(FileSinkSettings(name="sink", path="out/p.jsonl"), context(tmp_path))
    assert sink.check() == []
    assert list((tmp_path / "out").iterdir()) == []  # its probe is gone, and the sink file is not created
    (tmp_path / "out" / "p.jsonl").write_text('{"customer_key": "c1"}\n')
    before = (tmp_path / "out" / "p.jsonl").stat()
    assert sink.check() == []
    after = (tmp_path / "out" / "p.jsonl").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


# ---------------------------------------------------------------------------------------- HTTP connectors
def context(tmp_path: Path, secrets: dict[str, str] | None = None) -> ConnectorContext:
    def secret(name: str) -> Secret:
        if secrets is None or name not in secrets:
            raise SecretError(f"secret {name!r} is not set")
        return Secret(name, secrets[name])

    return ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=secret)


HTTP = {
    "shopify": (ShopifySource, ShopifySettings, {"shop": "s", "token_secret": "t", "base_url": "http://127.0.0.1:9"}),
    "bigcommerce": (
        BigCommerceSource,
        BigCommerceSettings,
        {"store_hash": "abc", "token_secret": "t", "base_url": "http://127.0.0.1:9"},
    ),
    "klaviyo": (KlaviyoDestination, KlaviyoSettings, {"api_key_secret": "t", "base_url": "http://127.0.0.1:9"}),
    "mailchimp": (
        MailchimpDestination,
        MailchimpSettings,
        {"api_key_secret": "t", "audience_id": "a1", "base_url": "http://127.0.0.1:9"},
    ),
    "meta_audiences": (
        MetaAudiencesDestination,
        MetaAudiencesSettings,
        {
            "access_token_secret": "t",
            "base_url": "http://127.0.0.1:9",
            "audiences": [{"audience_id": "1", "groups": ["Loyal"]}],
        },
    ),
}


@pytest.mark.parametrize("kind", sorted(HTTP))
def test_an_offline_check_proves_the_credentials_are_set_and_sends_nothing(tmp_path, kind):
    cls, settings_cls, table = HTTP[kind]
    settings = settings_cls(name=kind, **table)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        [(problem, fix)] = cls(settings, context(tmp_path)).check(online=False)
        assert "secret 't' is not set" in problem and "set that secret" in fix
        assert cls(settings, context(tmp_path, {"t": "tok-123"})).check(online=False) == []
        assert len(rsps.calls) == 0


def test_the_bigcommerce_check_lists_one_order_with_the_token(tmp_path):
    base = "http://127.0.0.1:9/stores/abc/v2/orders"
    settings = BigCommerceSettings(name="bc", store_hash="abc", token_secret="t", base_url="http://127.0.0.1:9")
    with responses.RequestsMock() as rsps:
        rsps.get(
            base,
            json=[],
            match=[
                responses.matchers.header_matcher({"X-Auth-Token": "good"}),
                responses.matchers.query_param_matcher({"limit": "1", "page": "1"}),
            ],
        )
        assert BigCommerceSource(settings, context(tmp_path, {"t": "good"})).check() == []
        rsps.get(base, status=401, json=[{"status": 401, "message": "No credentials"}])
        with pytest.raises(FatalError, match="HTTP 401.*store_v2_orders_read_only"):
            BigCommerceSource(settings, context(tmp_path, {"t": "bad"})).check()


def test_doctor_offline_reaches_no_service(write_config, write_csv, monkeypatch):
    write_csv(orders(3))
    monkeypatch.setenv("RFM_SYNC_SECRET_KLAVIYO_KEY", "pk_test_abc")
    config = write_config(
        CONFIG + '[[destinations]]\ntype = "klaviyo"\nname = "klaviyo"\n'
        'api_key_secret = "klaviyo-key"\nbase_url = "http://127.0.0.1:9"\n'
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        result = doctor(config, "--offline")
        assert len(rsps.calls) == 0
    assert result.exit_code == 0, result.output
    assert "ok  destination klaviyo: self-check passed (offline: nothing was sent)" in result.output
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get("http://127.0.0.1:9/api/profile-bulk-import-jobs", status=401, json={"errors": []})
        online = doctor(config)
        assert len(rsps.calls) == 1  # online (the default): one authenticated read
    assert online.exit_code == 1 and "ERR destination klaviyo:" in online.output and "401" in online.output
