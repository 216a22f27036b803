"""``[destinations.flows]``: which draft flows ``rfm-sync klaviyo bootstrap --flows`` creates.

Pure pydantic models, validated with the rest of the Klaviyo destination's table when the config
loads (so every error names its key, e.g. ``destinations[1].flows.win_back[0].emails[0].wait_days``).
Every key has a default: a merchant who writes nothing gets four drafts,

* ``win_back`` — one flow per listed group, triggered when a customer is added to that group's
  segment ("Current RFM group equals At Risk"), for "At Risk" and "Needs Attention";
* ``post_purchase`` — triggered by the shop's "Placed Order" metric, split on the current group;
* ``group_change`` — triggered by the destination's own ``metric_name`` event ("RFM Group Changed"),
  split on the event's ``from_group`` / ``to_group``.

The groups named here are checked against the configured scheme by the command (the connector's
settings cannot see ``[rfm]``): see :func:`connectors.klaviyo.flows.plan_flows`. The builders of the
flow definitions live in :mod:`connectors.klaviyo.flows`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_EMAILS = 5  # per win-back flow: a longer sequence is better built in Klaviyo's editor
MAX_FLOWS = 12  # Klaviyo allows 100 flow creations a day; a handful is what this command is for


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Email(_Table):
    """One email action, after an optional time delay. Subject, preview and body may hold Klaviyo
    template tags (``{{ first_name|default:'there' }}``, ``{{ person|lookup:'Current RFM group' }}``)."""

    wait_days: int = Field(0, ge=0, le=365)  # time delay before this email (0: none)
    subject: str = Field(min_length=1, max_length=200)
    preview: str = Field("", max_length=200)
    body: str = ""  # the placeholder paragraph of the email's template


def _win_back_emails() -> list[Email]:
    return [
        Email(
            wait_days=1,
            subject="We miss you, {{ first_name|default:'friend' }}",
            preview="Something to welcome you back",
            body="It has been a while since your last order. Here is something to welcome you back: [your offer].",
        ),
        Email(
            wait_days=6,
            subject="Still thinking of you",
            preview="Your welcome-back offer ends soon",
            body="A reminder: your welcome-back offer ends soon. [your offer, its end date]",
        ),
    ]


class WinBack(_Table):
    group: str = Field(min_length=1)
    name: str | None = Field(None, min_length=1)  # default: name_prefix + "Win-back: " + group
    enabled: bool = True
    # profile filters, checked before every step: the profile can receive email marketing, and is
    # still in `group` (a customer who bought in the meantime and moved up gets nothing more)
    email_consent: bool = True
    still_in_group: bool = True
    emails: list[Email] = Field(default_factory=_win_back_emails, min_length=1, max_length=MAX_EMAILS)


class Branch(_Table):
    """A branch of the post-purchase split: customers whose current group is one of ``groups``."""

    groups: list[str] = Field(min_length=1)
    email: Email


# The default emails, as (groups, subject, preview, body): placeholders the merchant rewrites in Klaviyo.
POST_PURCHASE_EMAILS: tuple[tuple[list[str], str, str, str], ...] = (
    (
        ["Champions", "Loyal"],
        "How do you like your order, {{ first_name|default:'there' }}?",
        "Tell us in a short review",
        "You are one of our best customers: would you tell others what you think? [review link]",
    ),
    (
        ["Recent"],
        "Picked for you",
        "Goes well with your last order",
        "Thanks again for your order. These go well with it: [products].",
    ),
)


def _post_purchase_branches() -> list[Branch]:
    return [
        Branch(groups=groups, email=Email(subject=subject, preview=preview, body=body))
        for groups, subject, preview, body in POST_PURCHASE_EMAILS
    ]


class PostPurchase(_Table):
    enabled: bool = True
    name: str | None = Field(None, min_length=1)  # default: name_prefix + "Post-purchase by RFM group"
    metric: str = Field("Placed Order", min_length=1)  # the shop integration's order metric
    # when several metrics share that name (two integrations): the id of the one to trigger on
    metric_id: str | None = Field(None, min_length=1)
    # time delay after the order, before the split: by then rfm-sync has scored the order, so the
    # split sees the customer's group after it
    wait_days: int = Field(7, ge=0, le=365)
    email_consent: bool = True
    branches: list[Branch] = Field(default_factory=_post_purchase_branches, max_length=10)
    # the email of everyone in no branch's groups; unset: they get no email
    otherwise: Email | None = Email(
        subject="Thank you for your order",
        preview="We are glad you are here",
        body="Thank you for shopping with us. [a word about your shop]",
    )


class Move(_Table):
    """A branch of the group-change split: the event's ``from_group`` is one of ``from`` and its
    ``to_group`` one of ``to`` (an empty list: any group)."""

    from_groups: list[str] = Field([], alias="from")
    to_groups: list[str] = Field([], alias="to")
    email: Email

    @model_validator(mode="after")
    def _some_condition(self) -> Move:
        if not self.from_groups and not self.to_groups:
            raise ValueError("a move needs `from` or `to` (or both): which group changes get this email?")
        return self


# The default group-change emails, as (from, to, subject, preview, body); an empty list: any group.
MOVE_EMAILS: tuple[tuple[list[str], list[str], str, str, str], ...] = (
    (
        ["Champions"],
        ["Needs Attention", "At Risk"],
        "We have not seen you in a while",
        "A thank-you for one of our best customers",
        "You have been one of our best customers, and we would love to see you again: [your offer].",
    ),
    (
        [],
        ["Champions"],
        "Thank you, {{ first_name|default:'friend' }}",
        "You are one of our best customers",
        "You are now one of our best customers. Thank you! [a perk for them]",
    ),
)


def _moves() -> list[Move]:
    return [
        Move(from_groups=src, to_groups=dst, email=Email(subject=subject, preview=preview, body=body))
        for src, dst, subject, preview, body in MOVE_EMAILS
    ]


class GroupChange(_Table):
    enabled: bool = True
    name: str | None = Field(None, min_length=1)  # default: name_prefix + "RFM group changed"
    # when several metrics are named like the destination's metric_name: the id of the one to use
    metric_id: str | None = Field(None, min_length=1)
    wait_days: int = Field(0, ge=0, le=365)  # time delay after the change, before the split
    email_consent: bool = True
    moves: list[Move] = Field(default_factory=_moves, min_length=1, max_length=10)
    otherwise: Email | None = None  # the email of every other change; unset: none


class FlowsConfig(_Table):
    # every default flow name starts with this; flows are found again by their whole name
    name_prefix: str = "RFM: "
    # give every email a placeholder template (HTML with the RFM properties; needs templates:write);
    # false: the emails are created empty, with their subject and preview text only
    templates: bool = True
    # the sender of every email; unset: the account's defaults
    from_email: str | None = Field(None, min_length=3)
    from_label: str | None = Field(None, min_length=1)
    reply_to_email: str | None = Field(None, min_length=3)
    win_back: list[WinBack] = Field(
        default_factory=lambda: [WinBack(group="At Risk"), WinBack(group="Needs Attention")], max_length=MAX_FLOWS
    )
    post_purchase: PostPurchase = PostPurchase()
    group_change: GroupChange = GroupChange()

    def flow_names(self) -> dict[str, str]:
        """Config key → flow name, for every enabled flow (win-back first, in order)."""
        names = {
            f"win_back[{i}]": w.name or f"{self.name_prefix}Win-back: {w.group}"
            for i, w in enumerate(self.win_back)
            if w.enabled
        }
        if self.post_purchase.enabled:
            names["post_purchase"] = self.post_purchase.name or f"{self.name_prefix}Post-purchase by RFM group"
        if self.group_change.enabled:
            names["group_change"] = self.group_change.name or f"{self.name_prefix}RFM group changed"
        return names

    @model_validator(mode="after")
    def _distinct_names(self) -> FlowsConfig:
        """Flows are found again by name: two flows of one name would be one flow the second time."""
        seen: dict[str, str] = {}
        for key, name in self.flow_names().items():
            if name in seen:
                raise ValueError(f"{key} and {seen[name]} are both named {name!r}: each flow needs its own name")
            seen[name] = key
        return self
