"""The ``[rfm]`` section: scheme, windows, scheme options, segment rules, stable groups.

Validated once at start-up; every message names the key or the rule at fault (e.g.
``rfm: segments[2] 'Premium slipping': 'premum' is not a monetary label ...``). The scheme
modules in :mod:`rfm_sync.engine` read these objects; they hold no I/O and no secrets.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dimension(Section):
    # ordered labels, worst-to-best is not implied: each label covers values up to its bound
    labels: list[str] = Field(min_length=2, max_length=9)
    # inclusive upper bound of every label but the last (which is open-ended); strictly increasing
    upto: list[Decimal]
    # frequency / monetary only: count or sum qualifying orders over the last N days (default: rfm.window_days)
    window_days: int | None = Field(None, gt=0, le=36_500)

    @model_validator(mode="after")
    def _consistent(self) -> Dimension:
        if len(set(self.labels)) != len(self.labels) or any(not s.strip() for s in self.labels):
            raise ValueError(f"labels must be distinct and non-empty, got {self.labels}")
        if len(self.upto) != len(self.labels) - 1:
            raise ValueError(
                f"{len(self.labels)} labels need {len(self.labels) - 1} bounds in `upto` "
                f"(the last label is open-ended), got {len(self.upto)}"
            )
        if any(v < 0 for v in self.upto):
            raise ValueError(f"`upto` bounds must not be negative, got {[str(v) for v in self.upto]}")
        for a, b, la, lb in zip(self.upto, self.upto[1:], self.labels, self.labels[1:]):
            if b <= a:
                raise ValueError(
                    f"`upto` must be strictly increasing: {lb!r} (<= {b}) overlaps or precedes {la!r} (<= {a})"
                )
        return self


class Thresholds(Section):
    recency: Dimension = Dimension(labels=["short", "medium", "long"], upto=[Decimal(30), Decimal(90)])
    frequency: Dimension = Dimension(
        labels=["occasional", "regular", "frequent"], upto=[Decimal(1), Decimal(3)], window_days=180
    )
    monetary: Dimension = Dimension(
        labels=["saver", "average", "premium"], upto=[Decimal(50), Decimal(200)], window_days=90
    )

    @model_validator(mode="after")
    def _units(self) -> Thresholds:
        if self.recency.window_days is not None:
            raise ValueError("recency.window_days: recency has no window (it is days since the last order)")
        for v in self.monetary.upto:
            if v != v.quantize(Decimal("0.0001")):
                raise ValueError(f"monetary.upto: {v} has more than 4 decimals")
        return self


class SegmentRule(Section):
    name: str = Field(min_length=1)
    # key -> value or list of values (any of them); all keys must match; {} matches everyone
    when: dict[str, str | int | list[str | int]] = {}


class LabelProperties(Section):
    """Profile property names for the per-dimension labels (scheme thresholds) and the macro group."""

    recency: str = "RFM recency"
    frequency: str = "RFM frequency"
    monetary: str = "RFM monetary"
    macro_group: str = "RFM macro group"


class RfmConfig(Section):
    scheme: Literal["klaviyo", "classic11", "thresholds"] = "klaviyo"
    # at most 100 years: a window has to start after year 1 (a larger one overflowed the date arithmetic)
    window_days: int = Field(730, gt=0, le=36_500)
    # klaviyo: R = 3 if recency_days <= recency_bounds[0], 2 if <= recency_bounds[1], else 1
    recency_bounds: tuple[int, int] = (180, 365)
    # classic11: the probabilities of the four cut points (scores 1–5)
    quintiles: list[Decimal] = [Decimal("0.2"), Decimal("0.4"), Decimal("0.6"), Decimal("0.8")]
    thresholds: Thresholds = Thresholds()
    segments: list[SegmentRule] = []
    fallback_segment: str = Field("Other", min_length=1)
    macro_groups: bool = False
    label_properties: LabelProperties = LabelProperties()
    # quantile cut points are frozen and recomputed when older than this many days (or by `rfm-sync recalibrate`)
    recalibrate_days: int = Field(30, gt=0, le=36_500)
    # ... or when the customers with an order in the window grew or shrank by more than this fraction
    # since (0.2 = ±20 %): a first pull that found a fraction of the history is not frozen for a month
    recalibrate_population_change: Decimal = Field(Decimal("0.2"), gt=0)
    # cut points computed over fewer customers (with an order in the window) are used for their run but
    # not frozen: the next run computes them again. Over no customers they are never stored.
    min_calibration_customers: int = Field(100, ge=1)
    # keep a customer's score until a value passes a boundary by this fraction of it (0.05 = 5%); 0 = off
    hysteresis: Decimal = Field(Decimal(0), ge=0, lt=1)

    @field_validator("quintiles")
    @classmethod
    def _probs(cls, v: list[Decimal]) -> list[Decimal]:
        if len(v) != 4 or any(not 0 < p < 1 for p in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(
                f"quintiles must be 4 strictly increasing probabilities in (0, 1), got {[str(p) for p in v]}"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> RfmConfig:
        a, b = self.recency_bounds
        if not 0 <= a < b:
            raise ValueError(f"recency_bounds must be increasing non-negative days, got [{a}, {b}]")
        if self.macro_groups and self.scheme != "classic11":
            raise ValueError(f'macro_groups needs scheme = "classic11" (scheme is {self.scheme!r})')
        from .engine import SCHEMES, segments

        allowed, cases = SCHEMES[self.scheme].rule_space(self)
        problems = segments.check(self.segments, allowed, cases, self.scheme)
        if problems:
            raise ValueError("; ".join(problems))
        return self
