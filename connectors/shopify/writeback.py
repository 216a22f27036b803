"""Shopify write-back: each customer's RFM group, previous group and change date onto the Shopify customer.

A destination (``type = "shopify"`` under ``[[destinations]]``) so that Shopify Flow, Shopify Email
and Shopify's customer segments react to rfm-sync's groups. For each :class:`ProfileUpdate` it
writes one metafield per mapped property (``[[destinations.metafields]]``: property, key, optional
namespace and type; default namespace ``rfm``) and, with ``tag = true``, one tag ``rfm:<group>``.

**Who can be written to.** A Shopify customer is addressed by its GID. rfm-sync keys a Shopify
order's customer by the numeric customer id (``identity.merge_by = "customer_id"``), so a key of
digits (or a ``gid://shopify/Customer/…``) is a Shopify customer; guests (``email:…``) and any
other key have no customer to write to: they are accepted as *skipped* (the run counts them) and
logged once per batch with the reason.

**Read, then write only the difference.** A batch starts with one ``nodes(ids:)`` query for its
customers' tags and the mapped metafields; then only what differs is written: ``metafieldsSet`` (at
most 25 metafields per call, as the Admin API allows), ``metafieldsDelete`` for a property that is
now empty, ``tagsRemove`` for every ``rfm:`` tag but the current group's (so a customer never keeps
two group tags, whatever an earlier run or a person left), then ``tagsAdd``. A batch re-sent after
a lost answer (the outbox resends rows it never saw acknowledged) therefore writes nothing twice,
and a customer already up to date is accepted as skipped. All calls are idempotent, so the one
retry policy retries them all.

**Throttling and errors.** The calls go through the source's :class:`ShopifyGraphQL` with its own
:class:`CostBucket` (one HTTP client per connector): THROTTLED, 429, 5xx, resets and cut-off bodies
are retried there. ``userErrors`` are classified per record: a code about the app or a metafield
definition (``APP_NOT_AUTHORIZED``, ``CAPABILITY_VIOLATION``, ``INVALID_TYPE``) would fail every
customer alike and stops the destination (:class:`FatalError`); ``INTERNAL_ERROR`` and
``STALE_OBJECT`` are temporary (:class:`RetryableError`: the rows are resent next cycle); any other
fails that one record with its reason (``PushResult.failed``). ``metafieldsSet`` is atomic, so
after a per-record error the rest of its call is sent again without the bad ones. A customer the
shop does not have (deleted) fails with its reason.

**Scopes.** ``write_customers`` (which includes reading them); ``check()`` (``rfm-sync doctor``)
reads ``currentAppInstallation.accessScopes`` and reports it when missing.

Not built yet: ``bulkOperationRunMutation`` with a staged JSONL upload for very large pushes.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Unpack

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..base import (
    ConnectorContext,
    ConnectorSettings,
    FatalError,
    ProfileUpdate,
    PushResult,
    RetryableError,
    chunked,
)
from ..http import HttpClient, HttpConnector, PlumbingArgs
from .graphql import CostBucket, ShopDomain, ShopifyGraphQL
from .queries import (
    ACCESS_SCOPES,
    API_VERSION,
    CUSTOMER_STATE,
    MAX_METAFIELDS_PER_SET,
    MAX_NODES_PER_READ,
    METAFIELDS_DELETE,
    METAFIELDS_SET,
    TAGS_ADD,
    TAGS_REMOVE,
)

log = logging.getLogger(__name__)

WRITE_SCOPE = "write_customers"
SCOPE_HINT = f"the access token lacks the {WRITE_SCOPE} scope the Shopify write-back needs"
CUSTOMER_GID = "gid://shopify/Customer/"
GUEST_REASON = "not a Shopify customer (a guest, or a key from another source): nothing to write to"
# userError codes of metafieldsSet (MetafieldsSetUserErrorCode) that are about the app or a
# metafield definition, not one customer: every record would fail alike
FATAL_CODES = {"APP_NOT_AUTHORIZED", "CAPABILITY_VIOLATION", "INVALID_TYPE"}
RETRY_CODES = {"INTERNAL_ERROR", "STALE_OBJECT"}
# customers per state read: ~4 cost points each (Customer, its metafields connection and nodes), so
# 100 ask ~400 of the 1,000-point single-query limit (nodes(ids:) itself takes up to 250)
READ_CHUNK = 100


class MetafieldMapping(BaseModel):
    """One property written as one metafield. Shopify: namespace 3–255 characters, key 2–64."""

    model_config = ConfigDict(extra="forbid")

    property: str = Field(min_length=1)
    key: str = Field(pattern=r"^[A-Za-z0-9_-]{2,64}$")
    namespace: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{3,255}$")
    type: str = "single_line_text_field"


def default_metafields() -> list[MetafieldMapping]:
    # the property names are rfm-sync's defaults ([properties]); rename them here if you renamed those
    return [
        MetafieldMapping(property="Current RFM group", key="group"),
        MetafieldMapping(property="Previous RFM group", key="previous_group"),
        MetafieldMapping(property="RFM group last changed", key="group_changed_at", type="date_time"),
    ]


class ShopifyWritebackSettings(ConnectorSettings):
    type: str = "shopify"
    shop: ShopDomain
    token_secret: str = Field(..., min_length=1)  # names the secret holding the Admin API access token
    base_url: str | None = None  # default https://<shop>.myshopify.com (fakes, proxies)
    namespace: str = Field("rfm", pattern=r"^[A-Za-z0-9_-]{3,255}$")
    metafields: list[MetafieldMapping] = Field(default_factory=default_metafields)
    tag: bool = True  # also tag the customer "<tag_prefix><group>", removing the previous group's tag
    tag_prefix: str = Field("rfm:", min_length=1, max_length=40)
    group_property: str = "Current RFM group"  # the property whose value the tag carries
    batch_size: int = Field(50, ge=1, le=MAX_NODES_PER_READ)
    timeout_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _one_property_per_metafield(self) -> ShopifyWritebackSettings:
        seen: dict[tuple[str, str], str] = {}
        for m in self.metafields:
            where = (m.namespace or self.namespace, m.key)
            if where in seen:
                raise ValueError(
                    f"metafields: {seen[where]!r} and {m.property!r} are both written to {'.'.join(where)}: "
                    f"each property needs its own key"
                )
            seen[where] = m.property
        return self


def customer_gid(customer_key: str) -> str | None:
    """The Shopify customer GID for an rfm-sync customer key, or None (a guest, another source's key)."""
    if re.fullmatch(r"[0-9]+", customer_key):
        return CUSTOMER_GID + customer_key
    if customer_key.startswith(CUSTOMER_GID) and re.fullmatch(r"[0-9]+", customer_key[len(CUSTOMER_GID) :]):
        return customer_key
    return None


def metafield_value(value: Any, type_: str) -> str | None:
    """The text Shopify stores for a property value (None: nothing to store). A ``date_time`` is
    written as ``YYYY-MM-DDTHH:MM:SS`` in UTC, the format of Shopify's date_time type."""
    if value is None or value == "":
        return None
    if type_ == "date_time" and isinstance(value, (str, datetime)):
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        except ValueError:
            return str(value)  # Shopify's userError says what is wrong with it
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Plan:
    """What one customer needs written: the differences between the update and Shopify's state."""

    outbox_id: int
    gid: str
    set: list[dict[str, str]] = field(default_factory=list)  # MetafieldsSetInput
    delete: list[dict[str, str]] = field(default_factory=list)  # MetafieldIdentifierInput
    remove_tags: list[str] = field(default_factory=list)
    add_tags: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.set or self.delete or self.remove_tags or self.add_tags)


class ShopifyWriteback(HttpConnector[ShopifyWritebackSettings]):
    Settings = ShopifyWritebackSettings

    def __init__(self, settings: ShopifyWritebackSettings, context: ConnectorContext, **plumbing: Unpack[PlumbingArgs]):
        super().__init__(settings, context, **plumbing)
        self.batch_size = settings.batch_size
        self.bucket = CostBucket(clock=self.plumbing.clock, sleep=self.plumbing.sleep)
        self.writes = 0  # mutations sent (for tests and metrics)

    def __repr__(self) -> str:
        return f"ShopifyWriteback(name={self.name!r}, shop={self.settings.shop!r})"

    @functools.cached_property
    def client(self) -> HttpClient:
        # built on first use, never for a dry run; the token is put on it then (see _authorise)
        self._context.refuse_dry_run(self.name)
        return self.plumbing.client(
            self.settings.base_url or f"https://{self.settings.shop}",
            read_timeout_s=self.settings.timeout_seconds,
            headers={"Content-Type": "application/json"},
        )

    @functools.cached_property
    def gql(self) -> ShopifyGraphQL:
        return ShopifyGraphQL(
            self.client,
            f"/admin/api/{API_VERSION}/graphql.json",
            bucket=self.bucket,
            clock=self.plumbing.clock,
            scope_hint=SCOPE_HINT,
        )

    def _authorise(self) -> ShopifyGraphQL:
        self.client.authorise("X-Shopify-Access-Token", lambda: self.secret(self.settings.token_secret))
        return self.gql

    def close(self) -> None:
        if "client" in vars(self):
            self.client.close()

    # ------------------------------------------------------------------ planning
    def _namespace(self, mapping: MetafieldMapping) -> str:
        return mapping.namespace or self.settings.namespace

    def tag_for(self, group: Any) -> str | None:
        # a comma would split the tag in two (Shopify reads tags as a comma-separated list)
        text = str(group).replace(",", " ").strip() if group not in (None, "") else ""
        return f"{self.settings.tag_prefix}{text}"[:255] if text else None

    def plan(self, update: ProfileUpdate, gid: str, state: dict[str, Any]) -> Plan:
        plan = Plan(update.outbox_id, gid)
        current = state["metafields"]
        for mapping in self.settings.metafields:
            namespace = self._namespace(mapping)
            value = metafield_value(update.properties.get(mapping.property), mapping.type)
            now = current.get((namespace, mapping.key))
            if value is None and now is not None:
                plan.delete.append({"ownerId": gid, "namespace": namespace, "key": mapping.key})
            elif value is not None and value != now:
                plan.set.append(
                    {"ownerId": gid, "namespace": namespace, "key": mapping.key, "type": mapping.type, "value": value}
                )
        if self.settings.tag:
            wanted = self.tag_for(update.properties.get(self.settings.group_property))
            prefix = self.settings.tag_prefix.lower()
            ours = [t for t in state["tags"] if t.lower().startswith(prefix)]
            plan.remove_tags = [t for t in ours if t != wanted]
            plan.add_tags = [wanted] if wanted and wanted not in ours else []
        return plan

    # ------------------------------------------------------------------ push
    def push(self, updates: list[ProfileUpdate]) -> PushResult:
        if not updates:
            return PushResult()
        self._context.refuse_dry_run(self.name)  # even a batch of guests only: a dry run pushes nothing
        latest: dict[str, ProfileUpdate] = {}  # per customer, the batch's last snapshot is the one to write
        guests: list[int] = []
        for update in updates:
            gid = customer_gid(update.customer_key)
            if gid is None:
                guests.append(update.outbox_id)
            else:
                latest[gid] = update
        if guests:
            log.info(
                "shopify write-back skipped %d update(s): %s",
                len(guests),
                GUEST_REASON,
                extra={"destination": self.name, "skipped": len(guests)},
            )
        failed: dict[int, str] = {}
        plans: list[Plan] = []
        if latest:
            states = self._read(list(latest))
            for gid, update in latest.items():
                state = states.get(gid)
                if state is None:
                    failed[update.outbox_id] = f"Shopify has no customer {gid} (deleted, or of another shop)"
                else:
                    plans.append(self.plan(update, gid, state))
        work = [p for p in plans if not p.empty()]
        self._set_metafields(work, failed)
        self._delete_metafields([p for p in work if p.outbox_id not in failed], failed)
        for plan in work:
            if plan.outbox_id not in failed:
                self._tags(plan, failed)
        written = {p.outbox_id for p in work}
        accepted = [u.outbox_id for u in updates if u.outbox_id not in failed]
        return PushResult(accepted=accepted, failed=failed, skipped=[i for i in accepted if i not in written])

    def _read(self, gids: list[str]) -> dict[str, dict[str, Any]]:
        """gid -> {"tags": [...], "metafields": {(namespace, key): value}} for the customers Shopify has."""
        gql = self._authorise()
        keys = sorted({f"{self._namespace(m)}.{m.key}" for m in self.settings.metafields})
        states: dict[str, dict[str, Any]] = {}
        for ids in chunked(gids, READ_CHUNK):
            values: dict[str, Any] = {"ids": ids, "keys": keys, "count": max(1, len(keys))}
            data = gql.execute("CustomerRfmState", CUSTOMER_STATE, functools.partial(dict, values))
            nodes = data.get("nodes")
            if not isinstance(nodes, list):
                raise RetryableError("Shopify answered the customers query without its nodes", connector=self.name)
            for node in nodes:
                if not isinstance(node, dict) or not isinstance(node.get("id"), str):
                    continue  # null: no such customer (it fails with its reason in push)
                connection = node.get("metafields")
                connection = connection if isinstance(connection, dict) else {}
                metafields = {
                    (str(m.get("namespace")), str(m.get("key"))): m.get("value")
                    for m in connection.get("nodes") or []
                    if isinstance(m, dict)
                }
                tags = [t for t in node.get("tags") or [] if isinstance(t, str)]
                states[node["id"]] = {"tags": tags, "metafields": metafields}
        return states

    def _mutate(self, operation: str, document: str, root: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
        """Send one mutation; its ``userErrors`` (a list of objects)."""
        data = self._authorise().execute(operation, document, lambda: variables)
        self.writes += 1
        payload = data.get(root)
        if not isinstance(payload, dict):
            raise RetryableError(f"Shopify answered {root} without its payload", connector=self.name)
        errors = payload.get("userErrors") or []
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []

    def _classify(self, errors: list[dict[str, Any]], what: str) -> str:
        """Raise for errors about the app or a definition (fatal) or temporary ones; else the reason
        to fail the record(s) with."""
        codes = {str(e.get("code") or "") for e in errors}
        message = "; ".join(str(e.get("message") or "rejected")[:200] for e in errors)
        if codes & FATAL_CODES:
            raise FatalError(
                f"{what}: Shopify refused it ({', '.join(sorted(codes & FATAL_CODES))}: {message}); check the "
                f"app's access and that a metafield definition in the namespace has the type this mapping writes",
                connector=self.name,
            )
        if codes & RETRY_CODES:
            raise RetryableError(f"{what}: Shopify says to try again ({message})", connector=self.name)
        return f"{what}: {message}"

    def _set_metafields(self, plans: list[Plan], failed: dict[int, str]) -> None:
        items = [(plan.outbox_id, m) for plan in plans for m in plan.set]
        while items:
            chunk = items[:MAX_METAFIELDS_PER_SET]
            errors = self._mutate(
                "RfmMetafieldsSet", METAFIELDS_SET, "metafieldsSet", {"metafields": [m for _, m in chunk]}
            )
            if not errors:
                items = items[MAX_METAFIELDS_PER_SET:]
                continue
            reason = self._classify(errors, "metafieldsSet")
            indexed = {e.get("elementIndex") for e in errors}
            bad = {chunk[i][0] for i in indexed if isinstance(i, int) and 0 <= i < len(chunk)}
            for outbox_id in bad or {oid for oid, _ in chunk}:  # no index: the whole call was refused
                failed.setdefault(outbox_id, reason)
            # the call is atomic: nothing of it was stored; send the rest again without the bad ones
            items = [(oid, m) for oid, m in items if oid not in failed]

    def _delete_metafields(self, plans: list[Plan], failed: dict[int, str]) -> None:
        items = [(plan.outbox_id, m) for plan in plans for m in plan.delete]
        for chunk in chunked(items, MAX_METAFIELDS_PER_SET):
            errors = self._mutate(
                "RfmMetafieldsDelete", METAFIELDS_DELETE, "metafieldsDelete", {"metafields": [m for _, m in chunk]}
            )
            if errors:
                reason = self._classify(errors, "metafieldsDelete")
                for outbox_id, _ in chunk:
                    failed.setdefault(outbox_id, reason)

    def _tags(self, plan: Plan, failed: dict[int, str]) -> None:
        # the old group's tag goes first: a customer never carries two group tags, even for a moment
        for operation, document, root, tags in (
            ("RfmTagsRemove", TAGS_REMOVE, "tagsRemove", plan.remove_tags),
            ("RfmTagsAdd", TAGS_ADD, "tagsAdd", plan.add_tags),
        ):
            if not tags:
                continue
            errors = self._mutate(operation, document, root, {"id": plan.gid, "tags": tags})
            if errors:
                failed[plan.outbox_id] = self._classify(errors, root)
                return

    # ------------------------------------------------------------------ doctor
    def check(self, online: bool = True) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor``: the token is set; ``online``: one scopes query proves it works and
        has ``write_customers``. A rejected token raises :class:`FatalError` as a push would."""
        problems = self._context.missing_secrets(self.name, self.settings.token_secret)
        if problems or not online:
            return problems
        data = self._authorise().execute("AccessScopes", ACCESS_SCOPES, dict)
        installation = data.get("currentAppInstallation")
        scopes = _handles((installation or {}).get("accessScopes") if isinstance(installation, dict) else None)
        if WRITE_SCOPE not in scopes:
            problems.append(
                (
                    f"the access token lacks the {WRITE_SCOPE} scope: Shopify refuses every write to customers",
                    f"in the custom app's Admin API scopes, grant {WRITE_SCOPE}, reinstall the app and store "
                    f"its new token in the secret {self.settings.token_secret!r}",
                )
            )
        return problems


def _handles(scopes: Iterable[Any] | None) -> set[str]:
    return {str(s.get("handle")) for s in scopes or [] if isinstance(s, dict)}


__all__ = ["ShopifyWriteback", "ShopifyWritebackSettings", "customer_gid"]
