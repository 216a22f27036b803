"""Ids and emails are trimmed of whitespace and control characters, ids with a NUL (or another
control character) inside and orders with placeholder dates are quarantined, an email that is not
an address is neither stored nor sent, an order id that names two customers is quarantined with
both lines, and a negative amount is reported as skipped: on both CSV reads, in the pipeline, and
in the Shopify and BigCommerce parsers (issue 12, items 3-6)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connectors.base import ConnectorContext, Order, PullContext, Quarantined
from connectors.bigcommerce.parse import order_from_json
from connectors.csv.source import CsvSettings, CsvSource
from connectors.shopify.parse import order_from_node, order_from_rest
from rfm_sync.config import load_config, parse_config
from rfm_sync.offline import aggregate_csv, score_csv
from rfm_sync.pipeline import Pipeline, customer_key, update_from_row
from rfm_sync.store import Store
from tests.configs import config_toml

AS_OF = date(2026, 6, 30)
HEADER = ["order_id", "customer_id", "email", "placed_at", "amount", "status"]


def write(tmp_path: Path, rows: list[list[str]], name: str = "orders.csv") -> Path:
    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def pull(path: Path) -> tuple[list[Order], list[Quarantined]]:
    """The CSV source's records: orders, and quarantined rows with notices (in the pipeline's order)."""
    from connectors.validate import with_notices

    source = CsvSource(
        CsvSettings(name="shop", path=str(path)),
        ConnectorContext(zone=ZoneInfo("UTC"), base_dir=path.parent, secret=None),
    )
    records = [r for page in source.pull(PullContext(cursor=None, started_at=None)) for r in page.records]
    records = list(with_notices(records))
    return [r for r in records if isinstance(r, Order)], [r for r in records if isinstance(r, Quarantined)]


def both(path: Path):
    config = parse_config({"rfm": {"scheme": "thresholds"}})
    settings = CsvSettings(name="csv", path=str(path))
    fast = aggregate_csv(path, settings, config, AS_OF)
    slow = aggregate_csv(path, settings, config, AS_OF, validate_all=True)
    fast.conn.close()
    slow.conn.close()
    return fast, slow


def frame(aggregates) -> dict[str, tuple[int, int]]:
    return {
        k: (n, m)
        for k, n, m in zip(
            aggregates.frame["customer_key"], aggregates.frame["orders"], aggregates.frame["monetary_e4"]
        )
    }


# ----------------------------------------------------------------- item 3: trimming, emails
@pytest.mark.slow
def test_a_trailing_tab_or_control_character_does_not_make_a_second_customer(tmp_path):
    path = write(
        tmp_path,
        [
            ["1", "c1", "", "2026-06-01", "10", "paid"],
            ["2", "c1\t", "", "2026-06-02", "5", "paid"],
            ["3", "\x0bc1\x1f\r\n", "", "2026-06-03", "1", "paid"],  # quoted: it holds a newline
            ["4", "", "Guest@Example.com\t", "2026-06-04", "2", "paid"],
            ["5", "", "guest@example.com", "2026-06-05", "3", "paid"],
            ["6", "c2", "Ann@Example.com\x0c", "2026-06-05", "3", "paid"],
        ],
    )
    orders, bad = pull(path)
    assert not bad
    assert sorted({o.customer_id for o in orders}) == ["c1", "c2", "email:guest@example.com"]
    assert {o.email for o in orders} == {None, "guest@example.com", "ann@example.com"}
    fast, slow = both(path)
    assert frame(fast) == frame(slow) == {"c1": (3, 160_000), "c2": (1, 30_000), "email:guest@example.com": (2, 50_000)}


@pytest.mark.slow
def test_an_email_that_is_not_an_address_is_dropped_with_a_notice_and_the_order_still_counts(tmp_path):
    path = write(
        tmp_path,
        [
            ["1", "c1", "not-an-email", "2026-06-01", "10", "paid"],
            ["2", "c2", "ann@exam\nple.com", "2026-06-01", "10", "paid"],
            ["3", "c3", "a\x00b@example.com", "2026-06-01", "10", "paid"],
            ["4", "c4", "ok@example.com", "2026-06-01", "10", "paid"],
            ["5", "", "nobody", "2026-06-01", "10", "paid"],
        ],
    )
    orders, bad = pull(path)
    assert {o.customer_id: o.email for o in orders} == {"c1": None, "c2": None, "c3": None, "c4": "ok@example.com"}
    reasons = {q.location: q.reason for q in bad}
    # physical lines: the second row's email holds a newline, so it spans lines 3-4 (issue 13, item 5)
    assert all("email is not an address" in reasons[f"orders.csv:{n}"] for n in (2, 3, 5, 7)), reasons
    assert "customer_id is empty" in reasons["orders.csv:7"]  # a guest without an address has no identity
    assert "nobody" not in "".join(reasons.values())  # the bad value is not copied into the report
    fast, slow = both(path)
    assert not fast.fast and fast.bad == slow.bad == 1
    assert frame(fast) == frame(slow) and set(frame(fast)) == {"c1", "c2", "c3", "c4"}


def test_the_pipeline_neither_stores_nor_sends_an_email_that_is_not_an_address(tmp_path):
    write(
        tmp_path,
        [
            ["1", "c1", "not-an-email", "2026-06-01", "10", "paid"],
            ["2", "c2", "b@example.com", "2026-06-01", "10", "paid"],
        ],
    )
    (tmp_path / "config.toml").write_text(config_toml("sqlite:///s.sqlite"))
    config = load_config(tmp_path / "config.toml")
    report = Pipeline(config, Store.open(config.store.url, config.base_dir)).run_cycle(AS_OF)
    assert report.scored == 2
    assert [(q["location"], "email is not an address" in q["reason"]) for q in report.quarantined] == [
        ("orders.csv:2", True)
    ]
    sent = [json.loads(line) for line in (tmp_path / "profiles.jsonl").read_text().splitlines()]
    assert {p["customer_key"]: p.get("email") for p in sent} == {"c1": None, "c2": "b@example.com"}


def test_merging_by_email_and_the_push_never_use_an_invalid_email():
    order = Order(
        source="s",
        order_id="1",
        customer_id="c1",
        placed_at=_utc("2026-01-01"),
        amount=Decimal(1),
        email="not-an-email",
    )
    assert customer_key(order, "email") == "c1"
    assert (
        customer_key(
            Order(
                source="s",
                order_id="1",
                customer_id="c1",
                placed_at=_utc("2026-01-01"),
                amount=Decimal(1),
                email=" A@B.co ",
            ),
            "email",
        )
        == "email:a@b.co"
    )
    row = {"id": 1, "customer_key": "c1", "payload": {"email": "a@b.c\x00", "properties": {}}}
    assert update_from_row(row).email is None
    row["payload"]["email"] = "a@b.co"
    assert update_from_row(row).email == "a@b.co"


# ----------------------------------------------------------------- item 4: NUL and controls in ids
@pytest.mark.parametrize(
    "order_id, customer, reason",
    [
        ("1", "a\x00b", "customer_id contains a control character"),
        ("1\x002", "c1", "order_id contains a NUL character"),
        ("1", "a\x1bb", "customer_id contains a control character"),
        ("1", "a\tb", "customer_id contains a control character"),
        ("1", "a\x7f", "customer_id contains a control character"),
    ],
)
def test_an_id_with_a_control_character_inside_is_quarantined_naming_the_column(tmp_path, order_id, customer, reason):
    path = write(
        tmp_path, [[order_id, customer, "", "2026-06-01", "10", "paid"], ["9", "c9", "", "2026-06-01", "10", "paid"]]
    )
    orders, bad = pull(path)
    assert [o.customer_id for o in orders] == ["c9"]
    assert [(q.location, q.reason) for q in bad] == [("orders.csv:2", reason)]
    assert "\x00" not in bad[0].raw
    fast, slow = both(path)
    assert not fast.fast and fast.bad == slow.bad == 1
    assert frame(fast) == frame(slow) == {"c9": (1, 100_000)}


@pytest.mark.slow
def test_an_order_id_keeps_other_control_characters_inside_on_both_reads(tmp_path):
    """Order ids never leave the store: only a NUL (which breaks it) quarantines one."""
    path = write(
        tmp_path, [["1\t2", "c1", "", "2026-06-01", "10", "paid"], ["1\x1b3", "c1", "", "2026-06-01", "5", "paid"]]
    )
    orders, bad = pull(path)
    assert not bad and sorted(o.order_id for o in orders) == ["1\t2", "1\x1b3"]
    fast, slow = both(path)
    assert fast.fast and frame(fast) == frame(slow) == {"c1": (2, 150_000)}


# ----------------------------------------------------------------- item 5: one order id, two customers
@pytest.mark.slow
def test_an_order_id_with_two_customers_is_quarantined_with_both_lines(tmp_path):
    path = write(
        tmp_path,
        [
            ["1", "c1", "", "2026-06-01", "10", "paid"],
            ["2", "c2", "", "2026-06-01", "7", "paid"],
            ["1", "c3", "", "2026-06-02", "10", "paid"],
            ["5", "c5", "", "2026-06-01", "4", "paid"],
            ["5", "c5", "", "2026-06-01", "6", "paid"],
        ],
    )  # a line-item export: same customer
    orders, bad = pull(path)
    assert sorted((o.order_id, o.customer_id) for o in orders) == [("2", "c2"), ("5", "c5"), ("5", "c5")]
    assert [(q.location, q.reason) for q in bad] == [
        ("orders.csv:2", "order id 1 appears with different customers on lines 2 and 4"),
        ("orders.csv:4", "order id 1 appears with different customers on lines 2 and 4"),
    ]
    fast, slow = both(path)
    assert not fast.fast and fast.bad == slow.bad == 2
    assert frame(fast) == frame(slow) == {"c2": (1, 70_000), "c5": (1, 60_000)}


# ----------------------------------------------------------------- item 6: negative amounts, absurd dates
@pytest.mark.slow
def test_placeholder_dates_are_quarantined_and_negative_amounts_reported_as_skipped(tmp_path):
    path = write(
        tmp_path,
        [
            ["1", "c1", "", "0001-01-01", "10", "paid"],
            ["2", "c2", "", "9999-12-31", "10", "paid"],
            ["3", "c3", "", "2026-06-01", "-5", "paid"],
            ["4", "c4", "", "2026-06-01", "-5", "refunded"],  # does not count anyway: no notice
            ["5", "c5", "", "2026-06-01", "0", "paid"],  # zero: an ordinary non-qualifying order
            ["6", "c6", "", "1989-12-31", "1", "paid"],
            ["7", "c7", "", "2099-12-31", "1", "paid"],
            ["8", "c8", "", "2026-06-01", "3", "paid"],
        ],
    )
    orders, bad = pull(path)
    assert sorted(o.customer_id for o in orders) == ["c3", "c4", "c5", "c7", "c8"]  # c3 is stored, never counts
    assert [(q.location, q.reason) for q in bad] == [
        ("orders.csv:2", "placed_at 0001-01-01 is outside 1990..2099"),
        ("orders.csv:3", "placed_at 9999-12-31 is outside 1990..2099"),
        ("orders.csv:4", "amount is negative (-5.0000): a refund larger than the order? not counted"),
        ("orders.csv:7", "placed_at 1989-12-31 is outside 1990..2099"),
    ]
    fast, slow = both(path)
    assert not fast.fast and fast.bad == slow.bad == 3 and fast.skipped == slow.skipped == 1
    assert frame(fast) == frame(slow) == {"c8": (1, 30_000)}


def test_score_lists_the_skipped_rows_with_the_quarantined_ones(tmp_path):
    path = write(
        tmp_path,
        [
            ["1", "c1", "", "0001-01-01", "10", "paid"],
            ["2", "c2", "", "2026-06-01", "-5", "paid"],
            ["3", "c3", "", "2026-06-01", "5", "paid"],
        ],
    )
    result = score_csv(path, tmp_path / "scores.csv", parse_config({}), AS_OF)
    assert (result.quarantined, result.skipped, result.customers) == (1, 1, 1)
    listed = list(csv.DictReader(result.quarantine_file.open()))
    assert [(r["line"], r["reason"].split(" (")[0].split(" 0001")[0]) for r in listed] == [
        ("2", "placed_at"),
        ("3", "amount is negative"),
    ]


# ----------------------------------------------------------------- the shops' parsers (and their webhooks)
def _utc(day: str):
    from datetime import datetime

    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def _node(**over):
    node = {
        "id": "gid://shopify/Order/1",
        "customer": {"id": "gid://shopify/Customer/7"},
        "email": "a@b.co",
        "processedAt": "2026-06-01T10:00:00Z",
        "updatedAt": "2026-06-01T10:00:00Z",
        "currentTotalPriceSet": {"shopMoney": {"amount": "10.00", "currencyCode": "EUR"}},
    }
    node.update(over)
    return node


def test_shopify_orders_get_the_same_checks():
    order = order_from_node("shop", _node(email="A@B.co\t"))
    assert isinstance(order, Order) and order.email == "a@b.co" and not order.notices
    order = order_from_node("shop", _node(email="not-an-email"))
    assert isinstance(order, Order) and order.email is None and order.customer_id == "7"
    assert [n.reason for n in order.notices] == ["email is not an address: the order counts, the email is not used"]
    guest = order_from_node("shop", _node(customer=None, email="nobody"))
    assert isinstance(guest, Quarantined) and "email is not an address" in guest.reason
    old = order_from_node("shop", _node(processedAt="0001-01-01T00:00:00Z"))
    assert isinstance(old, Quarantined) and old.reason == "placed_at 0001-01-01 is outside 1990..2099"
    refund = order_from_node("shop", _node(currentTotalPriceSet={"shopMoney": {"amount": "-1.50"}}))
    assert isinstance(refund, Order) and [n.reason for n in refund.notices] == [
        "amount is negative (-1.50): a refund larger than the order? not counted"
    ]
    nul = order_from_node("shop", _node(customer={"id": "gid://shopify/Customer/7\x008"}))
    assert isinstance(nul, Quarantined) and nul.reason == "customer_id contains a control character"
    webhook = order_from_rest(
        "shop",
        {"id": 1, "email": "x@y", "customer": {"id": 7}, "total_price": "5", "created_at": "2026-06-01T10:00:00Z"},
    )
    assert isinstance(webhook, Order) and webhook.email is None and webhook.notices


def test_bigcommerce_orders_get_the_same_checks():
    data = {
        "id": 1,
        "customer_id": 7,
        "status_id": 10,
        "total_inc_tax": "10.00",
        "refunded_amount": "0",
        "date_created": "Mon, 01 Jun 2026 10:00:00 +0000",
        "billing_address": {"email": "A@B.co\x0b"},
    }
    order = order_from_json("bc", data)
    assert isinstance(order, Order) and order.email == "a@b.co" and not order.notices
    order = order_from_json("bc", {**data, "billing_address": {"email": "a@b"}})
    assert isinstance(order, Order) and order.email is None and len(order.notices) == 1
    guest = order_from_json("bc", {**data, "customer_id": 0, "billing_address": {"email": "a@b"}})
    assert isinstance(guest, Quarantined)
    old = order_from_json("bc", {**data, "date_created": "Fri, 31 Dec 9999 00:00:00 +0000"})
    assert isinstance(old, Quarantined) and old.reason == "placed_at 9999-12-31 is outside 1990..2099"
    refund = order_from_json("bc", {**data, "refunded_amount": "12.00"})
    assert isinstance(refund, Order) and refund.amount == Decimal("-2.00") and len(refund.notices) == 1
    cancelled = order_from_json("bc", {**data, "status_id": 5, "refunded_amount": "12.00"})
    assert isinstance(cancelled, Order) and not cancelled.notices
