"""Fakes for the daemon tests, loadable by type name ("tests.daemon_fakes:FakeWebhookSource").

``FakeWebhookSource`` is a CSV source that also takes Shopify-style webhooks: it verifies
``X-Shopify-Hmac-Sha256`` (base64 HMAC-SHA256 of the raw body) with the secret its settings name,
and parses a REST order body. ``SlowFileSink`` is a file sink that takes its time per batch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from connectors.base import Order
from connectors.csv.source import CsvSettings, CsvSource
from connectors.file.destination import FileSink, FileSinkSettings


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify_order(order_id: int, customer_id: int, email: str, placed_at: str, total: str) -> bytes:
    return json.dumps(
        {
            "id": order_id,
            "created_at": placed_at,
            "updated_at": placed_at,
            "total_price": total,
            "currency": "EUR",
            "test": False,
            "cancelled_at": None,
            "email": email,
            "customer": {"id": customer_id, "email": email},
        }
    ).encode()


class FakeWebhookSettings(CsvSettings):
    type: str = "tests.daemon_fakes:FakeWebhookSource"
    webhook_secret: str = "test-hook"


class FakeWebhookSource(CsvSource):
    Settings = FakeWebhookSettings

    def __init__(self, settings: FakeWebhookSettings, context):
        super().__init__(settings, context)
        self._secret = context.secret(settings.webhook_secret)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        given = headers.get("x-shopify-hmac-sha256", "")
        return bool(given) and hmac.compare_digest(given, sign(self._secret.reveal(), body))

    def orders_from_webhook(self, topic: str, headers: Mapping[str, str], body: bytes) -> list[Order]:
        data = json.loads(body)
        return [
            Order(
                source=self.name,
                order_id=str(data["id"]),
                customer_id=str(data["customer"]["id"]),
                placed_at=datetime.fromisoformat(data["created_at"]),
                updated_at=datetime.fromisoformat(data["updated_at"]),
                amount=Decimal(data["total_price"]),
                email=data.get("email"),
                currency=data.get("currency"),
                is_test=bool(data.get("test")),
                is_cancelled=data.get("cancelled_at") is not None,
            )
        ]


class SlowSinkSettings(FileSinkSettings):
    type: str = "tests.daemon_fakes:SlowFileSink"
    delay_seconds: float = 0.0


class SlowFileSink(FileSink):
    Settings = SlowSinkSettings

    def push(self, updates):
        time.sleep(self.settings.delay_seconds)
        return super().push(updates)


class CheckedSinkSettings(FileSinkSettings):
    type: str = "tests.daemon_fakes:CheckedFileSink"
    problems: list[str] = []


class CheckedFileSink(FileSink):
    """A file sink with a self-check that reports the problems its settings list."""

    Settings = CheckedSinkSettings

    def check(self, online: bool = True):
        return [(p, f"fix for {p}") for p in self.settings.problems]
