"""Domain events and submission state: plain, immutable dataclasses.

These are what the decision core consumes and produces. They carry only
what decisions need; the full CloudEvent stays in the canonical log and the
archive. All instants are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

# Re-exported: the closed sets and event type names are defined in the vocabulary.
from sada.pipeline.domain.vocabulary import CLOSING_RESPONSES as CLOSING_RESPONSES
from sada.pipeline.domain.vocabulary import RESPONSE_POSTED as RESPONSE_POSTED
from sada.pipeline.domain.vocabulary import SATISFACTION_RATED as SATISFACTION_RATED
from sada.pipeline.domain.vocabulary import SUBMISSION_CREATED as SUBMISSION_CREATED
from sada.pipeline.domain.vocabulary import SUBMISSION_ESCALATED as SUBMISSION_ESCALATED
from sada.pipeline.domain.vocabulary import SUBMISSION_FOLLOWED as SUBMISSION_FOLLOWED
from sada.pipeline.domain.vocabulary import SUBMISSION_UNFOLLOWED as SUBMISSION_UNFOLLOWED
from sada.pipeline.domain.vocabulary import SUBMISSION_WITHDRAWN as SUBMISSION_WITHDRAWN
from sada.pipeline.domain.vocabulary import VOTE_CAST as VOTE_CAST
from sada.pipeline.domain.vocabulary import VOTE_RETRACTED as VOTE_RETRACTED
from sada.pipeline.domain.vocabulary import EscalationReason as EscalationReason
from sada.pipeline.domain.vocabulary import Stance as Stance

Status = Literal["open", "closed", "withdrawn"]


@dataclass(frozen=True, slots=True)
class SubmissionCreated:
    key: str  # "<source> <id>": the idempotency key of the CloudEvent
    time: datetime
    submission_id: str
    tracking_code: str
    kind: str
    unit_id: str
    channel: str
    author_role: str
    anonymous: bool


@dataclass(frozen=True, slots=True)
class SubmissionWithdrawn:
    key: str
    time: datetime
    submission_id: str


@dataclass(frozen=True, slots=True)
class VoteCast:
    key: str
    time: datetime
    submission_id: str
    voter_id: str
    stance: Stance


@dataclass(frozen=True, slots=True)
class VoteRetracted:
    key: str
    time: datetime
    submission_id: str
    voter_id: str


@dataclass(frozen=True, slots=True)
class FollowChanged:
    """A person starts (``on``) or stops following a submission: it changes no state."""

    key: str
    time: datetime
    submission_id: str
    follower_id: str
    on: bool


@dataclass(frozen=True, slots=True)
class ResponsePosted:
    key: str
    time: datetime
    submission_id: str
    response_id: str
    unit_id: str
    kind: str
    referred_to_unit_id: str | None


@dataclass(frozen=True, slots=True)
class SatisfactionRated:
    key: str
    time: datetime
    submission_id: str
    rating: int


DomainEvent = (
    SubmissionCreated
    | SubmissionWithdrawn
    | VoteCast
    | VoteRetracted
    | ResponsePosted
    | SatisfactionRated
    | FollowChanged
)


@dataclass(frozen=True, slots=True)
class Escalated:
    """A decision to escalate: becomes a ``sada.submission.escalated`` event."""

    event_id: str
    submission_id: str
    time: datetime  # the instant of the decision (the deadline instant for overdue reasons)
    from_level: int
    to_level: int
    from_unit_id: str
    to_unit_id: str
    reason: EscalationReason
    support: int
    deadline: datetime | None


@dataclass(frozen=True, slots=True)
class SubmissionState:
    """What the decision core knows of one submission. Small on purpose: no voter lists."""

    submission_id: str
    tracking_code: str
    kind: str
    channel: str
    created_at: datetime
    status: Status
    unit_id: str  # the unit holding it now
    level: int  # escalations so far
    support: int
    oppose: int
    arrived_at: datetime  # when it reached the current unit: both clocks start here
    first_response_due: datetime | None  # None once stopped
    resolution_due: datetime | None
    first_response_overdue: bool  # passed at the root, where nothing moves
    resolution_overdue: bool
    first_response_at: datetime | None  # first response from a holding unit, ever
    closed_at: datetime | None
    satisfaction: int | None
    escalations: int  # escalation events emitted, numbers them deterministically
    updated_at: datetime  # effective time of the last change


def utc(dt: datetime) -> datetime:
    """The same instant in UTC; naive datetimes are rejected."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: an instant needs a time zone")
    return dt.astimezone(UTC)


# Spellings of recently formatted or parsed instants. ``isoformat`` costs ten
# times a dict lookup, and the same instants are spelled over and over: an
# event's effective time when ingress writes it and when the store records it,
# a submission's clocks each time its state is stored. Keyed by the instant
# (aware datetimes hash and compare as instants), so any equal instant shares
# the one spelling; emptied when full rather than kept in order.
_SPELLINGS: dict[datetime, str] = {}
_SPELLINGS_MAX = 1 << 15


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC with microseconds: one spelling per instant, so bytes compare equal."""
    text = _SPELLINGS.get(dt)
    if text is not None:
        return text
    # isoformat of a UTC instant ends in "+00:00"; it is about twice as fast as strftime,
    # which showed up in every event ingress writes.
    u = dt if dt.tzinfo is UTC else utc(dt)
    text = u.isoformat(timespec="microseconds")[:-6] + "Z"
    _remember(dt, text)
    return text


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp with offset, as a UTC datetime."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is not UTC:
        dt = utc(dt)
    if _is_spelling(text):
        _remember(dt, text)
    return dt


def _is_spelling(text: str) -> bool:
    """Whether ``text``, which parsed, is already :func:`format_time`'s spelling of it."""
    return (
        len(text) == 27
        and text[26] == "Z"
        and text[10] == "T"
        and text[19] == "."
        and text[4] == text[7] == "-"
        and text[13] == text[16] == ":"
        and text[11:13] < "24"  # a parser that reads 24:00 as the next midnight spells it 00:00
    )


def _remember(dt: datetime, text: str) -> None:
    if len(_SPELLINGS) >= _SPELLINGS_MAX:
        _SPELLINGS.clear()
    _SPELLINGS[dt] = text
