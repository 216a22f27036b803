"""Klaviyo Bulk Import Profiles jobs: submit, poll to completion, map import errors to outbox ids.

A job is ``queued`` → ``processing`` → ``complete`` (or ``cancelled``). Once complete, profiles that
failed are listed by ``GET /api/profile-bulk-import-jobs/{id}/import-errors`` (paginated). Each error
is mapped back to the outbox row it came from — by the identifiers in its ``original_payload``
(external id, email, phone), else by the array index in its ``source.pointer`` — so those customers
stay in the outbox with the error and everyone else is acknowledged.

A job that does not finish within ``timeout_s`` raises :class:`RetryableError`: nothing is
acknowledged, and the next cycle re-sends the batch (a bulk import is an idempotent upsert).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from ..base import RetryableError
from .bodies import bulk_job_body, mask_email

JOBS_PATH = "/api/profile-bulk-import-jobs"
_INDEX = re.compile(r"/data/attributes/profiles/data/(\d+)")


@dataclass
class JobOutcome:
    job_id: str
    status: str
    accepted: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    polls: int = 0


# send(method, path, body=None, params=None) -> 2xx response (retries, limits and errors are its job)
Send = Callable[..., requests.Response]


class BulkJobs:
    def __init__(
        self,
        send: Send,
        *,
        connector: str = "",
        poll_interval_s: float = 2.0,
        timeout_s: float = 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.send = send
        self.connector = connector
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self._sleep, self._clock = sleep, clock

    def run(self, items: list[tuple[int, dict[str, Any]]], data: bytes | None = None) -> JobOutcome:
        """Import ``(outbox_id, profile resource)`` pairs as one job and wait for its result.
        ``data``: the job body already serialised (see :func:`split_jobs`)."""
        if data is None:
            data = json.dumps(bulk_job_body([resource for _, resource in items]), ensure_ascii=False).encode("utf-8")
        response = self.send("POST", JOBS_PATH, data=data)
        job = self._job(response, "the new bulk import job")
        outcome = JobOutcome(job_id=str(job["id"]), status=job["attributes"]["status"])
        attributes = self._wait(outcome)
        ids = [oid for oid, _ in items]
        if outcome.status == "cancelled":
            outcome.failed = dict.fromkeys(ids, f"klaviyo bulk import job {outcome.job_id} was cancelled")
            return outcome
        if attributes.get("failed_count"):
            outcome.failed = self._errors(outcome.job_id, items)
        outcome.accepted = [oid for oid in ids if oid not in outcome.failed]
        return outcome

    def _wait(self, outcome: JobOutcome) -> Mapping[str, Any]:
        deadline = self._clock() + self.timeout_s
        attributes: Mapping[str, Any] = {}
        while outcome.status not in ("complete", "cancelled"):
            if self._clock() >= deadline:
                raise RetryableError(
                    f"klaviyo bulk import job {outcome.job_id} still {outcome.status} after "
                    f"{self.timeout_s:.0f}s; the batch will be re-sent",
                    connector=self.connector,
                )
            self._sleep(self.poll_interval_s)
            response = self.send("GET", f"{JOBS_PATH}/{outcome.job_id}")
            outcome.polls += 1
            attributes = self._job(response, f"bulk import job {outcome.job_id}")["attributes"]
            outcome.status = attributes["status"]
        if not attributes and outcome.status == "complete":  # completed at once: read the counts
            response = self.send("GET", f"{JOBS_PATH}/{outcome.job_id}")
            outcome.polls += 1
            attributes = self._job(response, f"bulk import job {outcome.job_id}")["attributes"]
        return attributes

    def _job(self, response: requests.Response, what: str) -> Mapping[str, Any]:
        """``data`` of a job answer, checked to hold an ``id`` and ``attributes.status`` (text). An answer
        of another shape is retryable: the batch stays unacknowledged and is sent again (a profile
        import is idempotent), never half-read."""
        try:
            job: Mapping[str, Any] = response.json()["data"]
            if isinstance(job["id"], (str, int)) and isinstance(job["attributes"]["status"], str):
                return job
        except (ValueError, KeyError, TypeError):
            pass
        raise RetryableError(
            f"klaviyo answered {what} without data.id and data.attributes.status", connector=self.connector
        )

    def _errors(self, job_id: str, items: list[tuple[int, dict[str, Any]]]) -> dict[int, str]:
        by_key: dict[tuple[str, str], int] = {}
        for oid, resource in items:
            for name in ("external_id", "email", "phone_number"):
                value = resource["attributes"].get(name)
                if value:
                    by_key.setdefault((name, _norm(name, value)), oid)
        failed: dict[int, str] = {}
        unmatched = 0
        path: str | None = f"{JOBS_PATH}/{job_id}/import-errors"
        params: dict[str, Any] | None = {"page[size]": 100}
        while path:
            response = self.send("GET", path, params=params)
            try:
                page = response.json()
            except ValueError:
                page = None
            if not isinstance(page, dict) or not isinstance(page.get("data", []), list):
                raise RetryableError(
                    f"klaviyo answered the import errors of job {job_id} in a shape it does not "
                    "document (data must be a list)",
                    connector=self.connector,
                )
            for error in page.get("data", []):
                attrs = error.get("attributes") if isinstance(error, dict) else None
                attrs = attrs if isinstance(attrs, dict) else {}
                matched = _match(attrs, by_key, items)
                if matched is None:
                    unmatched += 1
                    continue
                failed[matched] = _reason(attrs)
            links = page.get("links")
            path, params = (links.get("next") if isinstance(links, dict) else None), None
            path = path if isinstance(path, str) and path else None
        if unmatched:
            # an error we cannot place: keep the whole job pending rather than acknowledge a failed profile
            reason = f"klaviyo bulk import job {job_id}: {unmatched} import error(s) could not be matched to a customer"
            for oid, _ in items:
                failed.setdefault(oid, reason)
        return failed


def _norm(name: str, value: str) -> str:
    return value.strip().lower() if name == "email" else value.strip()


def _match(
    attrs: Mapping[str, Any], by_key: Mapping[tuple[str, str], int], items: list[tuple[int, dict[str, Any]]]
) -> int | None:
    payload = attrs.get("original_payload") or {}
    fields = payload.get("attributes", payload) if isinstance(payload, Mapping) else {}
    given = {
        name: _norm(name, v)
        for name in ("external_id", "email", "phone_number")
        if isinstance(v := fields.get(name), str) and v.strip()
    }
    source = attrs.get("source")
    pointer = source.get("pointer") if isinstance(source, dict) else None
    pointer = pointer if isinstance(pointer, str) else ""
    found = _INDEX.search(pointer)
    if found and int(found.group(1)) < len(items):
        oid, resource = items[int(found.group(1))]
        sent = resource["attributes"]
        # trust the index when the payload agrees with what we sent there (or names nothing)
        if not given or any(isinstance(sent.get(n), str) and _norm(n, sent[n]) == v for n, v in given.items()):
            return oid
    for name, value in given.items():
        if (name, value) in by_key:
            return by_key[(name, value)]
    return None


def _reason(attrs: Mapping[str, Any]) -> str:
    code, title, detail = attrs.get("code", "error"), attrs.get("title", ""), attrs.get("detail", "")
    return mask_email(f"klaviyo import error {code}: {title}: {detail}".strip(": "))[:500]
