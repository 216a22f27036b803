"""Hostile CSV files (issue 13, item 5): one bad line must not sink the file, and no file may sink
the machine. Each case goes through ``rfm-sync score`` (the CLI) and the pipeline's
``CsvSource.pull``: a Windows-1252 or Latin-1 export, UTF-16, a semicolon- or tab-delimited file,
a 10 MB field, a 10 MB header, a header of 700,000 columns, and line numbers after newlines
inside quotes and blank lines. A file-level fault is one line on stderr (exit 1, as every
connector failure of ``score``), never a traceback; a bad line is quarantined with its physical line."""

from __future__ import annotations

import csv
import gc
import random
import tempfile
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from connectors.base import ConnectorContext, FatalError, Order, PullContext, Quarantined
from connectors.csv import file as csv_file
from connectors.csv.scan import scan
from connectors.csv.source import CsvSettings, CsvSource
from rfm_sync import exit_codes
from rfm_sync.cli import main

AS_OF = "2026-06-30"
HEADER = "order_id,customer_id,email,placed_at,amount,status"
MB10 = 10 * 1024 * 1024
E_ACUTE = "\u00e9".encode("cp1252")


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path, monkeypatch):
    """Temporary files (the transcoded copies) go to a folder of the test's, checked empty afterwards."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    gc.collect()  # a connection (and with it its transcoded copy) goes when it is collected
    assert list(folder.iterdir()) == []


def rows(n: int, start: int = 0) -> list[str]:
    return [
        f"o{i},c{i % 7},c{i % 7}@example.com,2026-0{1 + i % 6}-1{i % 10},{10 + i % 50}.50,paid"
        for i in range(start, start + n)
    ]


def write_bytes(tmp_path: Path, data: bytes, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def settings_toml(**settings: object) -> str:
    return "".join(
        f"{k} = {v!r}\n".replace("'", '"') if isinstance(v, str) else f"{k} = {v}\n" for k, v in settings.items()
    )


def score(tmp_path: Path, path: Path, **settings: object):
    """``rfm-sync score`` on ``path``; with settings, through a config whose csv source has them."""
    args = ["score", "--orders", str(path), "--out", str(tmp_path / "scores.csv"), "--as-of", AS_OF, "--quiet"]
    if settings:
        config = tmp_path / "config.toml"
        config.write_text(
            '[[sources]]\ntype = "csv"\nname = "export"\npath = "orders.csv"\n'
            + settings_toml(**settings).replace('"\t"', '"\\t"'),
            encoding="utf-8",
        )
        args += ["-c", str(config)]
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def one_error_line(result) -> str:
    """The CLI failed as a connector does (exit 1) with exactly one line on stderr."""
    assert result.exit_code == exit_codes.FAILED, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def pull(path: Path, **settings: object) -> tuple[list[Order], list[Quarantined]]:
    source = CsvSource(
        CsvSettings(name="export", path=str(path), **settings),
        ConnectorContext(zone=ZoneInfo("UTC"), base_dir=path.parent, secret=None),
    )
    records = [r for page in source.pull(PullContext(cursor=None, started_at=None)) for r in page.records]
    return [r for r in records if isinstance(r, Order)], [r for r in records if isinstance(r, Quarantined)]


def pull_fails(path: Path, **settings: object) -> str:
    with pytest.raises(FatalError) as caught:
        pull(path, **settings)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("export: ")
    return message


def quarantine(tmp_path: Path) -> list[dict[str, str]]:
    with (tmp_path / "scores.csv.quarantine.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def scored_customers(tmp_path: Path) -> set[str]:
    with (tmp_path / "scores.csv").open(newline="", encoding="utf-8") as fh:
        return {row["customer_id"] for row in csv.DictReader(fh)}


# ----------------------------------------------------------------- encodings
EXCEL = (
    "order_id,customer_id,email,placed_at,amount,status,note\r\n"
    "1,José,jose@example.com,2026-06-01,10.00,paid,“gift” for 5 €\r\n"
    "2,Zoë,zoe@example.com,2026-06-02,20.00,paid,‘thanks’ – ok\r\n"
    "3,plain,plain@example.com,2026-06-03,30.00,paid,\r\n"
)


def test_an_excel_windows_1252_export_is_read_with_encoding_cp1252(tmp_path, own_tempdir):
    path = write_bytes(tmp_path, EXCEL.encode("cp1252"))
    assert b"\x80" in path.read_bytes() and b"\x93" in path.read_bytes()  # € and a smart quote: not Latin-1
    result = score(tmp_path, path, encoding="cp1252")
    assert result.exit_code == 0, result.output
    assert scored_customers(tmp_path) == {"José", "Zoë", "plain"}
    orders, bad = pull(path, encoding="windows-1252")
    assert {o.customer_id for o in orders} == {"José", "Zoë", "plain"} and not bad
    gc.collect()
    assert list(own_tempdir.iterdir()) == []  # the transcoded copy went with its connection


def test_a_windows_1252_export_read_as_utf8_stops_naming_the_line_the_byte_and_cp1252(tmp_path):
    text = (
        "order_id,customer_id,email,placed_at,amount,status,note\n"
        '1,a,a@example.com,2026-06-01,10.00,paid,"two\nlines"\n'
        "\n"
        "2,Jos\u00e9,j@example.com,2026-06-02,20.00,paid,\n"
    )
    data = text.encode("cp1252")
    path = write_bytes(tmp_path, data)
    expected = f"line 5 is not valid utf-8 (byte {data.index(E_ACUTE):,}: 0xE9)"
    line = one_error_line(score(tmp_path, path))
    assert str(path) in line and expected in line and 'encoding = "cp1252"' in line, line
    message = pull_fails(path)
    assert expected in message and 'encoding = "cp1252"' in message
    assert not (tmp_path / "scores.csv").exists()


def test_a_latin1_file_is_read_with_encoding_latin1(tmp_path):
    path = write_bytes(tmp_path, f"{HEADER}\n1,Fran\u00e7ois,f@example.com,2026-06-01,10,paid\n".encode("latin-1"))
    assert score(tmp_path, path, encoding="latin-1").exit_code == 0
    assert scored_customers(tmp_path) == {"François"}
    assert {o.customer_id for o in pull(path, encoding="latin1")[0]} == {"François"}


def test_a_utf16_file_is_read_with_encoding_utf16_and_named_without_it(tmp_path):
    path = write_bytes(tmp_path, f"{HEADER}\r\n1,Ren\u00e9e,r@example.com,2026-06-01,10,paid\r\n".encode("utf-16"))
    assert score(tmp_path, path, encoding="utf-16").exit_code == 0
    assert scored_customers(tmp_path) == {"Renée"}
    assert {o.customer_id for o in pull(path, encoding="utf-16")[0]} == {"Renée"}
    line = one_error_line(score(tmp_path, path))
    assert "line 1 is not valid utf-8" in line and 'encoding = "utf-16"' in line, line
    assert 'encoding = "utf-16"' in pull_fails(path)


def test_a_byte_windows_1252_does_not_define_is_named_with_a_latin1_hint(tmp_path):
    data = f"{HEADER}\n1,a,a@example.com,2026-06-01,10,paid\n2,b\x81,b@example.com,2026-06-01,10,paid\n".encode(
        "latin-1"
    )
    path = write_bytes(tmp_path, data)
    expected = f"line 3 is not valid cp1252 (byte {data.index(bytes([0x81])):,}: 0x81)"
    line = one_error_line(score(tmp_path, path, encoding="cp1252"))
    assert expected in line and 'encoding = "latin-1"' in line, line
    assert expected in pull_fails(path, encoding="cp1252")


def test_an_unknown_encoding_is_a_configuration_error(tmp_path):
    path = write_bytes(tmp_path, f"{HEADER}\n".encode())
    result = score(tmp_path, path, encoding="klingon")
    assert result.exit_code == exit_codes.CONFIG and "unknown encoding 'klingon'" in result.stderr, result.output
    with pytest.raises(ValueError, match="unknown encoding"):
        CsvSettings(name="x", path="x.csv", encoding="klingon")


# ----------------------------------------------------------------- delimiters
@pytest.mark.parametrize("delimiter, toml", [(";", '";"'), ("\t", '"\\t"'), ("|", '"|"')])
def test_another_delimiter_is_named_in_the_error_and_read_when_set(tmp_path, delimiter, toml):
    text = "\n".join(r.replace(",", delimiter) for r in [HEADER] + rows(20)) + "\n"
    path = write_bytes(tmp_path, text.encode())
    line = one_error_line(score(tmp_path, path))
    assert "missing required column(s)" in line and f"set delimiter = {toml}" in line, line
    assert f"set delimiter = {toml}" in pull_fails(path)
    assert score(tmp_path, path, delimiter=delimiter).exit_code == 0
    assert scored_customers(tmp_path) == {f"c{i}" for i in range(7)}
    orders, bad = pull(path, delimiter=delimiter)
    assert len(orders) == 20 and not bad


# ----------------------------------------------------------------- monster lines
@pytest.mark.slow  # scale
def test_a_10_mb_field_is_one_quarantined_line_and_the_rest_is_read(tmp_path):
    body = rows(1000)
    body[0] = "0,c0,c0@example.com,2026-01-01,1.00,paid"  # the same 7 customers either way
    body[9] = 'o9,c2,"an address\nover two lines",2026-01-01,1.00,paid'  # lines after it move down one
    body[499] = 'o499,c5,"' + "y" * MB10 + '",2026-01-01,1.00,paid'
    path = write_bytes(tmp_path, ("\n".join([HEADER] + body) + "\n").encode())
    result = score(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert quarantine(tmp_path) == [
        {
            "file": str(path),
            "line": "502",
            "reason": "the line is longer than max_line_bytes = 2,000,000 bytes (not read)",
        }
    ]
    orders, bad = pull(path)
    assert len(orders) == 999
    assert [(q.location, q.reason) for q in bad] == [
        ("orders.csv:502", "the line is longer than max_line_bytes = 2,000,000 bytes (not read)")
    ]
    assert len(bad[0].raw) <= 200


def test_max_line_bytes_can_be_raised_to_read_a_long_line(tmp_path):
    path = write_bytes(
        tmp_path, (f"{HEADER},note\n" + "\n".join([f"{r},{'n' * 3000}" for r in rows(3)]) + "\n").encode()
    )
    assert [q.location for q in pull(path, max_line_bytes=2048)[1]] == ["orders.csv:2", "orders.csv:3", "orders.csv:4"]
    orders, bad = pull(path, max_line_bytes=8192)
    assert len(orders) == 3 and not bad


def test_a_10_mb_header_is_one_clear_fatal_line(tmp_path):
    path = write_bytes(tmp_path, (HEADER + ",note_" + "x" * MB10 + "\n" + "\n".join(rows(10)) + "\n").encode())
    expected = "line 1 (the header) is longer than max_line_bytes = 2,000,000 bytes"
    assert expected in one_error_line(score(tmp_path, path))
    assert expected in pull_fails(path)


def test_a_header_of_700_000_columns_is_one_clear_fatal_line(tmp_path):
    # DuckDB's sniffer reported "18.8 GiB/18.8 GiB used" on this one before giving up
    path = write_bytes(tmp_path, (HEADER + ",x" * 700_000 + "\n" + "\n".join(rows(10)) + "\n").encode())
    expected = "line 1 (the header) has 700,006 columns (at most 10,000)"
    assert expected in one_error_line(score(tmp_path, path))
    assert expected in pull_fails(path)


@pytest.mark.slow
def test_a_memory_limit_too_small_names_the_setting(tmp_path):
    path = write_bytes(tmp_path, ("\n".join([HEADER] + rows(200_000)) + "\n").encode())
    message = pull_fails(path, memory_limit="4MB")
    assert 'needed more than memory_limit = "4MB"' in message and "raise memory_limit" in message


# ----------------------------------------------------------------- line numbers
LINES = (
    "order_id,customer_id,email,placed_at,amount,status,note\r\n"  # 1
    '1,a,a@example.com,2026-06-01,10,paid,"first\r\nsecond"\r\n'  # 2-3
    "\r\n"  # 4: blank (DuckDB skips it)
    "2,b,b@example.com,not a date,10,paid,\r\n"  # 5
    '3,c,c@example.com,2026-06-01,10,paid,"a\n\nb ""quoted"" c"\r\n'  # 6-8
    "\n"  # 9: blank
    "4,,,2026-06-01,10,paid,\r\n"  # 10
    "5,d,d@example.com,2026-06-01,ten,paid,"
)  # 11, no newline at the end


@pytest.mark.slow
@pytest.mark.parametrize("irregular", [False, True], ids=["quoting", "stray-quote"])
def test_a_bad_row_is_named_by_the_physical_line_it_starts_on(tmp_path, irregular):
    text = LINES.replace("1,a,", '1,a 5" tv,') if irregular else LINES  # a quote inside an unquoted field
    path = write_bytes(tmp_path, text.encode())
    assert score(tmp_path, path).exit_code == 0
    assert [(q["line"], q["reason"].split(":")[0]) for q in quarantine(tmp_path)] == [
        ("5", "placed_at is not a date/time"),
        ("10", "customer_id is empty (and no email to identify a guest)"),
        ("11", "amount is not a number"),
    ]
    orders, bad = pull(path)
    assert [q.location for q in bad] == ["orders.csv:5", "orders.csv:10", "orders.csv:11"]
    assert {o.customer_id for o in orders} == {'a 5" tv' if irregular else "a", "c"}


def expected_file(rng: random.Random) -> tuple[bytes, list[int]]:
    """A random file: records with quoted newlines, escaped quotes, CRLF and blank lines; and the
    line each record starts on, counted by construction."""
    newline = rng.choice(["\n", "\r\n"])
    out, starts, line = [HEADER.replace(",status", ',"sta\ntus"') + newline], [], 3
    for i in range(rng.randint(0, 40)):
        if rng.random() < 0.2:
            blank = rng.choice(["\n", "\r\n"])
            out.append(blank)
            line += 1
        note = rng.choice(["", "plain", '"q ""x"" q"', '"one\ntwo"', '"a\r\nb\n\nc"', '","'])
        out.append(f"o{i},c{i},,2026-06-01,1,paid,{note}" + newline)
        starts.append(line)
        line += note.count("\n") + 1
    if rng.random() < 0.5 and out[-1].endswith(newline) and starts:
        out[-1] = out[-1][: -len(newline)]
    return "".join(out).encode(), starts


@pytest.mark.slow  # scale
@pytest.mark.parametrize("steps", [csv_file.MAX_CASE_STEPS, 0], ids=["case", "asof-join"])
def test_line_numbers_match_the_lines_records_start_on_across_block_boundaries(tmp_path, monkeypatch, steps):
    monkeypatch.setattr(csv_file, "MAX_CASE_STEPS", steps)
    rng = random.Random(13)
    for size in (1, 2, 3, 7, 64, 1 << 20):  # the survey's block size: every boundary case
        monkeypatch.setattr(csv_file, "CHUNK", size)
        for _ in range(8):
            data, starts = expected_file(rng)
            path = write_bytes(tmp_path, data)
            settings = CsvSettings(name="x", path=str(path), columns={"status": "sta\ntus"})
            conn = scan(path, settings, ZoneInfo("UTC"), parallel=False).conn
            got = [r[0] for r in conn.execute("SELECT line FROM raw ORDER BY line").fetchall()]
            conn.close()
            assert got == starts, (size, data)


def test_a_file_that_is_not_utf8_after_a_long_clean_part_names_the_right_line(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_file, "CHUNK", 64)  # the bad byte far from the first block
    body = rows(30)
    body[25] = body[25].replace("c4@", "c4\u00e9@")
    data = ("\n".join([HEADER] + body) + "\n").encode("cp1252")
    path = write_bytes(tmp_path, data)
    assert f"line 27 is not valid utf-8 (byte {data.index(E_ACUTE):,}: 0xE9)" in pull_fails(path)


def test_run_reports_a_file_fault_as_the_source_error_with_exit_1(tmp_path):
    path = write_bytes(tmp_path, EXCEL.encode("cp1252"))
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(f"""
        [store]
        url = "sqlite:///{tmp_path / "s.sqlite"}"
        [[sources]]
        type = "csv"
        name = "export"
        path = "{path.name}"
        [[destinations]]
        type = "file"
        path = "p.jsonl"
    """),
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["run", "-c", str(config), "--as-of", AS_OF])
    assert result.exit_code == exit_codes.FAILED, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "line 2 is not valid utf-8" in errors[0] and 'encoding = "cp1252"' in errors[0]


def test_a_stray_byte_in_a_utf8_file_is_named_as_a_damaged_line(tmp_path):
    data = (
        f"{HEADER}\n1,Zo\u00eb,z@example.com,2026-06-01,10,paid\n".encode()
        + b"2,b\xff,b@example.com,2026-06-01,10,paid\n"
    )
    path = write_bytes(tmp_path, data)
    line = one_error_line(score(tmp_path, path))
    assert f"line 3 is not valid utf-8 (byte {data.index(bytes([0xFF])):,}: 0xFF)" in line
    assert "the lines before it hold utf-8 text, so this line may be damaged" in line, line
    assert "may be damaged" in pull_fails(path)


def test_no_room_for_the_utf8_copy_is_one_line(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tmp"))

    monkeypatch.setattr(csv_file.tempfile, "mkstemp", full)
    path = write_bytes(tmp_path, EXCEL.encode("cp1252"))
    line = one_error_line(score(tmp_path, path, encoding="cp1252"))
    assert "cannot read it" in line and "No space left on device" in line, line
    assert "No space left on device" in pull_fails(path, encoding="cp1252")


@pytest.mark.slow  # scale
def test_a_preset_export_names_the_physical_line_too(tmp_path):
    from tests.test_csv_presets import SHOPIFY_HEADER, shopify_order, write_export

    rows = shopify_order(
        "#1", "ann@example.com", "2026-06-01 10:00:00 -0400", "10.00", [("1", "Mug", "10.00")]
    ) + shopify_order("#2", "bob@example.com", "not a date", "20.00", [("1", "Cap", "20.00")])
    rows[0]["Notes"] = "leave at\nthe back door"  # the first order spans lines 2-3
    path = write_export(tmp_path / "orders.csv", SHOPIFY_HEADER, rows)
    assert score(tmp_path, path, preset="shopify-export").exit_code == 0
    assert [(q["line"], q["reason"].split(":")[0]) for q in quarantine(tmp_path)] == [
        ("4", "placed_at is not a date/time")
    ]
    assert [q.location for q in pull(path, preset="shopify-export")[1]] == ["orders.csv:4"]


# ----------------------------------------------------------------- shapes of the file itself
def test_an_empty_file_says_so(tmp_path):
    path = write_bytes(tmp_path, b"")
    assert "the file is empty" in one_error_line(score(tmp_path, path))
    assert "the file is empty" in pull_fails(path)


def test_a_required_column_named_twice_is_refused_not_guessed(tmp_path):
    path = write_bytes(tmp_path, b"customer_id,customer_id,placed_at,amount\nc1,c2,2026-01-01,5\n")
    line = one_error_line(score(tmp_path, path))
    assert "'customer_id' more than once" in line
    assert "'customer_id' more than once" in pull_fails(path)
    assert not (tmp_path / "scores.csv").exists()


def test_a_column_nobody_maps_may_repeat(tmp_path):
    path = write_bytes(tmp_path, b"customer_id,note,placed_at,note,amount\nc1,a,2026-01-01,b,5\n")
    assert score(tmp_path, path).exit_code == 0
    assert scored_customers(tmp_path) == {"c1"}


def test_a_quote_never_closed_is_named_as_such(tmp_path):
    path = write_bytes(tmp_path, b'customer_id,placed_at,amount\n"c1,2026-01-01,5\nc2,2026-01-02,6\nc3,2026-01-03,7\n')
    result = score(tmp_path, path)
    assert result.exit_code == 0
    [row] = quarantine(tmp_path)
    assert row["line"] == "2" and "a quote opened here and never closed?" in row["reason"]
    _, bad = pull(path)
    assert [q.location for q in bad] == ["orders.csv:2"] and "never closed" in bad[0].reason
