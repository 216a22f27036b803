"""The CSV source: an orders export, ``customer_id,placed_at,amount`` required; ``order_id,email,phone,
status,currency,refunded,updated_at`` optional; column names mappable.

The file is read and checked by :mod:`connectors.csv.scan` (the same scan ``rfm-sync score``
uses); this module holds the settings and turns the scan's rows into records. As a source, the
cursor is the file's SHA-256: an unchanged export is not read again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import validate
from ..base import ConnectorContext, ConnectorSettings, Order, Page, PullContext, Quarantined
from . import file, presets

if TYPE_CHECKING:
    import duckdb


class ColumnNames(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: str = "customer_id"
    placed_at: str = "placed_at"
    amount: str = "amount"
    order_id: str = "order_id"
    email: str = "email"
    phone: str = "phone"
    status: str = "status"
    currency: str = "currency"
    refunded: str = "refunded"
    updated_at: str = "updated_at"


class CsvSettings(ConnectorSettings):
    type: str = "csv"
    path: str
    delimiter: str = Field(",", min_length=1, max_length=1)
    # the file's encoding (any Python codec name: "utf-8", "cp1252" for Excel's CSV, "latin-1", "utf-16");
    # anything but UTF-8 is transcoded to a temporary UTF-8 file first (see connectors/csv/file.py)
    encoding: str = "utf-8"
    # a line longer than this is quarantined (the header: fatal); DuckDB's own default
    max_line_bytes: int = Field(2_000_000, ge=1024, le=1 << 30)
    # DuckDB's memory for reading the file (its default is 80% of the machine's)
    memory_limit: str = Field("2GB", pattern=r"(?i)^\s*\d+(\.\d+)?\s*[KMGT]i?B\s*$")
    columns: ColumnNames = ColumnNames()
    # statuses (case-insensitive) that are not purchases
    cancelled_statuses: list[str] = ["cancelled", "canceled", "voided", "declined", "failed", "refunded"]
    test_statuses: list[str] = ["test"]
    page_size: int = Field(5000, gt=0)
    # a shop's own export (connectors/csv/presets.py): its columns, times and line-item rows;
    # `columns` entries and the status lists set here override the preset's
    preset: presets.PresetName | None = None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return file.normalize_encoding(value)


def file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


class CsvSource:
    Settings = CsvSettings

    def __init__(self, settings: CsvSettings, context: ConnectorContext):
        self.settings = settings
        self.name = settings.name
        self.zone: ZoneInfo = context.zone
        self.path = context.resolve_path(settings.path)

    def __repr__(self) -> str:
        return f"CsvSource(name={self.name!r}, path={str(self.path)!r})"

    def check(self, online: bool = True) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor`` (no network either way): the file exists and reads as CSV, and
        its header has every required column under the names ``[sources.columns]`` gives."""
        from .scan import check_file

        return check_file(self.path, self.settings)

    def pull(self, context: PullContext) -> Iterator[Page]:
        import duckdb  # here, not at the top: loading a config (``status``, ``check-config``) does not need it

        from .scan import CsvScan, scan, serial_on_error

        fingerprint = file_fingerprint(self.path) if self.path.is_file() else None
        if fingerprint is not None and fingerprint == context.cursor:
            return
        scans: list[CsvScan] = []

        def read(parallel: bool) -> duckdb.DuckDBPyConnection:  # ORDER BY: the whole file is read here
            scans[:] = [scan(self.path, self.settings, self.zone, parallel=parallel)]
            return scans[0].conn.execute(
                """SELECT line, problem, customer_key, customer_id, order_key, email, phone, placed_at, updated_at,
                          amount, currency, status, is_test, is_cancelled, placed_at_text, amount_text,
                          skip_reason, email_problem
                   FROM checked ORDER BY line"""
            )

        cur = serial_on_error(read, self.path, self.settings)
        page: list[Order | Quarantined] = []
        while True:
            try:
                rows = cur.fetchmany(self.settings.page_size)
            except duckdb.Error as exc:
                raise file.read_error(self.path, self.settings, exc) from None
            if not rows:
                break
            for row in rows:
                page.append(self._record(row))
            yield Page(records=page, cursor=None)
            page = []
        # the lines DuckDB could not read (longer than max_line_bytes), once the result is read: quarantined
        rejected = file.collect_rejects(cur, scans[0].source, self.settings)
        if rejected:
            yield Page(
                records=[
                    Quarantined(
                        source=self.name,
                        location=f"{self.path.name}:{r.line}",
                        reason=r.reason,
                        raw=validate.printable(r.raw),
                    )
                    for r in rejected
                ],
                cursor=None,
            )
        yield Page(records=[], cursor=fingerprint)

    def _record(self, row: tuple[Any, ...]) -> Order | Quarantined:
        (
            line,
            problem,
            key,
            customer_id,
            order_key,
            email,
            phone,
            placed_at,
            updated_at,
            amount,
            currency,
            status,
            is_test,
            is_cancelled,
            placed_text,
            amount_text,
            skip_reason,
            email_problem,
        ) = row
        location = f"{self.path.name}:{line}"
        if problem:
            raw = ",".join(str(v) for v in (customer_id, placed_text, amount_text) if v is not None)
            return Quarantined(
                source=self.name,
                location=location,
                reason=validate.printable(problem),
                raw=validate.printable(raw[:200]),
            )
        notices = tuple(
            Quarantined(source=self.name, location=location, reason=reason)
            for reason in (email_problem, skip_reason)
            if reason
        )
        return Order(
            source=self.name,
            order_id=order_key,
            customer_id=key,
            placed_at=placed_at.astimezone(UTC),
            updated_at=updated_at.astimezone(UTC) if updated_at else None,
            amount=Decimal(amount),
            email=email,
            phone=phone,
            currency=currency,
            status=status,
            is_test=bool(is_test),
            is_cancelled=bool(is_cancelled),
            notices=notices,
        )
