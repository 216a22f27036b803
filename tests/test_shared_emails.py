"""Customers keyed by id who share an email address (an account and a guest's orders) write one profile in
the platforms that match by email: the run says so, once per full run, with the fix."""

from __future__ import annotations

from rfm_sync.config import load_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store
from tests.configs import config_toml, table
from tests.test_pipeline import AS_OF, base_rows, day, write_orders


def run(tmp_path, rows, *sections):
    write_orders(tmp_path / "orders.csv", rows)
    (tmp_path / "config.toml").write_text(config_toml("sqlite:///s.sqlite", *sections))
    config = load_config(tmp_path / "config.toml")
    return Pipeline(config, Store.open(config.store.url, config.base_dir)).run_cycle(AS_OF)


def shared(report):
    return [w for w in report.warnings if "belong" in w and "more than one customer" in w]


def test_customers_sharing_an_email_are_a_warning_of_the_run(tmp_path):
    rows = base_rows() + [["g1", "guest-1", "C3@Example.com", day(9), "20.00", "paid"]]  # c03's address
    report = run(tmp_path, rows)
    assert shared(report) == [
        "1 email address belongs to more than one customer (an account and a guest's orders, say): a destination "
        "that matches profiles by email (Klaviyo, Mailchimp) keeps whichever of them changed last; [identity] "
        'merge_by = "email" makes them one customer (the Shopify write-back then skips them: it needs customer ids)'
    ]


def test_no_warning_when_every_address_is_one_customers_or_customers_merge_by_email(tmp_path):
    (tmp_path / "distinct").mkdir()
    assert shared(run(tmp_path / "distinct", base_rows())) == []
    rows = base_rows() + [["g1", "guest-1", "c3@example.com", day(9), "20.00", "paid"]]
    (tmp_path / "merged").mkdir()
    assert shared(run(tmp_path / "merged", rows, table("[identity]", merge_by="email"))) == []
