"""Draft Klaviyo flows on the RFM groups: ``rfm-sync klaviyo bootstrap --flows``.

Klaviyo's Create Flow API (``POST /api/flows``, scope ``flows:write``; 1/s, 15/min, 100/day) takes a
whole flow definition (``FlowCreateQuery`` → ``FlowDefinition`` in the pinned revision's spec): one
trigger, a profile filter checked before every step, and the actions linked by ``temporary_id``.
What is built here, from :class:`~connectors.klaviyo.flow_config.FlowsConfig`:

* **win-back** (one per group): trigger *added to the segment* "Current RFM group equals <group>"
  (made by the segments bootstrap, which the command runs first); profile filter: can receive email
  marketing, and ``Current RFM group`` still equals the group; then time delays and emails.
* **post-purchase**: trigger the shop's order metric ("Placed Order"); a time delay; then a chain of
  conditional splits on the profile's ``Current RFM group`` (Champions/Loyal → a review request,
  Recent → a cross-sell, everyone else → the ``otherwise`` email).
* **group change**: trigger the destination's own event metric ("RFM Group Changed"); a chain of
  trigger splits on the event's ``from_group`` / ``to_group`` (the keys
  :func:`connectors.klaviyo.bodies.event_properties` writes), one email per configured move.

With a hold-out (``[properties] holdout_percent`` above 0) the two flows on group moves, win-back and
group change, also filter on "RFM holdout equals false": the held-out share of each move gets no
email, and ``rfm-sync outcomes`` compares the reached with the held out.

**Always drafts.** The Create Flow API has no status for the flow: Klaviyo creates it as a draft,
and only ``PATCH /api/flows/{id}`` (never called here) or the merchant turns it live. Every
``send-email`` action is sent with ``status: "draft"`` as well, so no message can go out until the
merchant has reviewed the flow in Klaviyo's editor.

**Placeholder content.** With ``templates = true`` each email gets an HTML template of its own
(``POST /api/templates``, editor ``CODE``, scope ``templates:write``), named after the flow and the
email, whose text uses the RFM properties through Klaviyo's template tags
(``{{ person|lookup:'Current RFM group' }}``; in the group-change flow ``{{ event.from_group }}``).

**Idempotent.** Flows, and templates, are found again by their whole name: every existing flow is
listed first (``GET /api/flows``, 50 a page, all pages: a name filter would need quoting rules
Klaviyo does not document) and a flow whose name exists is left alone, whatever it has become. A
create that may have reached Klaviyo is not repeated blindly (:func:`listing.create_once`).

**What the triggers need.** A segment's id comes from the segments bootstrap. A metric exists in
Klaviyo only once an event of that name was received (Klaviyo creates a metric with its first event;
the API cannot create one): a flow whose metric is not there yet is not created, and the row says
why and what to do (run a cycle so that a group change sends the first event, or connect the shop
integration that records orders), then run the command again. Several metrics of one name (two
integrations) need ``metric_id``.

Nothing here imports ``rfm_sync``: the command passes the scheme's groups and the property names.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..base import FatalError, RetryableError
from .bodies import segment_name
from .destination import KlaviyoDestination
from .flow_config import Email, FlowsConfig
from .listing import create_once, names, needs_scope, pages

FLOWS_PATH = "/api/flows"
METRICS_PATH = "/api/metrics"
TEMPLATES_PATH = "/api/templates"
# the group-change event's properties the trigger splits read (connectors/klaviyo/bodies.py writes them)
EVENT_FROM, EVENT_TO = "from_group", "to_group"


# ---------------------------------------------------------------------- the plan (pure)
@dataclass(frozen=True)
class PropertyNames:
    """The profile properties the splits and the placeholder texts use (``[properties]``)."""

    current_group: str = "Current RFM group"
    previous_group: str = "Previous RFM group"
    score: str = "RFM score"
    group_changed_at: str = "RFM group last changed"
    holdout: str | None = None  # the hold-out's property ("RFM holdout") while holdout_percent > 0; else None


@dataclass(frozen=True)
class Trigger:
    kind: str  # "segment" | "metric"
    name: str  # the segment's or the metric's name
    metric_id: str | None = None  # configured, for a metric name that several metrics share
    name_key: str = ""  # the config key that names the metric ("flows.post_purchase.metric")
    id_key: str = ""  # the config key of its metric_id

    def describe(self) -> str:
        return f"added to segment {self.name!r}" if self.kind == "segment" else f"metric {self.name!r}"


@dataclass(frozen=True)
class SendEmail:
    email: Email
    template: str  # the name of its placeholder template
    event: bool  # in a flow triggered by the group-change event (its texts may use the event)
    next: Step | None = None


@dataclass(frozen=True)
class Delay:
    days: int
    next: Step | None = None


@dataclass(frozen=True)
class ProfileSplit:
    """A conditional split: the profile's ``property`` is one of ``groups``."""

    property: str
    groups: tuple[str, ...]
    yes: Step | None
    no: Step | None


@dataclass(frozen=True)
class EventSplit:
    """A trigger split: the event's ``from_group`` is one of ``from_groups`` and its ``to_group``
    one of ``to_groups`` (empty: any)."""

    from_groups: tuple[str, ...]
    to_groups: tuple[str, ...]
    yes: Step | None
    no: Step | None


Step = SendEmail | Delay | ProfileSplit | EventSplit


@dataclass(frozen=True)
class PlannedFlow:
    key: str  # the config key ("win_back[0]", "post_purchase", "group_change")
    name: str
    trigger: Trigger
    entry: Step
    email_consent: bool = True
    still_in: tuple[str, str] | None = None  # (property, group): the profile is still in that group
    measured: bool = False  # a flow on a group move: it leaves out the hold-out (if there is one)
    sender: Mapping[str, str] = field(default_factory=dict)  # from_email, from_label, reply_to_email
    properties: PropertyNames = PropertyNames()
    templates: bool = True

    def emails(self) -> list[SendEmail]:
        return [step for step in _walk(self.entry) if isinstance(step, SendEmail)]

    def steps(self) -> str:
        """The actions in words, for the table the command prints."""
        return _describe(self.entry)


@dataclass
class Plan:
    flows: list[PlannedFlow]
    notes: list[str]  # default flows or branches left out because this scheme lacks their groups
    problems: list[str]  # configured groups the scheme does not have: configuration errors


def plan_flows(
    config: FlowsConfig,
    *,
    groups: Sequence[str],
    properties: PropertyNames,
    metric_name: str,
    events: bool,
    where: str = "flows",
) -> Plan:
    """The flows ``config`` asks for, checked against the scheme's ``groups``. A group the scheme
    lacks is a problem where the merchant wrote it, and is left out (with a note) where it comes
    from a default written for Klaviyo's own scheme, so the defaults work on every scheme."""
    plan = Plan([], [], [])
    known = set(groups)
    listed = ", ".join(groups)
    names_of = config.flow_names()
    sender = {
        k: v
        for k, v in (
            ("from_email", config.from_email),
            ("from_label", config.from_label),
            ("reply_to_email", config.reply_to_email),
        )
        if v
    }
    common: dict[str, Any] = {"sender": sender, "properties": properties, "templates": config.templates}

    def fit(values: Sequence[str], key: str, explicit: bool) -> tuple[str, ...] | None:
        """``values`` that are groups of the scheme; None when a default named a group it lacks."""
        unknown = [v for v in values if v not in known]
        if not unknown:
            return tuple(values)
        if explicit:
            for v in unknown:
                plan.problems.append(f"{where}.{key}: no group {v!r} in this scheme (groups: {listed})")
            return tuple(values)
        plan.notes.append(
            f"{where}.{key}: left out: the default names {', '.join(map(repr, unknown))}, not a group of this scheme"
        )
        return None

    set_at_top = config.model_fields_set
    for i, w in enumerate(config.win_back):
        key = f"win_back[{i}]"
        if not w.enabled or fit([w.group], f"{key}.group", "win_back" in set_at_top) is None:
            continue
        entry: Step | None = None
        for n, email in reversed(list(enumerate(w.emails, 1))):
            entry = _delayed(email, f"{names_of[key]} · email {n}", False, entry)
        assert entry is not None  # at least one email (validated)
        plan.flows.append(
            PlannedFlow(
                key,
                names_of[key],
                Trigger("segment", segment_name(w.group, properties.current_group)),
                entry,
                w.email_consent,
                (properties.current_group, w.group) if w.still_in_group else None,
                True,
                **common,
            )
        )

    p = config.post_purchase
    if p.enabled:
        name = names_of["post_purchase"]
        explicit = "post_purchase" in set_at_top and "branches" in p.model_fields_set
        rest: Step | None = _delayed(p.otherwise, f"{name} · others", False, None) if p.otherwise else None
        for b, branch in reversed(list(enumerate(p.branches))):
            fitted = fit(branch.groups, f"post_purchase.branches[{b}].groups", explicit)
            if fitted is None:
                continue
            send = _delayed(branch.email, f"{name} · {', '.join(fitted)}", False, None)
            rest = ProfileSplit(properties.current_group, fitted, send, rest)
        if rest is None:
            plan.notes.append(f"{where}.post_purchase: no branch and no `otherwise` email: left out")
        else:
            entry = Delay(p.wait_days, rest) if p.wait_days else rest
            trigger = Trigger(
                "metric", p.metric, p.metric_id, f"{where}.post_purchase.metric", f"{where}.post_purchase.metric_id"
            )
            plan.flows.append(PlannedFlow("post_purchase", name, trigger, entry, p.email_consent, None, **common))

    g = config.group_change
    if g.enabled and not events:
        plan.notes.append(
            f"{where}.group_change: left out: this destination sends no {metric_name!r} events (events = false)"
        )
    elif g.enabled:
        name = names_of["group_change"]
        explicit = "group_change" in set_at_top and "moves" in g.model_fields_set
        rest = _delayed(g.otherwise, f"{name} · other changes", True, None) if g.otherwise else None
        moves = 0
        for m, move in reversed(list(enumerate(g.moves))):
            source = fit(move.from_groups, f"group_change.moves[{m}].from", explicit)
            target = fit(move.to_groups, f"group_change.moves[{m}].to", explicit)
            if source is None or target is None:
                continue  # a default move, narrowed, would mean another move: left out whole
            label = f"{', '.join(source) or 'any'} → {', '.join(target) or 'any'}"
            send = _delayed(move.email, f"{name} · {label}", True, None)
            rest, moves = EventSplit(source, target, send, rest), moves + 1
        if rest is None or not moves:
            plan.notes.append(f"{where}.group_change: none of its moves fits this scheme's groups: left out")
        else:
            entry = Delay(g.wait_days, rest) if g.wait_days else rest
            trigger = Trigger("metric", metric_name, g.metric_id, "", f"{where}.group_change.metric_id")
            plan.flows.append(PlannedFlow("group_change", name, trigger, entry, g.email_consent, None, True, **common))
    return plan


def _delayed(email: Email, template: str, event: bool, then: Step | None) -> Step:
    step: Step = SendEmail(email, template, event, then)
    return Delay(email.wait_days, step) if email.wait_days else step


def _walk(step: Step | None) -> Iterator[Step]:
    while step is not None:
        yield step
        if isinstance(step, (ProfileSplit, EventSplit)):
            yield from _walk(step.yes)
            step = step.no
        else:
            step = step.next


def _describe(step: Step | None) -> str:
    parts: list[str] = []
    while step is not None:
        if isinstance(step, Delay):
            parts.append(f"wait {step.days} d")
            step = step.next
        elif isinstance(step, SendEmail):
            parts.append(f"email {step.email.subject!r}")
            step = step.next
        else:
            if isinstance(step, ProfileSplit):
                test = f"group in {', '.join(step.groups)}"
            else:
                test = f"{', '.join(step.from_groups) or 'any'} → {', '.join(step.to_groups) or 'any'}"
            parts.append(f"if {test}: {_describe(step.yes) or 'end'}; else: {_describe(step.no) or 'end'}")
            break
    return " → ".join(parts)


# ---------------------------------------------------------------------- request bodies (pure)
def _string_filter(values: Sequence[str]) -> dict[str, Any]:
    if len(values) == 1:
        return {"type": "string", "operator": "equals", "value": values[0]}
    return {"type": "string", "operator": "in", "value": list(values)}


def _profile_property(name: str, values: Sequence[str]) -> dict[str, Any]:
    return {"type": "profile-property", "property": f"properties['{name}']", "filter": _string_filter(values)}


EMAIL_CONSENT = {
    "type": "profile-marketing-consent",
    "consent": {"channel": "email", "can_receive_marketing": True, "consent_status": {"subscription": "any"}},
}


def flow_body(flow: PlannedFlow, *, trigger_id: str, template_ids: Mapping[str, str]) -> dict[str, Any]:
    """``POST /api/flows``: the flow ``flow`` with its trigger's id and its emails' template ids
    (by template name; an email without one is created empty)."""
    actions: list[dict[str, Any]] = []

    def add(step: Step | None) -> str | None:
        if step is None:
            return None
        temporary_id = f"action-{len(actions) + 1}"
        slot = len(actions)
        actions.append({})  # its place, before the steps that follow it
        action: dict[str, Any] = {"temporary_id": temporary_id}
        if isinstance(step, Delay):
            action |= {"type": "time-delay", "links": {"next": add(step.next)}}
            action["data"] = {"unit": "days", "value": step.days}
        elif isinstance(step, SendEmail):
            action |= {"type": "send-email", "links": {"next": add(step.next)}}
            action["data"] = {"message": _message(flow, step, template_ids.get(step.template)), "status": "draft"}
        elif isinstance(step, ProfileSplit):
            action["type"] = "conditional-split"
            action["links"] = {"next_if_true": add(step.yes), "next_if_false": add(step.no)}
            condition = _profile_property(step.property, step.groups)
            action["data"] = {"profile_filter": {"condition_groups": [{"conditions": [condition]}]}}
        else:
            action["type"] = "trigger-split"
            action["links"] = {"next_if_true": add(step.yes), "next_if_false": add(step.no)}
            tests = [(EVENT_FROM, step.from_groups), (EVENT_TO, step.to_groups)]
            # condition groups are ANDed, the conditions within one ORed: one group per property
            groups = [
                {"conditions": [{"type": "metric-property", "metric_id": trigger_id, "field": key, "filter": f}]}
                for key, values in tests
                if values
                for f in [_string_filter(values)]
            ]
            action["data"] = {
                "trigger_filter": {"condition_groups": groups},
                "trigger_id": trigger_id,
                "trigger_type": "metric",
            }
        actions[slot] = action
        return temporary_id

    entry = add(flow.entry)
    conditions = [{"conditions": [EMAIL_CONSENT]}] if flow.email_consent else []
    if flow.still_in:
        conditions.append({"conditions": [_profile_property(flow.still_in[0], [flow.still_in[1]])]})
    if flow.measured and flow.properties.holdout:  # the control group of `rfm-sync outcomes` gets no email
        not_held_out = {"type": "boolean", "operator": "equals", "value": False}
        condition = {"type": "profile-property", "property": f"properties['{flow.properties.holdout}']"}
        conditions.append({"conditions": [condition | {"filter": not_held_out}]})
    definition: dict[str, Any] = {
        "triggers": [{"type": flow.trigger.kind, "id": trigger_id}],
        "actions": actions,
        "entry_action_id": entry,
    }
    if conditions:
        definition["profile_filter"] = {"condition_groups": conditions}
    return {"data": {"type": "flow", "attributes": {"name": flow.name, "definition": definition}}}


def _message(flow: PlannedFlow, step: SendEmail, template_id: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": step.template,
        "subject_line": step.email.subject,
        "preview_text": step.email.preview,
        "smart_sending_enabled": True,
        **flow.sender,
    }
    if template_id is not None:
        message["template_id"] = template_id
    return message


def template_html(step: SendEmail, properties: PropertyNames) -> str:
    """The placeholder email: the merchant's text, and the RFM properties as Klaviyo template tags."""

    def tag(name: str, default: str = "") -> str:
        return f"{{{{ person|lookup:'{name}'|default:'{default}' }}}}"

    text = html.escape  # the merchant's text may carry template tags: escape markup, keep quotes
    moved = f"; this change: {{{{ event.{EVENT_FROM}|default:'–' }}}} → {{{{ event.{EVENT_TO}|default:'–' }}}}"
    return (
        '<!DOCTYPE html>\n<html><body style="font-family: Arial, sans-serif; max-width: 600px; margin: 0 auto;">\n'
        '<p style="background: #fff3cd; padding: 8px;">Placeholder written by rfm-sync: replace this email\'s '
        "text before you turn the flow live.</p>\n"
        f"<h1>{text(step.email.subject, quote=False)}</h1>\n"
        "<p>Hi {{ first_name|default:'there' }},</p>\n"
        f"<p>{text(step.email.body, quote=False)}</p>\n"
        '<p style="color: #666; font-size: 12px;">What you can use here (then delete this paragraph): '
        f"group {tag(properties.current_group)}, previous group {tag(properties.previous_group, '–')}, "
        f"RFM score {tag(properties.score)}, in this group since {tag(properties.group_changed_at)}"
        f"{moved if step.event else ''}.</p>\n"
        "<p>{% unsubscribe %}</p>\n</body></html>\n"
    )


def template_body(step: SendEmail, properties: PropertyNames) -> dict[str, Any]:
    """``POST /api/templates``: the email's placeholder template, named after the flow and the email."""
    attributes = {"name": step.template, "editor_type": "CODE", "html": template_html(step, properties)}
    return {"data": {"type": "template", "attributes": attributes}}


# ---------------------------------------------------------------------- talking to Klaviyo
@dataclass(frozen=True)
class FlowResult:
    key: str
    name: str
    trigger: str
    steps: str
    status: str  # "created" | "exists" | "would create" | "not created"
    flow_id: str | None = None
    flow_status: str | None = None  # Klaviyo's status of the flow: "draft", "manual", "live"
    reason: str = ""  # why it was not created


def existing_flows(dest: KlaviyoDestination) -> dict[str, tuple[str, str | None]]:
    """Name → (id, status) of every flow in the account."""
    found: dict[str, tuple[str, str | None]] = {}
    params = {"fields[flow]": "name,status", "page[size]": 50}
    with needs_scope(dest, "flows:read", "list the flows"):
        for item in pages(dest, FLOWS_PATH, limiter="flows_read", params=params):
            attributes = item.get("attributes") or {}
            if isinstance(attributes.get("name"), str):
                found[attributes["name"]] = (str(item["id"]), attributes.get("status"))
    return found


def existing_metrics(dest: KlaviyoDestination) -> dict[str, list[tuple[str, str]]]:
    """Metric name → [(id, integration name)] of every metric in the account (two integrations may
    each have a "Placed Order")."""
    found: dict[str, list[tuple[str, str]]] = {}
    with needs_scope(dest, "metrics:read", "list the metrics"):
        for item in pages(dest, METRICS_PATH, limiter="metrics_read", params={"fields[metric]": "name,integration"}):
            attributes = item.get("attributes") or {}
            integration = attributes.get("integration") or {}
            source = integration.get("name") if isinstance(integration, dict) else None
            if isinstance(attributes.get("name"), str):
                found.setdefault(attributes["name"], []).append((str(item["id"]), str(source or "?")))
    return found


def existing_templates(dest: KlaviyoDestination) -> dict[str, str]:
    with needs_scope(dest, "templates:read", "list the email templates"):
        return names(pages(dest, TEMPLATES_PATH, limiter="templates", params={"fields[template]": "name"}))


class _Lazy:
    """What the flows to create need from the account, each listed at most once, when first needed."""

    def __init__(self, dest: KlaviyoDestination):
        self.dest = dest
        self._metrics: dict[str, list[tuple[str, str]]] | None = None
        self._templates: dict[str, str] | None = None

    def metrics(self) -> dict[str, list[tuple[str, str]]]:
        if self._metrics is None:
            self._metrics = existing_metrics(self.dest)
        return self._metrics

    def templates(self) -> dict[str, str]:
        if self._templates is None:
            self._templates = existing_templates(self.dest)
        return self._templates


def _trigger_id(trigger: Trigger, segments: Mapping[str, str | None], lazy: _Lazy) -> tuple[str | None, str]:
    """(the trigger's id, or None when it is still to be created by this run's segments bootstrap;
    why it cannot be used — empty when it can)."""
    if trigger.kind == "segment":
        if trigger.name not in segments:
            return None, f"segment {trigger.name!r} does not exist: run `rfm-sync klaviyo bootstrap` (segments) first"
        return segments[trigger.name], ""
    metrics = lazy.metrics()
    if trigger.metric_id is not None:
        if any(trigger.metric_id == i for pairs in metrics.values() for i, _ in pairs):
            return trigger.metric_id, ""
        return None, f"{trigger.id_key} = {trigger.metric_id!r}: Klaviyo has no metric of that id"
    found = metrics.get(trigger.name, [])
    if len(found) == 1:
        return found[0][0], ""
    if found:
        listed = ", ".join(f"{i} from {source}" for i, source in found)
        return None, f"{len(found)} metrics are named {trigger.name!r} ({listed}): set {trigger.id_key} to one"
    if not trigger.name_key:  # the destination's own event
        return None, (
            f"metric {trigger.name!r} is not in Klaviyo yet: Klaviyo creates a metric with its first event, "
            "which rfm-sync sends at the first group change (`rfm-sync run`); run this command again after that"
        )
    return None, (
        f"no metric {trigger.name!r} in Klaviyo (a shop integration such as Shopify's records it with the first "
        f"order): set {trigger.name_key} to the name of your order metric, or turn the flow off (enabled = false)"
    )


def bootstrap_flows(
    dest: KlaviyoDestination,
    flows: Sequence[PlannedFlow],
    segments: Mapping[str, str | None],
    *,
    dry_run: bool = False,
) -> list[FlowResult]:
    """Create the ``flows`` that do not exist yet, as drafts. ``segments``: segment name → id, as
    the segments bootstrap left them (None: would be created, in a dry run)."""
    existing = existing_flows(dest)
    lazy = _Lazy(dest)
    results = []
    for flow in flows:
        row = {"key": flow.key, "name": flow.name, "trigger": flow.trigger.describe(), "steps": flow.steps()}
        if flow.name in existing:
            flow_id, status = existing[flow.name]
            results.append(FlowResult(**row, status="exists", flow_id=flow_id, flow_status=status))
            continue
        trigger_id, reason = _trigger_id(flow.trigger, segments, lazy)
        if reason:
            results.append(FlowResult(**row, status="not created", reason=reason))
        elif dry_run:
            results.append(FlowResult(**row, status="would create"))
        else:
            assert trigger_id is not None, "only a dry run has segments still to be created"
            try:
                flow_id, status = _create(dest, flow, trigger_id, lazy)
            except FatalError as exc:
                if exc.status not in (400, 409, 422):
                    raise
                results.append(FlowResult(**row, status="not created", reason=_own_words(exc)))
                continue
            results.append(FlowResult(**row, status="created", flow_id=flow_id, flow_status=status))
    return results


def _own_words(exc: FatalError) -> str:
    return Exception.__str__(exc)


def _create(dest: KlaviyoDestination, flow: PlannedFlow, trigger_id: str, lazy: _Lazy) -> tuple[str, str | None]:
    """Create ``flow`` (its templates first); its id and Klaviyo's status for it."""
    template_ids = (
        {step.template: _template(dest, step, flow.properties, lazy) for step in flow.emails()}
        if flow.templates
        else {}
    )
    body = flow_body(flow, trigger_id=trigger_id, template_ids=template_ids)
    with needs_scope(dest, "flows:write", "create flows"):
        try:
            made = create_once(
                dest,
                FLOWS_PATH,
                body,
                limiter="flows_write",
                find=lambda: existing_flows(dest).get(flow.name, (None, None))[0],
            )
        except RetryableError as exc:
            if exc.status != 429:
                raise
            raise RetryableError(
                f"Klaviyo's limit on creating flows was reached (1 a second, 15 a minute, 100 a day): {exc}; "
                "run again later (flows made so far are found by name and not made twice)",
                connector=dest.name,
                status=429,
            ) from None
    status = (made.get("attributes") or {}).get("status")
    # found again after a lost answer: no attributes, and Klaviyo creates every flow as a draft
    return str(made["id"]), status if isinstance(status, str) else "draft"


def _template(dest: KlaviyoDestination, step: SendEmail, properties: PropertyNames, lazy: _Lazy) -> str:
    """The id of ``step``'s placeholder template: the one of that name, else a new one."""
    known = lazy.templates()
    if step.template not in known:
        with needs_scope(dest, "templates:write", "create the email templates"):
            made = create_once(
                dest,
                TEMPLATES_PATH,
                template_body(step, properties),
                limiter="templates",
                find=lambda: existing_templates(dest).get(step.template),
            )
        known[step.template] = str(made["id"])
    return known[step.template]
