"""Who is told what: notifications derived from the projector's decisions.

A pure rule, fed by decisions only (escalations, effective responses), never
by raw input. Each decision yields at most one notification per recipient,
whose id is a UUIDv5 of the decision id and the recipient, so a redelivered
or replayed batch yields the same ids and a recipient never hears of one
decision twice.

Recipients are strings with a prefix naming who they are:

* ``unit:<id>`` — the unit that now holds the submission (escalation target,
  referral target; also told when one of its clocks is at risk or missed);
* ``monitoring:<id>`` — the monitoring unit, told of every overdue escalation, every
  missed deadline and every clock at risk;
* ``author:<pseudonymous id>`` — the author, through the integrator source
  that created the submission (carried in the notification's ``source``);
* ``follower:<person id>`` — whoever follows it: by ``sada.submission.followed``, or by a
  support vote, which follows by default; ``sada.submission.unfollowed``, a retraction
  or an opposing vote stops it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sada.pipeline.domain.model import Escalated, ResponsePosted

NOTIFICATION_PREFIX = "sada.notification."
ESCALATED = "sada.notification.escalated"
RESPONDED = "sada.notification.responded"
REFERRED = "sada.notification.referred"
OVERDUE = "sada.notification.overdue"
THRESHOLD_REACHED = "sada.notification.threshold_reached"
AT_RISK = "sada.notification.at_risk"
NOTIFICATION_TYPES: tuple[str, ...] = (
    ESCALATED,
    RESPONDED,
    REFERRED,
    OVERDUE,
    THRESHOLD_REACHED,
    AT_RISK,
)

# Fixed forever: changing it would give every notification a new id.
NAMESPACE = uuid.UUID("5b1f0d4e-7c1a-5e0b-9a53-2d6c0f1e8a47")

# Response kinds followers hear of: the submission was answered or resolved.
_FOLLOWED_RESPONSES = frozenset({"answer", "resolution"})


@dataclass(frozen=True, slots=True)
class Follow:
    """A change to who follows a submission: on (follows) or off (stops)."""

    submission_id: str
    recipient: str  # "author:<id>" or "follower:<voter id>"
    source: str | None  # the integrator source the recipient is reached through, if known
    on: bool


@dataclass(frozen=True, slots=True)
class Audience:
    """Who follows a submission when a decision is taken."""

    followers: Mapping[str, str | None] = field(default_factory=dict)  # recipient -> source


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    type: str
    recipient: str
    submission_id: str
    decision_id: str  # the escalation event id, or the response's event key
    at: datetime  # the instant of the decision
    source: str | None  # how an author is reached: the integrator source of the submission
    data: Mapping[str, Any]


def notification_id(decision_id: str, recipient: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{decision_id}\n{recipient}"))


def unit_recipient(unit_id: str) -> str:
    return f"unit:{unit_id}"


def author_recipient(author_id: str) -> str:
    return f"author:{author_id}"


def follower_recipient(voter_id: str) -> str:
    return f"follower:{voter_id}"


def for_escalation(
    esc: Escalated, audience: Audience, monitoring: str | None
) -> list[Notification]:
    """The receiving unit, the monitoring unit (if overdue), the author and the followers."""
    data: dict[str, Any] = {
        "from_level": esc.from_level,
        "to_level": esc.to_level,
        "from_unit_id": esc.from_unit_id,
        "to_unit_id": esc.to_unit_id,
        "reason": esc.reason,
        "support": esc.support,
    }
    overdue = esc.reason != "support_threshold"
    plan: list[tuple[str, str]] = [(unit_recipient(esc.to_unit_id), ESCALATED)]
    if overdue and monitoring is not None:
        plan.append((f"monitoring:{monitoring}", OVERDUE))
    follower_type = ESCALATED if overdue else THRESHOLD_REACHED
    plan.extend(_audience_plan(audience, ESCALATED, follower_type))
    return _build(esc.event_id, esc.submission_id, esc.time, plan, audience, data)


@dataclass(frozen=True, slots=True)
class Missed:
    """A deadline missed where nothing moves (at the root): the submission is overdue."""

    submission_id: str
    unit_id: str
    clock: str  # "first_response" or "resolution"
    deadline: datetime

    @property
    def decision_id(self) -> str:
        return f"missed {self.submission_id} {self.clock} {self.deadline.isoformat()}"


def for_missed(m: Missed, audience: Audience, monitoring: str | None) -> list[Notification]:
    """The unit holding it and the monitoring unit are told it is overdue."""
    del audience  # the people following it hear of what is done, not of what is not
    plan = [(unit_recipient(m.unit_id), OVERDUE)]
    if monitoring is not None:
        plan.append((f"monitoring:{monitoring}", OVERDUE))
    data = {"unit_id": m.unit_id, "clock": m.clock, "deadline": _instant(m.deadline)}
    return _build(m.decision_id, m.submission_id, m.deadline, plan, Audience(), data)


@dataclass(frozen=True, slots=True)
class AtRisk:
    """A running clock passed :data:`~sada.pipeline.domain.sla.AT_RISK_FRACTION` of its span."""

    submission_id: str
    unit_id: str
    clock: str  # "first_response" or "resolution"
    deadline: datetime
    at: datetime  # the at-risk instant: a pure function of the log, never the wall clock

    @property
    def decision_id(self) -> str:
        # One per deadline: a clock restarted elsewhere has another deadline, hence another id.
        return f"at_risk {self.submission_id} {self.clock} {self.deadline.isoformat()}"


def for_at_risk(r: AtRisk, monitoring: str | None) -> list[Notification]:
    """The unit holding it and the monitoring unit are told a deadline is near."""
    plan = [(unit_recipient(r.unit_id), AT_RISK)]
    if monitoring is not None:
        plan.append((f"monitoring:{monitoring}", AT_RISK))
    data = {"unit_id": r.unit_id, "clock": r.clock, "deadline": _instant(r.deadline)}
    return _build(r.decision_id, r.submission_id, r.at, plan, Audience(), data)


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def for_response(
    resp: ResponsePosted, at: datetime, audience: Audience, monitoring: str | None
) -> list[Notification]:
    """An effective response: the author always; a referral's target; followers on an answer."""
    del monitoring  # told of overdue escalations only
    data: dict[str, Any] = {
        "response_id": resp.response_id,
        "kind": resp.kind,
        "unit_id": resp.unit_id,
    }
    plan: list[tuple[str, str]] = []
    if resp.kind == "referral" and resp.referred_to_unit_id is not None:
        data["referred_to_unit_id"] = resp.referred_to_unit_id
        plan.append((unit_recipient(resp.referred_to_unit_id), REFERRED))
        author_type = REFERRED
    else:
        author_type = RESPONDED
    follower_type = RESPONDED if resp.kind in _FOLLOWED_RESPONSES else None
    plan.extend(_audience_plan(audience, author_type, follower_type))
    return _build(resp.key, resp.submission_id, at, plan, audience, data)


def _audience_plan(
    audience: Audience, author_type: str, follower_type: str | None
) -> list[tuple[str, str]]:
    authors = sorted(r for r in audience.followers if r.startswith("author:"))
    plan = [(r, author_type) for r in authors]
    if follower_type is not None:
        # An author who also follows it hears once, as its author.
        plan.extend(
            (r, follower_type)
            for r in sorted(audience.followers)
            if r.startswith("follower:") and f"author:{r[9:]}" not in audience.followers
        )
    return plan


def _build(
    decision_id: str,
    submission_id: str,
    at: datetime,
    plan: Iterable[tuple[str, str]],
    audience: Audience,
    data: Mapping[str, Any],
) -> list[Notification]:
    out: list[Notification] = []
    told: set[str] = set()
    for recipient, type_ in plan:
        if recipient in told:
            continue  # one notification per (decision, recipient): the first plan entry wins
        told.add(recipient)
        out.append(
            Notification(
                notification_id(decision_id, recipient),
                type_,
                recipient,
                submission_id,
                decision_id,
                at,
                audience.followers.get(recipient),
                dict(data),
            )
        )
    return out


def apply_follows(followers: dict[str, str | None], follows: Iterable[Follow]) -> None:
    """Apply follow changes, in order, to a ``recipient -> source`` map of one submission."""
    for f in follows:
        if f.on:
            followers[f.recipient] = f.source
        else:
            followers.pop(f.recipient, None)


@dataclass(frozen=True, slots=True)
class Decision:
    """A decision to tell people of, with where it was taken."""

    offset: int  # the log record being applied when it was decided
    follows: int  # how many of the batch's follow changes precede it
    # A response comes with the instant it took effect.
    decision: Escalated | Missed | AtRisk | tuple[ResponsePosted, datetime]

    @property
    def submission_id(self) -> str:
        d = self.decision
        return d[0].submission_id if isinstance(d, tuple) else d.submission_id


def notifications(
    decisions: Iterable[Decision],
    follows: Sequence[Follow],
    stored: Mapping[str, Mapping[str, str | None]],
    monitoring: str | None,
) -> list[tuple[int, Notification]]:
    """A batch's notifications, in decision order, each with the offset that decided it.

    ``stored`` is who followed each submission before the batch; ``follows`` the
    batch's changes, of which each decision sees those that precede it.
    """
    current: dict[str, dict[str, str | None]] = {}
    applied = 0
    out: list[tuple[int, Notification]] = []
    for d in decisions:
        for f in follows[applied : max(applied, d.follows)]:
            apply_follows(_current(current, stored, f.submission_id), (f,))
        applied = max(applied, d.follows)
        audience = Audience(dict(_current(current, stored, d.submission_id)))
        if isinstance(d.decision, Escalated):
            made = for_escalation(d.decision, audience, monitoring)
        elif isinstance(d.decision, Missed):
            made = for_missed(d.decision, audience, monitoring)
        elif isinstance(d.decision, AtRisk):
            made = for_at_risk(d.decision, monitoring)
        else:
            made = for_response(d.decision[0], d.decision[1], audience, monitoring)
        out.extend((d.offset, n) for n in made)
    return out


def _current(
    current: dict[str, dict[str, str | None]],
    stored: Mapping[str, Mapping[str, str | None]],
    sid: str,
) -> dict[str, str | None]:
    if sid not in current:
        current[sid] = dict(stored.get(sid, {}))
    return current[sid]
