"""Shops' own order exports score correctly through their presets (connectors/csv/presets.py).

The fixtures are written in each export's real layout: the column headers as public descriptions
of the exports give them (Shopify's "Export orders" CSV, BigCommerce's default order export, the
WooCommerce order export documented on woocommerce.com), every column present, rows shaped as the
shops write them (Shopify: one row per line item, the order's money fields on its first row only,
times like ``2026-03-08 13:09:00 -0500``). Each file has multi-item orders, a cancelled order, a
refund, a guest keyed by email and non-purchases; the expected frequency, monetary and recency of
every customer are worked out by hand in the comments, and checked through ``rfm-sync score`` and
through the pipeline source (``CsvSource.pull``).
"""

from __future__ import annotations

import csv
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from connectors.base import ConnectorContext, FatalError, Order, PullContext, Quarantined
from connectors.csv.scan import scan
from connectors.csv.source import CsvSettings, CsvSource
from rfm_sync import exit_codes
from rfm_sync.cli import main
from rfm_sync.config import ConfigError, parse_config

AS_OF = "2026-06-30"
ZONE = "America/New_York"

# Shopify's order export header, in its order (as public copies of real exports show it)
SHOPIFY_HEADER = [
    "Name",
    "Email",
    "Financial Status",
    "Paid at",
    "Fulfillment Status",
    "Fulfilled at",
    "Accepts Marketing",
    "Currency",
    "Subtotal",
    "Shipping",
    "Taxes",
    "Total",
    "Discount Code",
    "Discount Amount",
    "Shipping Method",
    "Created at",
    "Lineitem quantity",
    "Lineitem name",
    "Lineitem price",
    "Lineitem compare at price",
    "Lineitem sku",
    "Lineitem requires shipping",
    "Lineitem taxable",
    "Lineitem fulfillment status",
    "Billing Name",
    "Billing Street",
    "Billing Address1",
    "Billing Address2",
    "Billing Company",
    "Billing City",
    "Billing Zip",
    "Billing Province",
    "Billing Country",
    "Billing Phone",
    "Shipping Name",
    "Shipping Street",
    "Shipping Address1",
    "Shipping Address2",
    "Shipping Company",
    "Shipping City",
    "Shipping Zip",
    "Shipping Province",
    "Shipping Country",
    "Shipping Phone",
    "Notes",
    "Note Attributes",
    "Cancelled at",
    "Payment Method",
    "Payment Reference",
    "Refunded Amount",
    "Vendor",
    "Outstanding Balance",
    "Employee",
    "Location",
    "Device ID",
    "Id",
    "Tags",
    "Risk Level",
    "Source",
    "Lineitem discount",
    "Tax 1 Name",
    "Tax 1 Value",
    "Tax 2 Name",
    "Tax 2 Value",
    "Tax 3 Name",
    "Tax 3 Value",
    "Tax 4 Name",
    "Tax 4 Value",
    "Tax 5 Name",
    "Tax 5 Value",
    "Phone",
    "Receipt Number",
    "Duties",
    "Billing Province Name",
    "Shipping Province Name",
    "Payment ID",
    "Payment Terms Name",
    "Next Payment Due At",
    "Payment References",
]

# BigCommerce's default order export header (one row per order, products in "Product Details")
BIGCOMMERCE_HEADER = [
    "Order ID",
    "Customer ID",
    "Customer Name",
    "Customer Email",
    "Customer Phone",
    "Order Date",
    "Order Status",
    "Subtotal (inc tax)",
    "Subtotal (ex tax)",
    "Tax Total",
    "Shipping Cost (inc tax)",
    "Shipping Cost (ex tax)",
    "Ship Method",
    "Handling Cost (inc tax)",
    "Handling Cost (ex tax)",
    "Store Credit Redeemed",
    "Gift Certificate Amount Redeemed",
    "Gift Certificate Code",
    "Gift Certificate Expiration Date",
    "Coupon Details",
    "Order Total (inc tax)",
    "Order Total (ex tax)",
    "Payment Method",
    "Total Quantity",
    "Total Shipped",
    "Date Shipped",
    "Order Currency Code",
    "Exchange Rate",
    "Order Notes",
    "Customer Message",
    "Billing First Name",
    "Billing Last Name",
    "Billing Company",
    "Billing Street 1",
    "Billing Street 2",
    "Billing Suburb",
    "Billing State",
    "Billing Zip",
    "Billing Country",
    "Billing Phone",
    "Billing Email",
    "Shipping First Name",
    "Shipping Last Name",
    "Shipping Company",
    "Shipping Street 1",
    "Shipping Street 2",
    "Shipping Suburb",
    "Shipping State",
    "Shipping Zip",
    "Shipping Country",
    "Shipping Phone",
    "Shipping Email",
    "Product Details",
    "Refund Amount",
    "Channel ID",
    "Channel Name",
]

# the WooCommerce order export of woocommerce.com's "Import and Export of WooCommerce Orders"
WOOCOMMERCE_HEADER = [
    "order_id",
    "order_number",
    "order_date",
    "paid_date",
    "status",
    "shipping_total",
    "shipping_tax_total",
    "fee_total",
    "fee_tax_total",
    "tax_total",
    "cart_discount",
    "order_discount",
    "discount_total",
    "order_total",
    "order_subtotal",
    "order_currency",
    "payment_method",
    "payment_method_title",
    "transaction_id",
    "customer_ip_address",
    "customer_user_agent",
    "shipping_method",
    "customer_id",
    "customer_user",
    "customer_email",
    "billing_first_name",
    "billing_last_name",
    "billing_company",
    "billing_email",
    "billing_phone",
    "billing_address_1",
    "billing_address_2",
    "billing_postcode",
    "billing_city",
    "billing_state",
    "billing_country",
    "shipping_first_name",
    "shipping_last_name",
    "shipping_company",
    "shipping_phone",
    "shipping_address_1",
    "shipping_address_2",
    "shipping_postcode",
    "shipping_city",
    "shipping_state",
    "shipping_country",
    "customer_note",
    "wt_import_key",
    "shipping_items",
    "fee_items",
    "tax_items",
    "coupon_items",
    "refund_items",
    "order_notes",
    "download_permissions",
    "meta:wpml_language",
    "line_item_1",
    "line_item_2",
    "line_item_3",
]


def write_export(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    """The rows in the export's layout: every column of ``header``, those a row does not set empty."""
    unknown = {k for row in rows for k in row} - set(header)
    assert not unknown, f"fixture names columns the export does not have: {unknown}"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(c, "") for c in header])
    return path


def shopify_order(
    name: str,
    email: str,
    created: str,
    total: str,
    items: list[tuple[str, str, str]],
    *,
    status: str = "paid",
    refunded: str = "0.00",
    cancelled: str = "",
    gateway: str = "Shopify Payments",
    email_on_items: bool = True,
    order_id: str = "",
) -> list[dict[str, str]]:
    """One order as Shopify exports it: its first row carries the order (money, status, times, the
    customer's details) and its first line item; each further line item is a row with the order's
    name (and, as in some exports, its email) and the item's own columns, the order's columns empty."""
    (qty, title, price), *more = items
    first = {
        "Name": name,
        "Email": email,
        "Financial Status": status,
        "Paid at": created if status != "pending" else "",
        "Fulfillment Status": "fulfilled",
        "Accepts Marketing": "no",
        "Currency": "USD",
        "Subtotal": total,
        "Shipping": "0.00",
        "Taxes": "0.00",
        "Total": total,
        "Discount Amount": "0.00",
        "Shipping Method": "Standard",
        "Created at": created,
        "Lineitem quantity": qty,
        "Lineitem name": title,
        "Lineitem price": price,
        "Lineitem sku": title.upper()[:8],
        "Lineitem requires shipping": "true",
        "Lineitem taxable": "true",
        "Lineitem fulfillment status": "fulfilled",
        "Billing Name": email.split("@")[0],
        "Billing City": "Springfield",
        "Billing Country": "US",
        "Cancelled at": cancelled,
        "Payment Method": gateway,
        "Refunded Amount": refunded,
        "Vendor": "Acme",
        "Outstanding Balance": "0.00",
        "Id": order_id or name.lstrip("#") + "0001",
        "Risk Level": "Low",
        "Source": "web",
        "Lineitem discount": "0.00",
    }
    rows = [first]
    for qty, title, price in more:
        rows.append(
            {
                "Name": name,
                "Email": email if email_on_items else "",
                "Lineitem quantity": qty,
                "Lineitem name": title,
                "Lineitem price": price,
                "Lineitem sku": title.upper()[:8],
                "Lineitem requires shipping": "true",
                "Lineitem taxable": "true",
                "Lineitem fulfillment status": "fulfilled",
                "Vendor": "Acme",
                "Lineitem discount": "0.00",
            }
        )
    return rows


# Shop in New York, scored as of 2026-06-30. By hand:
#   ann:   #1001 34.98 (two line items), #1002 50.00 - 20.00 refunded = 30.00 (three items, the
#          item rows without the email), #1009 10.00 on 2026-06-15  -> 3 orders, 74.98, recency 15
#   bob:   #1003 80.00 cancelled (Cancelled at set, Financial Status still paid) does not count;
#          #1004 25.00 on 2026-06-01                                 -> 1 order, 25.00, recency 29
#   carol: #1005 12.50 at 2026-06-29 23:30 -0400 (03:30 UTC on the 30th: the 29th in New York),
#          her email in capitals and with a trailing space           -> 1 order, 12.50, recency 1
#   dave:  #1006 refunded in full (40.00 - 40.00 = 0), erin: #1007 voided, frank: #1008 paid through
#          the test gateway: none of them counts, so none is scored
SHOPIFY_ROWS = [
    *shopify_order(
        "#1001",
        "ann@example.com",
        "2026-03-08 13:09:00 -0500",
        "34.98",
        [("2", "Crew Tee - Black / S", "9.99"), ("1", "Mug", "15.00")],
    ),
    *shopify_order(
        "#1002",
        "ann@example.com",
        "2026-05-01 09:00:00 -0400",
        "50.00",
        [("1", "Hoodie", "30.00"), ("1", "Cap", "12.00"), ("2", "Sticker", "4.00")],
        status="partially_refunded",
        refunded="20.00",
        email_on_items=False,
    ),
    *shopify_order(
        "#1003",
        "bob@example.com",
        "2026-04-01 10:00:00 -0400",
        "80.00",
        [("1", "Jacket", "80.00")],
        cancelled="2026-04-02 10:00:00 -0400",
    ),
    *shopify_order(
        "#1004",
        "bob@example.com",
        "2026-06-01 08:30:00 -0400",
        "25.00",
        [("1", "Socks", "10.00"), ("1", "Beanie", "15.00")],
    ),
    *shopify_order("#1005", "CAROL@Example.com ", "2026-06-29 23:30:00 -0400", "12.50", [("1", "Pin", "12.50")]),
    *shopify_order(
        "#1006",
        "dave@example.com",
        "2026-05-20 11:00:00 -0400",
        "40.00",
        [("2", "Scarf", "20.00")],
        status="refunded",
        refunded="40.00",
    ),
    *shopify_order(
        "#1007", "erin@example.com", "2026-05-21 11:00:00 -0400", "15.00", [("1", "Gloves", "15.00")], status="voided"
    ),
    *shopify_order(
        "#1008",
        "frank@example.com",
        "2026-05-22 11:00:00 -0400",
        "99.00",
        [("1", "Boots", "99.00")],
        gateway="(for testing) Bogus Gateway",
    ),
    *shopify_order("#1009", "ann@example.com", "2026-06-15 12:00:00 -0400", "10.00", [("1", "Patch", "10.00")]),
]
SHOPIFY_EXPECTED = {
    "email:ann@example.com": (3, "74.98", 15),
    "email:bob@example.com": (1, "25.00", 29),
    "email:carol@example.com": (1, "12.50", 1),
}


def bigcommerce_order(
    order_id: str,
    customer_id: str,
    email: str,
    date: str,
    status: str,
    total: str,
    products: list[tuple[str, str, str]],
    *,
    refund: str = "0.0000",
    billing_email: str = "",
) -> dict[str, str]:
    details = "|".join(
        f"Product ID: {i}, Product Qty: {q}, Product SKU: SKU-{i}, Product Name: {n}, "
        f"Product Weight: 1.0000, Product Variation Details: , Product Unit Price: {p}, "
        f"Product Total Price: {p}"
        for i, (q, n, p) in enumerate(products, 1)
    )
    return {
        "Order ID": order_id,
        "Customer ID": customer_id,
        "Customer Name": "A Shopper",
        "Customer Email": email,
        "Customer Phone": "555-0100",
        "Order Date": date,
        "Order Status": status,
        "Subtotal (inc tax)": total,
        "Subtotal (ex tax)": total,
        "Tax Total": "0.0000",
        "Shipping Cost (inc tax)": "0.0000",
        "Shipping Cost (ex tax)": "0.0000",
        "Ship Method": "Free Shipping",
        "Order Total (inc tax)": total,
        "Order Total (ex tax)": total,
        "Payment Method": "Credit Card",
        "Total Quantity": str(len(products)),
        "Total Shipped": "0",
        "Order Currency Code": "USD",
        "Exchange Rate": "1.0000000000",
        "Billing First Name": "A",
        "Billing Last Name": "Shopper",
        "Billing Email": billing_email or email,
        "Billing Country": "United States",
        "Product Details": details,
        "Refund Amount": refund,
        "Channel ID": "1",
        "Channel Name": "Default",
    }


# By hand (New York, as of 2026-06-30; dates month/day/year, without a time: midnight in the shop):
#   ann (customer 12): order 100 34.98 on 03/08, 101 50.00 partially refunded 20.00 = 30.00 on 05/01
#                                                               -> 2 orders, 64.98, recency 60
#   guest (customer 0, only the billing email, in capitals): 102 12.50 on 06/29 -> 1, 12.50, recency 1
#   bob (customer 13): 103 80.00 Cancelled; 104 25.00 Shipped on 06/01          -> 1, 25.00, recency 29
#   erin: 105 Declined; dave: 106 Refunded in full: not scored
BIGCOMMERCE_ROWS = [
    bigcommerce_order(
        "100",
        "12",
        "ann@example.com",
        "03/08/2026",
        "Completed",
        "34.9800",
        [("2", "Crew Tee, Black", "19.9800"), ("1", "Mug", "15.0000")],
    ),
    bigcommerce_order(
        "101",
        "12",
        "ann@example.com",
        "05/01/2026",
        "Partially Refunded",
        "50.0000",
        [("1", "Hoodie", "30.0000"), ("1", "Cap", "20.0000")],
        refund="20.0000",
    ),
    bigcommerce_order(
        "102",
        "0",
        "",
        "06/29/2026",
        "Awaiting Fulfillment",
        "12.5000",
        [("1", "Pin", "12.5000")],
        billing_email="Guest@Example.COM",
    ),
    bigcommerce_order(
        "103", "13", "bob@example.com", "04/01/2026", "Cancelled", "80.0000", [("1", "Jacket", "80.0000")]
    ),
    bigcommerce_order(
        "104",
        "13",
        "bob@example.com",
        "06/01/2026",
        "Shipped",
        "25.0000",
        [("1", "Socks", "10.0000"), ("1", "Beanie", "15.0000")],
    ),
    bigcommerce_order(
        "105", "14", "erin@example.com", "05/21/2026", "Declined", "15.0000", [("1", "Gloves", "15.0000")]
    ),
    bigcommerce_order(
        "106",
        "15",
        "dave@example.com",
        "05/20/2026",
        "Refunded",
        "40.0000",
        [("2", "Scarf", "20.0000")],
        refund="40.0000",
    ),
]
BIGCOMMERCE_EXPECTED = {
    "email:ann@example.com": (2, "64.98", 60),
    "email:guest@example.com": (1, "12.50", 1),
    "email:bob@example.com": (1, "25.00", 29),
}


def woocommerce_order(
    order_id: str,
    customer_id: str,
    email: str,
    date: str,
    status: str,
    total: str,
    items: list[tuple[str, str, str]],
    *,
    billing_email: str = "",
) -> dict[str, str]:
    row = {
        "order_id": order_id,
        "order_number": order_id,
        "order_date": date,
        "paid_date": date if status in ("completed", "processing", "wc-completed") else "",
        "status": status,
        "shipping_total": "0.00",
        "shipping_tax_total": "0.00",
        "fee_total": "0.00",
        "fee_tax_total": "0.00",
        "tax_total": "0.00",
        "cart_discount": "0.00",
        "order_discount": "0.00",
        "discount_total": "0.00",
        "order_total": total,
        "order_subtotal": total,
        "order_currency": "USD",
        "payment_method": "stripe",
        "payment_method_title": "Credit Card (Stripe)",
        "shipping_method": "Flat rate",
        "customer_id": customer_id,
        "customer_user": customer_id,
        "customer_email": email,
        "billing_first_name": "A",
        "billing_last_name": "Shopper",
        "billing_email": billing_email or email,
        "billing_phone": "555-0100",
        "billing_country": "US",
        "shipping_items": "method_id:flat_rate|total:0.00",
    }
    for i, (qty, name, price) in enumerate(items, 1):
        row[f"line_item_{i}"] = f"name:{name}|product_id:{100 + i}|sku:SKU-{i}|quantity:{qty}|total:{price}"
    return row


# By hand (New York, as of 2026-06-30; times without an offset are the shop's):
#   ann (customer 7): 2001 34.98 completed on 03/08, 2002 30.00 processing on 05/01 -> 2, 64.98, recency 60
#   guest (customer 0, billing email only): 2003 12.50 "wc-completed" at 2026-06-29 23:30 -> 1, 12.50, recency 1
#   bob (customer 8): 2004 80.00 cancelled; 2005 25.00 completed on 06/01            -> 1, 25.00, recency 29
#   erin: 2006 on-hold (awaiting payment); dave: 2007 refunded; 2008 failed: not scored
WOOCOMMERCE_ROWS = [
    woocommerce_order(
        "2001",
        "7",
        "ann@example.com",
        "2026-03-08 13:09:00",
        "completed",
        "34.98",
        [("2", "Crew Tee", "19.98"), ("1", "Mug", "15.00")],
    ),
    woocommerce_order(
        "2002", "7", "ann@example.com", "2026-05-01 09:00:00", "processing", "30.00", [("1", "Hoodie", "30.00")]
    ),
    woocommerce_order(
        "2003",
        "0",
        "",
        "2026-06-29 23:30:00",
        "wc-completed",
        "12.50",
        [("1", "Pin", "12.50")],
        billing_email="Guest@Example.COM",
    ),
    woocommerce_order(
        "2004", "8", "bob@example.com", "2026-04-01 10:00:00", "cancelled", "80.00", [("1", "Jacket", "80.00")]
    ),
    woocommerce_order(
        "2005",
        "8",
        "bob@example.com",
        "2026-06-01 08:30:00",
        "completed",
        "25.00",
        [("1", "Socks", "10.00"), ("1", "Beanie", "15.00")],
    ),
    woocommerce_order(
        "2006", "9", "erin@example.com", "2026-05-21 11:00:00", "on-hold", "15.00", [("1", "Gloves", "15.00")]
    ),
    woocommerce_order(
        "2007", "10", "dave@example.com", "2026-05-20 11:00:00", "refunded", "40.00", [("2", "Scarf", "20.00")]
    ),
    woocommerce_order(
        "2008", "10", "dave@example.com", "2026-05-22 11:00:00", "failed", "40.00", [("2", "Scarf", "20.00")]
    ),
]
WOOCOMMERCE_EXPECTED = {
    "email:ann@example.com": (2, "64.98", 60),
    "email:guest@example.com": (1, "12.50", 1),
    "email:bob@example.com": (1, "25.00", 29),
}

EXPORTS = {
    "shopify-export": (SHOPIFY_HEADER, SHOPIFY_ROWS, SHOPIFY_EXPECTED),
    "bigcommerce-export": (BIGCOMMERCE_HEADER, BIGCOMMERCE_ROWS, BIGCOMMERCE_EXPECTED),
    "woocommerce-export": (WOOCOMMERCE_HEADER, WOOCOMMERCE_ROWS, WOOCOMMERCE_EXPECTED),
}


def config_for(tmp_path: Path, preset: str, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(f"""\
        [shop]
        timezone = "{ZONE}"

        [[sources]]
        type = "csv"
        name = "export"
        path = "orders_export.csv"
        preset = "{preset}"
        """)
        + textwrap.dedent(extra),
        encoding="utf-8",
    )
    return path


def score(tmp_path: Path, orders: Path, config: Path):
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        main, ["score", "--orders", str(orders), "--out", str(out), "--as-of", AS_OF, "--quiet", "-c", str(config)]
    )
    return result, out


def scored(out: Path) -> dict[str, tuple[int, str, int]]:
    with out.open(newline="") as fh:
        return {
            r["customer_id"]: (int(r["frequency"]), r["monetary"], int(r["recency_days"])) for r in csv.DictReader(fh)
        }


def pull(path: Path, settings: CsvSettings) -> list[Order | Quarantined]:
    source = CsvSource(settings, ConnectorContext(zone=ZoneInfo(ZONE), base_dir=path.parent, secret=None))
    return [r for page in source.pull(PullContext(cursor=None, started_at=datetime.now(UTC))) for r in page.records]


def by_hand(orders: list[Order]) -> dict[str, tuple[int, str, int]]:
    """frequency, monetary and recency from pulled orders, as the engine defines them: orders that
    count (not test or cancelled, amount above zero), days from the last one's local date to AS_OF."""
    zone, as_of = ZoneInfo(ZONE), datetime.fromisoformat(AS_OF).date()
    out: dict[str, list] = {}
    for o in orders:
        if o.is_test or o.is_cancelled or o.amount <= 0:
            continue
        n, total, last = out.get(o.customer_id, (0, Decimal(0), None))
        day = o.placed_at.astimezone(zone).date()
        out[o.customer_id] = [n + 1, total + o.amount, max(day, last) if last else day]
    return {k: (n, f"{total:.2f}", (as_of - last).days) for k, (n, total, last) in out.items()}


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(EXPORTS))
def test_an_export_scores_through_its_preset_as_computed_by_hand(tmp_path, preset):
    header, rows, expected = EXPORTS[preset]
    orders = write_export(tmp_path / "orders_export.csv", header, rows)
    result, out = score(tmp_path, orders, config_for(tmp_path, preset))
    assert result.exit_code == 0, result.output
    assert scored(out) == expected
    assert not (tmp_path / "scores.csv.quarantine.csv").exists()  # no row of a real export is bad


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(EXPORTS))
def test_the_pipeline_source_reads_an_export_through_its_preset(tmp_path, preset):
    header, rows, expected = EXPORTS[preset]
    orders = write_export(tmp_path / "orders_export.csv", header, rows)
    records = pull(orders, CsvSettings(name="export", path=str(orders), preset=preset))
    assert not [r for r in records if isinstance(r, Quarantined)]
    pulled = [r for r in records if isinstance(r, Order)]
    # one record per order, line items folded, each placed at its real instant
    order_rows = {r.get("Name") or r.get("Order ID") or r.get("order_id") for r in rows}
    assert sorted(o.order_id for o in pulled) == sorted(order_rows)
    assert by_hand(pulled) == expected


@pytest.mark.slow
def test_shopify_orders_read_exactly(tmp_path):
    """Each Shopify order: its name as order id, net amount, UTC time, flags and status."""
    orders = write_export(tmp_path / "orders_export.csv", SHOPIFY_HEADER, SHOPIFY_ROWS)
    got = {o.order_id: o for o in pull(orders, CsvSettings(name="export", path=str(orders), preset="shopify-export"))}
    utc = UTC
    assert got["#1001"].placed_at == datetime(2026, 3, 8, 18, 9, tzinfo=utc)  # 13:09 at -0500
    assert got["#1001"].amount == Decimal("34.98") and got["#1001"].email == "ann@example.com"
    assert got["#1002"].amount == Decimal("30.00") and got["#1002"].status == "partially_refunded"
    assert got["#1002"].customer_id == "email:ann@example.com"  # its item rows have no email: the order's counts
    assert got["#1003"].is_cancelled and not got["#1003"].is_test and got["#1003"].status == "paid"
    assert got["#1005"].placed_at == datetime(2026, 6, 30, 3, 30, tzinfo=utc)
    assert got["#1005"].customer_id == "email:carol@example.com"
    assert got["#1006"].amount == Decimal("0.00") and not got["#1006"].is_cancelled
    assert got["#1007"].is_cancelled  # voided
    assert got["#1008"].is_test and not got["#1008"].is_cancelled
    assert got["#1004"].currency == "USD"


def test_order_time_and_other_date_forms_are_read(tmp_path):
    """BigCommerce's Order Time joins its Order Date; the date forms the presets know all read."""
    header = [
        "Order ID",
        "Order Status",
        "Order Date",
        "Order Time",
        "Order Total (inc tax)",
        "Customer ID",
        "Customer Email",
        "Refund Amount",
    ]
    rows = [
        {
            "Order ID": "1",
            "Order Status": "Completed",
            "Order Date": "3/8/2026",
            "Order Time": "6:29:00",
            "Order Total (inc tax)": "$10.00",
            "Customer ID": "1",
            "Customer Email": "a@example.com",
        },
        {
            "Order ID": "2",
            "Order Status": "Completed",
            "Order Date": "Mar 13th 2026",
            "Order Time": "",
            "Order Total (inc tax)": "10.00",
            "Customer ID": "1",
            "Customer Email": "a@example.com",
        },
        {
            "Order ID": "3",
            "Order Status": "Completed",
            "Order Date": "Mon, 23 Mar 2026 14:21:24 +0000",
            "Order Total (inc tax)": "10.00",
            "Customer ID": "1",
            "Customer Email": "a@example.com",
        },
        {
            "Order ID": "4",
            "Order Status": "Completed",
            "Order Date": "2026-03-24T10:00:00+01:00",
            "Order Total (inc tax)": "10.00",
            "Customer ID": "1",
            "Customer Email": "a@example.com",
        },
        {
            "Order ID": "5",
            "Order Status": "Completed",
            "Order Date": "the 3rd of March",
            "Order Total (inc tax)": "10.00",
            "Customer ID": "1",
            "Customer Email": "a@example.com",
        },
    ]
    orders = write_export(tmp_path / "orders.csv", header, rows)
    records = pull(orders, CsvSettings(name="bc", path=str(orders), preset="bigcommerce-export"))
    got = {r.order_id: r.placed_at for r in records if isinstance(r, Order)}
    ny = ZoneInfo(ZONE)
    assert got == {
        "1": datetime(2026, 3, 8, 6, 29, tzinfo=ny),
        "2": datetime(2026, 3, 13, tzinfo=ny),
        "3": datetime(2026, 3, 23, 14, 21, 24, tzinfo=UTC),
        "4": datetime(2026, 3, 24, 9, tzinfo=UTC),
    }
    [bad] = [r for r in records if isinstance(r, Quarantined)]
    assert (bad.location, bad.reason) == ("orders.csv:6", "placed_at is not a date/time: the 3rd of March")


@pytest.mark.slow
def test_folding_never_loses_an_order_silently(tmp_path):
    """An order with no total on any line is one quarantined record (its first line); lines of one
    order naming two emails quarantine it; an email written only on a later line is the order's."""
    rows = [
        {"Name": "#1", "Created at": "2026-03-08 13:09:00 -0500", "Lineitem name": "Tee", "Financial Status": "paid"},
        {"Name": "#1", "Email": "a@example.com", "Lineitem name": "Mug"},
        {"Name": "#2", "Email": "b@example.com", "Created at": "2026-03-08 13:09:00 -0500", "Total": "5.00"},
        {"Name": "#2", "Email": "c@example.com", "Lineitem name": "Mug"},
        {"Name": "#3", "Created at": "2026-03-09 10:00:00 -0500", "Total": "7.00"},
        {"Name": "#3", "Email": "D@example.com", "Lineitem name": "Mug"},
    ]
    orders = write_export(tmp_path / "orders.csv", SHOPIFY_HEADER, rows)
    records = pull(orders, CsvSettings(name="s", path=str(orders), preset="shopify-export"))
    assert [(r.location, r.reason) for r in records if isinstance(r, Quarantined)] == [
        ("orders.csv:2", "amount is empty"),
        ("orders.csv:4", "order id #2 appears with different emails on lines 4 and 5"),
    ]
    [order] = [r for r in records if isinstance(r, Order)]
    assert (order.order_id, order.customer_id, order.amount) == ("#3", "email:d@example.com", Decimal("7.00"))


@pytest.mark.slow
def test_explicit_settings_override_the_preset(tmp_path):
    """columns.customer_id keys BigCommerce customers by their id (a guest's 0 falls back to the
    email); cancelled_statuses set in the source replace the preset's list."""
    orders = write_export(tmp_path / "orders_export.csv", BIGCOMMERCE_HEADER, BIGCOMMERCE_ROWS)
    config = config_for(
        tmp_path,
        "bigcommerce-export",
        """
        cancelled_statuses = ["cancelled", "refunded"]
        [sources.columns]
        customer_id = "Customer ID"
        """,
    )
    result, out = score(tmp_path, orders, config)
    assert result.exit_code == 0, result.output
    # erin's Declined order counts now (15.00 on 05/21: 40 days); the guest is keyed by email
    assert scored(out) == {
        "12": (2, "64.98", 60),
        "email:guest@example.com": (1, "12.50", 1),
        "13": (1, "25.00", 29),
        "14": (1, "15.00", 40),
    }


def test_an_explicit_column_the_file_lacks_is_named(tmp_path):
    orders = write_export(tmp_path / "orders_export.csv", SHOPIFY_HEADER, SHOPIFY_ROWS)
    settings = CsvSettings(name="s", path=str(orders), preset="shopify-export", columns={"customer_id": "Customer"})
    with pytest.raises(FatalError, match=r"customer_id \(column 'Customer' of \[sources.columns\]\)"):
        scan(orders, settings, ZoneInfo(ZONE))


def test_a_file_that_is_not_the_export_is_refused_naming_the_preset(tmp_path):
    orders = write_export(tmp_path / "orders_export.csv", WOOCOMMERCE_HEADER, WOOCOMMERCE_ROWS)
    result, _ = score(tmp_path, orders, config_for(tmp_path, "shopify-export"))
    assert result.exit_code == exit_codes.FAILED
    assert "not Shopify's order export as preset 'shopify-export' reads it" in result.output
    assert "order_id (column 'Name')" in result.output and "amount (column 'Total')" in result.output
    assert "Traceback" not in result.output


def test_an_unknown_preset_is_a_config_error_naming_the_key_and_the_choices(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"sources": [{"type": "csv", "path": "o.csv", "preset": "shopify"}]})
    [problem] = err.value.problems
    assert "sources[0].preset" in problem
    assert all(name in problem for name in ("'shopify-export'", "'bigcommerce-export'", "'woocommerce-export'"))


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(EXPORTS))
def test_score_takes_the_preset_on_the_command_line_without_a_config(tmp_path, preset, monkeypatch):
    header, rows, expected = EXPORTS[preset]
    orders = write_export(tmp_path / "orders_export.csv", header, rows)
    config = tmp_path / "shop.toml"  # only the shop's time zone: no [[sources]] table at all
    config.write_text(f'[shop]\ntimezone = "{ZONE}"\n', encoding="utf-8")
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        main,
        [
            "score",
            "--orders",
            str(orders),
            "--out",
            str(out),
            "--as-of",
            AS_OF,
            "--quiet",
            "--preset",
            preset,
            "-c",
            str(config),
        ],
    )
    assert result.exit_code == 0, result.output
    assert scored(out) == expected
