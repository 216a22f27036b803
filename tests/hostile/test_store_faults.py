"""Ordinary store faults end in one clear line and exit code 5, never a traceback, and leave nothing half-written."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rfm_sync import exit_codes
from rfm_sync.cli import main
from rfm_sync.store import Store
from rfm_sync.store.schema import orders, runs

CSV = "customer_id,placed_at,amount\nc1,2026-01-01,10\nc2,2026-02-01,20\n"


@pytest.fixture
def setup(write_config, write_csv):
    write_csv(CSV)
    return write_config("""
        [store]
        url = "sqlite:///data/s.sqlite"
        [[sources]]
        type = "csv"
        path = "orders.csv"
        [[destinations]]
        type = "file"
        path = "p.jsonl"
    """)


def invoke(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def store_path(config):
    return config.parent / "data" / "s.sqlite"


def make_store(config):
    assert invoke("run", "--once", "-c", str(config)).exit_code == 0
    return store_path(config)


def test_a_file_that_is_not_a_database(setup):
    path = store_path(setup)
    path.parent.mkdir()
    path.write_bytes(b"these are not the bytes of a database" * 200)
    result = invoke("status", "-c", str(setup))
    assert result.exit_code == exit_codes.STORE
    assert "not an rfm-sync store" in result.output and str(path) in result.output
    assert "file is not a database" in result.output  # the driver's own words, for the real cause


def test_a_damaged_database(setup):
    path = make_store(setup)
    data = bytearray(path.read_bytes())
    for page in range(2, len(data) // 4096):  # keep the header page, scramble the rest
        data[page * 4096 : page * 4096 + 4096] = bytes([0x5A]) * 4096
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    result = invoke("status", "-c", str(setup))
    assert result.exit_code == exit_codes.STORE
    assert "damaged" in result.output or "not an rfm-sync store" in result.output


def test_a_store_written_by_a_newer_rfm_sync(setup):
    path = make_store(setup)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    result = invoke("run", "--once", "-c", str(setup))
    assert result.exit_code == exit_codes.STORE
    assert "newer rfm-sync" in result.output and "0099" in result.output


def test_a_store_folder_that_cannot_be_created(setup):
    (setup.parent / "data").write_text("a file where the store's folder should be")
    result = invoke("run", "--once", "-c", str(setup))
    assert result.exit_code == exit_codes.STORE
    assert "cannot create the store's folder" in result.output


def test_a_read_only_store(setup, monkeypatch):
    make_store(setup)
    (setup.parent / "orders.csv").write_text(CSV + "c3,2026-03-01,30\n")
    import rfm_sync.store as store_module

    original = store_module._sqlite_pragmas

    def read_only(conn, record):
        original(conn, record)
        conn.execute("PRAGMA query_only = ON")  # as a file without write permission behaves

    monkeypatch.setattr(store_module, "_sqlite_pragmas", read_only)
    result = invoke("run", "--once", "-c", str(setup))
    assert result.exit_code == exit_codes.STORE
    assert "read-only" in result.output


@pytest.mark.slow
def test_a_full_disk_during_a_run_leaves_nothing_half_written(setup, monkeypatch):
    path = make_store(setup)
    rows = "".join(f"n{i},2026-03-01,{i + 1}\n" for i in range(3000))
    (setup.parent / "orders.csv").write_text(CSV + rows)
    import rfm_sync.store as store_module

    original = store_module._sqlite_pragmas

    def no_room(conn, record):
        original(conn, record)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk fills up as soon as the store grows

    monkeypatch.setattr(store_module, "_sqlite_pragmas", no_room)
    result = invoke("run", "--once", "-c", str(setup))
    monkeypatch.setattr(store_module, "_sqlite_pragmas", original)
    assert result.exit_code == exit_codes.STORE
    assert "full" in result.output
    store = Store.open(f"sqlite:///{path}")
    with store.engine.connect() as conn:  # the page of 3,000 orders was rolled back whole
        assert conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one() == 2
    store.close()


def test_store_errors_name_no_password():
    from rfm_sync.store.errors import where_of

    assert "s3cret" not in where_of("postgresql://rfm:s3cret@db.internal/rfm")


def test_a_destination_that_cannot_write_is_that_destination_s_failure(write_config, write_csv):
    """An OSError inside a push (the sink's path is a folder) fails that destination only: the run is
    recorded as partial, the other destination still gets every profile, and the CLI says which one."""
    write_csv(CSV)
    config = write_config("""
        [store]
        url = "sqlite:///s.sqlite"
        [[sources]]
        type = "csv"
        path = "orders.csv"
        [[destinations]]
        type = "file"
        name = "broken"
        path = "a-folder"
        [[destinations]]
        type = "file"
        name = "fine"
        path = "p.jsonl"
    """)
    (config.parent / "a-folder").mkdir()
    result = invoke("run", "--once", "-c", str(config))
    assert result.exit_code == exit_codes.FAILED
    assert "error: broken: " in result.output and "broken: broken" not in result.output
    assert len((config.parent / "p.jsonl").read_text().splitlines()) == 2
    store = Store.open(f"sqlite:///{config.parent / 's.sqlite'}")
    with store.engine.connect() as conn:
        status, error = conn.execute(sa.select(runs.c.status, runs.c.error)).one()
    store.close()
    assert status == "partial" and error.startswith("broken: ")


def test_a_plug_in_type_that_is_not_a_connector(write_config):
    config = write_config("""
        [[sources]]
        type = "os:system"
        path = "x"
    """)
    result = invoke("check-config", str(config))
    assert result.exit_code == exit_codes.CONFIG
    assert "sources[0].type" in result.output and "is not a source class" in result.output


def test_mostly_quarantined_rows_make_the_run_partial(write_config, write_csv):
    write_csv("customer_id,placed_at,amount\nc1,2026-01-01,10\nc2,not a date,20\nc3,,30\nc4,2026-01-01,lots\n")
    config = write_config("""
        [store]
        url = "sqlite:///s.sqlite"
        [pull]
        max_quarantine_share = 0.5
        [[sources]]
        type = "csv"
        path = "orders.csv"
    """)
    result = invoke("run", "--once", "-c", str(config))
    assert result.exit_code == exit_codes.FAILED
    assert "3 of 4 rows read (75%) were quarantined" in result.output
    status = invoke("status", "-c", str(config))
    assert "partial" in status.output


def test_a_failed_pull_is_logged_with_its_reason(write_config, caplog):
    config = write_config("""
        [store]
        url = "sqlite:///s.sqlite"
        [[sources]]
        type = "csv"
        path = "missing.csv"
    """)
    invoke("run", "--once", "-c", str(config))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pull failed")]
    assert lines and "missing.csv" in lines[0]


def test_health_says_failing_not_starting_after_a_failed_first_cycle():
    from rfm_sync.daemon.health import Health

    health = Health(max_age=timedelta(hours=1))
    assert health.check()[1]["status"] == "starting"
    health.failed("csv: orders.csv: No such file or directory")
    ready, body = health.check()
    assert not ready and body["status"] == "failing" and "orders.csv" in body["last_error"]
    health.succeeded()
    assert health.check() == (True, {**health.check()[1], "status": "ok"})
    health.failed("quarantine: 75% of rows quarantined")
    ready, body = health.check()
    assert ready and body["status"] == "degraded" and "quarantine" in body["last_error"]


@pytest.mark.parametrize("table,key", [("rfm", "window_days"), ("rfm", "recalibrate_days")])
def test_a_huge_window_is_a_config_error_not_an_overflow(write_config, table, key):
    config = write_config(f"""
        [{table}]
        {key} = 1000000
    """)
    result = invoke("check-config", str(config))
    assert result.exit_code == exit_codes.CONFIG and f"{table}.{key}" in result.output


def test_check_config_takes_c_like_every_command_and_version_is_there(write_config):
    config = write_config("[rfm]\nwindow_days = 365\n")
    assert invoke("check-config", "-c", str(config)).exit_code == 0
    assert invoke("check-config", str(config)).exit_code == 0
    assert invoke("check-config").exit_code == 2
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("rfm-sync ")
