"""`rfm-sync demo` replaces only files it wrote itself; a real set-up's folder is refused untouched."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rfm_sync import exit_codes
from rfm_sync.cli import main

pytestmark = pytest.mark.slow  # whole demo runs

USER_CONFIG = b'[store]\nurl = "sqlite:///rfm-sync.sqlite"\n# my real shop\n'
USER_ORDERS = b"customer_id,placed_at,amount\nreal-1,2026-01-01T00:00:00Z,99.00\n"


def demo(folder):
    return CliRunner().invoke(main, ["demo", "--dir", str(folder), "--customers", "300"])


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_demo_refuses_a_real_setup_and_leaves_it_byte_identical(tmp_path):
    (tmp_path / "config.toml").write_bytes(USER_CONFIG)
    (tmp_path / "orders.csv").write_bytes(USER_ORDERS)
    before = snapshot(tmp_path)
    result = demo(tmp_path)
    assert result.exit_code == exit_codes.REFUSED, result.output
    assert "not made by `rfm-sync demo`" in result.output and "Traceback" not in result.output
    assert snapshot(tmp_path) == before


def test_demo_refuses_any_non_empty_folder_without_its_marker(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert demo(tmp_path).exit_code == exit_codes.REFUSED
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_demo_runs_again_in_its_own_folder_and_keeps_other_files(tmp_path):
    folder = tmp_path / "rfm-sync-demo"
    assert demo(folder).exit_code == 0
    marker = json.loads((folder / ".rfm-sync-demo").read_text())
    assert {"orders.csv", "config.toml", "rfm-sync.sqlite", "profiles.jsonl"} <= set(marker["files"])
    (folder / "my-notes.txt").write_text("keep me")
    result = demo(folder)
    assert result.exit_code == 0, result.output
    assert (folder / "my-notes.txt").read_text() == "keep me"
    # a fresh store and sink each time: two cycles, every customer's profile once per cycle at most
    lines = (folder / "profiles.jsonl").read_text().splitlines()
    keys = [json.loads(line)["customer_key"] for line in lines]
    assert keys and max(keys.count(k) for k in set(keys)) <= 2


def test_demo_refuses_its_folder_when_a_file_it_wrote_was_edited_or_added(tmp_path):
    folder = tmp_path / "d"
    assert demo(folder).exit_code == 0
    edited = (folder / "config.toml").read_bytes() + b"\n# my change\n"
    (folder / "config.toml").write_bytes(edited)
    result = demo(folder)
    assert result.exit_code == exit_codes.REFUSED and "changed since the demo wrote it" in result.output
    assert (folder / "config.toml").read_bytes() == edited
