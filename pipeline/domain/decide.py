"""The decision core: one submission's state and one event in, new state and escalations out.

Pure functions of their arguments (no clocks, no I/O), so the same canonical
log always yields the same decisions. Each rule of the domain lives in exactly
one function here:

- support counting: :func:`_vote` (distinct voters by current stance);
- the support ladder: :func:`_climb_ladder`;
- escalation one level up the unit tree: :func:`_escalate`;
- SLA clocks (start, stop, overdue): :func:`_arrive`, :func:`_respond`, :func:`advance`;
- referral: :func:`_respond`; closure and withdrawal: :func:`_respond`, :func:`apply`.

Deadlines fire strictly before an instant: a response stamped exactly at its
deadline is in time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from sada.pipeline.domain.model import (
    CLOSING_RESPONSES,
    DomainEvent,
    Escalated,
    EscalationReason,
    FollowChanged,
    ResponsePosted,
    SatisfactionRated,
    Stance,
    SubmissionCreated,
    SubmissionState,
    SubmissionWithdrawn,
    VoteCast,
    VoteRetracted,
    format_time,
)
from sada.pipeline.domain.rules import Rules

# Escalation ids are UUIDv5 in this namespace: the same decision always gets the same id.
ESCALATION_NAMESPACE = uuid.UUID("6f1c1f5e-5ad0-4c0e-9a51-7a2d5ada0001")

_VOTES = (VoteCast, VoteRetracted)
_STATE_FIELDS = tuple(f.name for f in fields(SubmissionState))
_STATE_POSITION = {name: i for i, name in enumerate(_STATE_FIELDS)}
_state_values = attrgetter(*_STATE_FIELDS)


def _replace(state: SubmissionState, **changes: Any) -> SubmissionState:
    """``state`` with ``changes``: :func:`dataclasses.replace` for states, without its overhead.

    Every applied event builds at least one new state, and the generic
    ``replace`` (field introspection, keyword arguments) costs more than the
    rest of the decision.
    """
    values = list(_state_values(state))
    for name, value in changes.items():
        values[_STATE_POSITION[name]] = value
    return SubmissionState(*values)


@dataclass(frozen=True, slots=True)
class Decision:
    state: SubmissionState | None
    escalations: tuple[Escalated, ...] = ()
    stance: Stance | None = None  # a voter's stance after a vote event
    stance_changed: bool = False
    effective: bool = True  # False when the event changed nothing (and why is in ``note``)
    note: str = ""


def create(event: SubmissionCreated, at: datetime, rules: Rules) -> SubmissionState:
    """A new submission: it arrives at the unit addressed, so both clocks start there."""
    unborn = SubmissionState(
        submission_id=event.submission_id,
        tracking_code=event.tracking_code,
        kind=event.kind,
        channel=event.channel,
        created_at=at,
        status="open",
        unit_id=event.unit_id,
        level=0,
        support=0,
        oppose=0,
        arrived_at=at,
        first_response_due=None,
        resolution_due=None,
        first_response_overdue=False,
        resolution_overdue=False,
        first_response_at=None,
        closed_at=None,
        satisfaction=None,
        escalations=0,
        updated_at=at,
    )
    return _arrive(unborn, event.unit_id, at, rules)


def apply(
    state: SubmissionState | None,
    event: DomainEvent,
    at: datetime,
    rules: Rules,
    prev_stance: Stance | None = None,
) -> Decision:
    """Apply one event at effective instant ``at``; deadlines before ``at`` have fired."""
    if isinstance(event, _VOTES):  # most events: tested first
        if state is None:
            return Decision(None, effective=False, note="unknown submission")
        return _vote(state, event, at, rules, prev_stance)
    if isinstance(event, SubmissionCreated):
        if state is not None:
            return Decision(state, effective=False, note="submission exists")
        return Decision(create(event, at, rules))
    if state is None:
        return Decision(None, effective=False, note="unknown submission")
    if isinstance(event, ResponsePosted):
        return _respond(state, event, at, rules)
    if isinstance(event, FollowChanged):
        # Who follows is the projector's business (its follow changes), not the state's;
        # a closed or withdrawn submission may still be followed, to hear of nothing more.
        return Decision(state)
    if isinstance(event, SatisfactionRated):
        if state.satisfaction == event.rating:
            return Decision(state, effective=False, note="same rating")
        return Decision(_replace(state, satisfaction=event.rating, updated_at=at))
    if isinstance(event, SubmissionWithdrawn):
        if state.status != "open":
            return Decision(state, effective=False, note=f"submission {state.status}")
        return Decision(
            _replace(
                state,
                status="withdrawn",
                first_response_due=None,
                resolution_due=None,
                closed_at=at,
                updated_at=at,
            )
        )
    raise TypeError(f"not a domain event: {event!r}")


def _vote(
    state: SubmissionState,
    event: VoteCast | VoteRetracted,
    at: datetime,
    rules: Rules,
    prev: Stance | None,
) -> Decision:
    new: Stance | None = event.stance if isinstance(event, VoteCast) else None
    if new == prev:
        return Decision(state, stance=new, effective=False, note="stance unchanged")
    support = state.support - (prev == "support") + (new == "support")
    oppose = state.oppose - (prev == "oppose") + (new == "oppose")
    state = _replace(state, support=support, oppose=oppose, updated_at=at)
    state, escalations = _climb_ladder(state, at, rules)
    return Decision(state, escalations, stance=new, stance_changed=True)


def _climb_ladder(
    state: SubmissionState, at: datetime, rules: Rules
) -> tuple[SubmissionState, tuple[Escalated, ...]]:
    """While level < target, escalate one step with reason support_threshold; never down."""
    if state.status != "open":
        return state, ()
    out: list[Escalated] = []
    target = rules.support_target(state.support)
    while state.level < target:
        moved = _escalate(state, "support_threshold", at, None, rules)
        if moved is None:  # at the root nothing moves
            break
        state, esc = moved
        out.append(esc)
    return state, tuple(out)


def _respond(state: SubmissionState, event: ResponsePosted, at: datetime, rules: Rules) -> Decision:
    if state.status != "open":
        return Decision(state, effective=False, note=f"submission {state.status}")
    if event.unit_id != state.unit_id:
        return Decision(state, effective=False, note="response from a unit not holding it")
    first_at = state.first_response_at or at
    if event.kind == "referral" and event.referred_to_unit_id:
        if event.referred_to_unit_id == state.unit_id:
            return Decision(
                _replace(state, first_response_due=None, first_response_at=first_at, updated_at=at)
            )
        moved = _arrive(
            _replace(state, first_response_at=first_at), event.referred_to_unit_id, at, rules
        )
        # Referred down from the root, it may owe support levels it could not climb there.
        moved, escalations = _climb_ladder(moved, at, rules)
        return Decision(moved, escalations)
    if event.kind in CLOSING_RESPONSES:
        return Decision(
            _replace(
                state,
                status="closed",
                first_response_due=None,
                resolution_due=None,
                first_response_at=first_at,
                closed_at=at,
                updated_at=at,
            )
        )
    return Decision(
        _replace(state, first_response_due=None, first_response_at=first_at, updated_at=at)
    )


def _arrive(state: SubmissionState, unit_id: str, at: datetime, rules: Rules) -> SubmissionState:
    """The submission reaches a unit: both clocks start there at ``at``."""
    first_due, resolution_due = rules.deadlines(state.kind, at)
    return _replace(
        state,
        unit_id=unit_id,
        arrived_at=at,
        first_response_due=first_due,
        resolution_due=resolution_due,
        first_response_overdue=False,
        resolution_overdue=False,
        updated_at=at,
    )


def _escalate(
    state: SubmissionState,
    reason: EscalationReason,
    at: datetime,
    deadline: datetime | None,
    rules: Rules,
) -> tuple[SubmissionState, Escalated] | None:
    parent = rules.parent_of(state.unit_id)
    if parent is None:
        return None
    n = state.escalations + 1
    event_id = str(
        uuid.uuid5(ESCALATION_NAMESPACE, f"{state.submission_id}|{n}|{reason}|{format_time(at)}")
    )
    esc = Escalated(
        event_id=event_id,
        submission_id=state.submission_id,
        time=at,
        from_level=state.level,
        to_level=state.level + 1,
        from_unit_id=state.unit_id,
        to_unit_id=parent,
        reason=reason,
        support=state.support,
        deadline=deadline,
    )
    moved = _arrive(_replace(state, level=state.level + 1, escalations=n), parent, at, rules)
    return moved, esc


def next_due(state: SubmissionState) -> datetime | None:
    """The earliest deadline still able to fire, or None."""
    if state.status != "open":
        return None
    first = None if state.first_response_overdue else state.first_response_due
    resolution = None if state.resolution_overdue else state.resolution_due
    if first is None:
        return resolution
    if resolution is None or first <= resolution:
        return first
    return resolution


def advance(
    state: SubmissionState, until: datetime, rules: Rules
) -> tuple[SubmissionState, tuple[Escalated, ...]]:
    """Fire every deadline strictly before ``until``, in order, cascading up the tree.

    Each missed deadline escalates one level at exactly its instant and
    restarts both clocks at the new unit; at the root it is marked overdue
    and nothing moves.
    """
    out: list[Escalated] = []
    while True:
        due = next_due(state)
        if due is None or not due < until:
            return state, tuple(out)
        frd, rsd = state.first_response_due, state.resolution_due
        if frd is not None and not state.first_response_overdue and frd == due:
            reason: EscalationReason = "first_response_overdue"
        else:
            assert rsd == due
            reason = "resolution_overdue"
        moved = _escalate(state, reason, due, due, rules)
        if moved is None:
            if reason == "first_response_overdue":
                state = _replace(state, first_response_overdue=True, updated_at=due)
            else:
                state = _replace(state, resolution_overdue=True, updated_at=due)
            continue
        state, esc = moved
        out.append(esc)
