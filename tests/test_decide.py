"""The decision core, rule by rule, with expectations worked out by hand from the domain rules.

Scenarios run on the demo university (``load_config()``): its unit tree
(anatomy department -> faculty of medicine -> vice-chancellery for education
-> university, the root), its calendar (Asia/Tehran, UTC+03:30 all year;
Saturday to Wednesday 08:00-16:00; 25 November 2026 is a holiday) and the
default SLA hours and support ladder 50 / 200 / 1000.

November 2026: Sat 21, Sun 22, Mon 23, Tue 24, Wed 25 (holiday), Thu 26 and
Fri 27 (weekend), Sat 28, Sun 29, Mon 30; December: Tue 1, Wed 2, Thu 3, Fri 4,
Sat 5, Sun 6, ... No holiday falls in December.

The scenarios feed events and ticks to a :class:`PartitionFold` (which keeps
voters' stances and applies deadlines before each record), or call
:mod:`sada.pipeline.domain.decide` directly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sada.pipeline.domain import decide
from sada.pipeline.domain.config import load_config
from sada.pipeline.domain.fold import DictStances, EventRecord, PartitionFold, TickRecord
from sada.pipeline.domain.model import (
    DomainEvent,
    Escalated,
    ResponsePosted,
    SatisfactionRated,
    Stance,
    SubmissionCreated,
    SubmissionState,
    SubmissionWithdrawn,
    VoteCast,
    VoteRetracted,
)
from sada.pipeline.domain.rules import Rules

CONFIG = load_config()
RULES = Rules.from_config(CONFIG)
TEHRAN = ZoneInfo("Asia/Tehran")

DEPT = "univ.fac-medicine.anatomy"
FACULTY = "univ.fac-medicine"
VC = "univ.vc-education"
ROOT = "univ"
OTHER_DEPT = "univ.fac-nursing.midwifery"  # child of univ.fac-nursing
ONE_US = timedelta(microseconds=1)


def tehran(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TEHRAN).astimezone(UTC)


T0 = tehran(2026, 11, 21, 9, 30)  # Saturday, during working hours

# A complaint created at T0 (first response 16 h, resolution 80 h):
# first response: Sat 09:30-16:00 is 6.5 h, Sun 8 h (14.5), Mon 1.5 h -> Mon 23 09:30.
FIRST_DUE = tehran(2026, 11, 23, 9, 30)
# resolution: Sat 6.5, Sun 14.5, Mon 22.5, Tue 30.5, (Wed 25 holiday, Thu/Fri off),
# Sat 28 38.5, Sun 46.5, Mon 54.5, Tue 1 62.5, Wed 2 70.5, (Thu/Fri), Sat 5 78.5,
# Sun 6 needs 1.5 h -> Sun 6 Dec 09:30.
RESOLUTION_DUE = tehran(2026, 12, 6, 9, 30)

_ids = itertools.count()


def _key() -> str:
    return f"/test/decide e{next(_ids)}"


def created(
    sid: str = "s1", unit: str = DEPT, kind: str = "complaint", at: datetime = T0
) -> SubmissionCreated:
    return SubmissionCreated(_key(), at, sid, f"code-{sid}", kind, unit, "web", "student", False)


def vote(voter: str, stance: Stance, at: datetime, sid: str = "s1") -> VoteCast:
    return VoteCast(_key(), at, sid, voter, stance)


def retract(voter: str, at: datetime, sid: str = "s1") -> VoteRetracted:
    return VoteRetracted(_key(), at, sid, voter)


def respond(
    unit: str, kind: str, at: datetime, to: str | None = None, sid: str = "s1"
) -> ResponsePosted:
    return ResponsePosted(_key(), at, sid, f"r{next(_ids)}", unit, kind, to)


@dataclass
class Run:
    """One partition's fold, fed records by the scenario; collects every escalation."""

    fold: PartitionFold = field(
        default_factory=lambda: PartitionFold(RULES, DictStances(), set[str]())
    )
    escalations: list[Escalated] = field(default_factory=list)

    def event(self, event: DomainEvent, at: datetime | None = None) -> list[Escalated]:
        step = self.fold.apply(EventRecord(event, event.time if at is None else at))
        self.escalations.extend(step.escalations)
        return step.escalations

    def tick(self, at: datetime) -> list[Escalated]:
        step = self.fold.apply(TickRecord(at))
        self.escalations.extend(step.escalations)
        return step.escalations

    def state(self, sid: str = "s1") -> SubmissionState:
        return self.fold.states[sid]

    def votes(self, first: int, last: int, at: datetime, sid: str = "s1") -> list[Escalated]:
        """Voters ``first``..``last`` support, one second apart from ``at``."""
        out: list[Escalated] = []
        for i in range(first, last + 1):
            out += self.event(vote(f"v{i}", "support", at + timedelta(seconds=i - first), sid))
        return out


def new_run(unit: str = DEPT, kind: str = "complaint", sid: str = "s1") -> Run:
    run = Run()
    run.event(created(sid, unit, kind))
    return run


# -- support ------------------------------------------------------------------------


def test_support_counts_distinct_voters_by_current_stance() -> None:
    run = new_run()
    t = T0 + timedelta(minutes=1)
    run.event(vote("a", "support", t))
    run.event(vote("b", "support", t))
    run.event(vote("c", "support", t))
    run.event(vote("a", "support", t))  # a again, same stance: still one voter
    assert (run.state().support, run.state().oppose) == (3, 0)
    run.event(vote("b", "oppose", t))  # b's later vote replaces the earlier one
    assert (run.state().support, run.state().oppose) == (2, 1)
    run.event(retract("c", t))  # c's stance is removed
    assert (run.state().support, run.state().oppose) == (1, 1)
    run.event(retract("c", t))  # nothing left to retract
    run.event(retract("never-voted", t))
    assert (run.state().support, run.state().oppose) == (1, 1)
    run.event(vote("b", "support", t))  # b changes back
    assert (run.state().support, run.state().oppose) == (2, 0)


def test_redelivered_event_changes_nothing() -> None:
    run = new_run()
    t = T0 + timedelta(minutes=1)
    first = vote("d", "support", t)
    run.event(first)
    run.event(retract("d", t + timedelta(minutes=1)))
    assert run.state().support == 0
    # The same vote (same event key) delivered again must not bring d's support back.
    step = run.fold.apply(EventRecord(first, t + timedelta(minutes=2)))
    assert step.duplicate
    assert run.state().support == 0


# -- the support ladder ---------------------------------------------------------------


def test_ladder_one_escalation_per_threshold_and_never_down() -> None:
    run = new_run()
    t = T0 + timedelta(minutes=1)
    # 49 supporters: below the first threshold, nothing moves.
    assert run.votes(1, 49, t) == []
    assert (run.state().level, run.state().unit_id) == (0, DEPT)
    # The 50th supporter reaches threshold 1 of 3: exactly one step up, at that vote's instant.
    t50 = t + timedelta(minutes=1)
    [esc] = run.event(vote("v50", "support", t50))
    assert (esc.reason, esc.from_unit_id, esc.to_unit_id) == ("support_threshold", DEPT, FACULTY)
    assert (esc.from_level, esc.to_level, esc.support, esc.time) == (0, 1, 50, t50)
    assert esc.deadline is None
    # 51..199 stay below the second threshold.
    assert run.votes(51, 199, t50) == []
    t200 = t + timedelta(minutes=5)
    [esc] = run.event(vote("v200", "support", t200))
    assert (esc.from_unit_id, esc.to_unit_id, esc.from_level, esc.to_level) == (FACULTY, VC, 1, 2)
    assert (esc.support, esc.time) == (200, t200)
    assert run.votes(201, 999, t200) == []
    t1000 = t + timedelta(minutes=30)
    [esc] = run.event(vote("v1000", "support", t1000))
    assert (esc.from_unit_id, esc.to_unit_id, esc.from_level, esc.to_level) == (VC, ROOT, 2, 3)
    # Support falls back under every threshold: the record stays where it got.
    later = t1000 + timedelta(minutes=1)
    for i in range(1, 1001):
        assert run.event(retract(f"v{i}", later)) == []
    s = run.state()
    assert (s.support, s.level, s.unit_id) == (0, 3, ROOT)
    # Climbing back over the thresholds owes nothing: level 3 already.
    assert run.votes(1, 1000, later + timedelta(minutes=1)) == []
    assert len(run.escalations) == 3


def test_ladder_at_the_root_nothing_moves() -> None:
    run = new_run(unit=ROOT)
    assert run.votes(1, 1000, T0 + timedelta(minutes=1)) == []
    s = run.state()
    assert (s.support, s.level, s.unit_id) == (1000, 0, ROOT)


def test_ladder_counts_levels_already_reached_by_overdue_escalation() -> None:
    run = new_run()
    # No response: at FIRST_DUE the complaint climbs to the faculty (level 1).
    [esc] = run.tick(FIRST_DUE + timedelta(minutes=1))
    assert (esc.reason, esc.to_level) == ("first_response_overdue", 1)
    t = FIRST_DUE + timedelta(minutes=2)
    # 50 supporters make the target level 1, which it already has: no support escalation.
    assert run.votes(1, 50, t) == []
    assert (run.state().level, run.state().unit_id) == (1, FACULTY)
    # The 200th makes the target 2: one step, faculty -> vice-chancellery.
    assert run.votes(51, 199, t) == []
    [esc] = run.event(vote("v200", "support", t + timedelta(minutes=10)))
    assert (esc.reason, esc.from_unit_id, esc.to_unit_id) == ("support_threshold", FACULTY, VC)
    assert (esc.from_level, esc.to_level) == (1, 2)


def test_ladder_steps_owed_at_the_root_are_climbed_one_event_each_when_referred_down() -> None:
    # Addressed to the root, 200 supporters raise the target to 2 but nothing can move.
    run = new_run(unit=ROOT)
    assert run.votes(1, 200, T0 + timedelta(minutes=1)) == []
    assert run.state().level == 0
    # The root refers it to a department: level 0 < target 2 there, so it climbs two
    # steps at the referral instant, one event per step, and the clocks start at VC.
    t = T0 + timedelta(hours=1)
    first, second = run.event(respond(ROOT, "referral", t, to=DEPT))
    assert (first.from_unit_id, first.to_unit_id, first.from_level, first.to_level) == (
        DEPT,
        FACULTY,
        0,
        1,
    )
    assert (second.from_unit_id, second.to_unit_id, second.from_level, second.to_level) == (
        FACULTY,
        VC,
        1,
        2,
    )
    assert {first.reason, second.reason} == {"support_threshold"}
    assert first.time == second.time == t
    s = run.state()
    assert (s.unit_id, s.level, s.arrived_at) == (VC, 2, t)


# -- referral and responses --------------------------------------------------------------


def test_referral_moves_unit_keeps_level_and_restarts_both_clocks() -> None:
    run = new_run()
    t = T0 + timedelta(hours=2)  # Sat 11:30
    assert run.event(respond(DEPT, "referral", t, to=OTHER_DEPT)) == []
    s = run.state()
    assert (s.unit_id, s.level, s.status, s.arrived_at) == (OTHER_DEPT, 0, "open", t)
    # From Sat 11:30: first response Sat 4.5 h, Sun 8 (12.5), Mon 3.5 -> Mon 23 11:30;
    # resolution Sat 4.5, Sun 12.5, Mon 20.5, Tue 28.5, Sat 28 36.5, Sun 44.5, Mon 52.5,
    # Tue 1 60.5, Wed 2 68.5, Sat 5 76.5, Sun 6 needs 3.5 -> Sun 6 Dec 11:30.
    new_first = tehran(2026, 11, 23, 11, 30)
    assert s.first_response_due == new_first
    assert s.resolution_due == tehran(2026, 12, 6, 11, 30)
    # The department's old deadline (Mon 09:30) no longer fires...
    assert run.tick(new_first) == []
    # ...the new one does, from the unit referred to.
    [esc] = run.tick(new_first + timedelta(minutes=1))
    assert (esc.reason, esc.time, esc.deadline) == ("first_response_overdue", new_first, new_first)
    assert (esc.from_unit_id, esc.to_unit_id) == (OTHER_DEPT, "univ.fac-nursing")


def test_acknowledgement_stops_only_the_first_response_clock() -> None:
    run = new_run()
    run.event(respond(DEPT, "acknowledgement", T0 + timedelta(hours=1)))
    s = run.state()
    assert (s.status, s.first_response_due, s.resolution_due) == ("open", None, RESOLUTION_DUE)
    assert run.tick(RESOLUTION_DUE) == []  # the first-response deadline passed silently
    [esc] = run.tick(RESOLUTION_DUE + timedelta(minutes=1))
    assert (esc.reason, esc.from_unit_id, esc.to_unit_id) == ("resolution_overdue", DEPT, FACULTY)
    assert (esc.time, esc.deadline, esc.from_level, esc.to_level) == (
        RESOLUTION_DUE,
        RESOLUTION_DUE,
        0,
        1,
    )


@pytest.mark.parametrize("kind", ["answer", "resolution", "rejection"])
def test_closing_responses_close_and_stop_both_clocks(kind: str) -> None:
    run = new_run()
    t = T0 + timedelta(hours=3)
    run.event(respond(DEPT, kind, t))
    s = run.state()
    assert (s.status, s.closed_at, s.first_response_due, s.resolution_due) == (
        "closed",
        t,
        None,
        None,
    )
    assert run.tick(datetime(2027, 6, 1, tzinfo=UTC)) == []


def test_closed_takes_no_escalation_but_votes_still_count() -> None:
    run = new_run()
    run.event(respond(DEPT, "answer", T0 + timedelta(hours=1)))
    assert run.votes(1, 250, T0 + timedelta(hours=2)) == []
    s = run.state()
    assert (s.status, s.support, s.level, s.unit_id) == ("closed", 250, 0, DEPT)
    run.event(retract("v1", T0 + timedelta(hours=3)))
    assert run.state().support == 249
    assert run.tick(datetime(2027, 6, 1, tzinfo=UTC)) == []


def test_withdrawal_stops_everything_but_the_record() -> None:
    run = new_run()
    t = T0 + timedelta(hours=1)
    run.event(SubmissionWithdrawn(_key(), t, "s1"))
    s = run.state()
    assert (s.status, s.closed_at, s.first_response_due, s.resolution_due) == (
        "withdrawn",
        t,
        None,
        None,
    )
    # A response after withdrawal changes nothing; deadlines never fire.
    run.event(respond(DEPT, "answer", t + timedelta(hours=1)))
    assert run.state().status == "withdrawn"
    assert run.votes(1, 60, t + timedelta(hours=2)) == []
    assert run.tick(datetime(2027, 6, 1, tzinfo=UTC)) == []


def test_response_from_a_unit_not_holding_the_submission_changes_nothing() -> None:
    state = decide.create(created(), T0, RULES)
    for kind, to in [("acknowledgement", None), ("answer", None), ("referral", OTHER_DEPT)]:
        decision = decide.apply(state, respond(FACULTY, kind, T0, to=to), T0, RULES)
        assert not decision.effective
        assert decision.state == state
        assert decision.escalations == ()
    # Through the fold: the department's deadline still fires as if nothing came.
    run = new_run()
    run.event(respond(FACULTY, "answer", T0 + timedelta(hours=1)))
    [esc] = run.tick(FIRST_DUE + ONE_US)
    assert (esc.reason, esc.time) == ("first_response_overdue", FIRST_DUE)


def test_satisfaction_is_recorded_without_moving_anything() -> None:
    run = new_run()
    run.event(respond(DEPT, "resolution", T0 + timedelta(hours=1)))
    run.event(SatisfactionRated(_key(), T0 + timedelta(hours=2), "s1", 4))
    s = run.state()
    assert (s.satisfaction, s.status, s.level) == (4, "closed", 0)


# -- deadlines ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["acknowledgement", "answer", "referral"])
def test_response_stamped_exactly_at_its_deadline_is_in_time(kind: str) -> None:
    run = new_run()
    # The clock reaching the deadline instant does not yet fire it: it fires strictly before.
    assert run.tick(FIRST_DUE) == []
    to = OTHER_DEPT if kind == "referral" else None
    assert run.event(respond(DEPT, kind, FIRST_DUE, to=to)) == []
    assert run.state().first_response_due != FIRST_DUE
    # Nothing fires before the next deadline: the department's resolution (Sun 6 Dec
    # 09:30) after an acknowledgement, none after an answer, and after a referral the
    # new unit's first response from Mon 23 09:30: Mon 6.5, Tue 14.5, Sat 28 1.5 -> 09:30.
    assert run.tick(tehran(2026, 11, 28, 9, 29)) == []
    assert run.state().level == 0


def test_advance_fires_strictly_before_its_bound() -> None:
    state = decide.create(created(), T0, RULES)
    assert state.first_response_due == FIRST_DUE
    assert state.resolution_due == RESOLUTION_DUE
    same, none = decide.advance(state, FIRST_DUE, RULES)
    assert none == () and same == state
    moved, (esc,) = decide.advance(state, FIRST_DUE + ONE_US, RULES)
    assert (esc.reason, esc.time, esc.deadline) == ("first_response_overdue", FIRST_DUE, FIRST_DUE)
    assert (moved.unit_id, moved.level, moved.arrived_at) == (FACULTY, 1, FIRST_DUE)


def test_cascade_to_the_root_then_overdue_flags_and_silence() -> None:
    run = new_run()
    escalations = run.tick(datetime(2027, 1, 31, tzinfo=UTC))
    # Nobody ever answers, so each unit's first-response clock (16 h) runs out first:
    # department from Sat 21 09:30 -> Mon 23 09:30 (see FIRST_DUE);
    # faculty from Mon 23 09:30: Mon 6.5, Tue 8 (14.5), Wed 25 holiday, Sat 28 1.5 -> 09:30;
    # vice-chancellery from Sat 28 09:30: Sat 6.5, Sun 8 (14.5), Mon 30 1.5 -> 09:30.
    at_faculty = FIRST_DUE
    at_vc = tehran(2026, 11, 28, 9, 30)
    at_root = tehran(2026, 11, 30, 9, 30)
    assert [(e.reason, e.from_unit_id, e.to_unit_id, e.to_level, e.time) for e in escalations] == [
        ("first_response_overdue", DEPT, FACULTY, 1, at_faculty),
        ("first_response_overdue", FACULTY, VC, 2, at_vc),
        ("first_response_overdue", VC, ROOT, 3, at_root),
    ]
    assert all(e.deadline == e.time for e in escalations)
    # At the root nothing moves; both deadlines pass and show as overdue:
    # first response from Mon 30 09:30: Mon 6.5, Tue 1 (14.5), Wed 2 1.5 -> Wed 2 Dec 09:30;
    # resolution (80 h): Mon 30 6.5, Tue 14.5, Wed 22.5, Sat 5 30.5, Sun 38.5, Mon 46.5,
    # Tue 54.5, Wed 9 62.5, Sat 12 70.5, Sun 13 78.5, Mon 14 1.5 -> Mon 14 Dec 09:30.
    s = run.state()
    assert (s.unit_id, s.level, s.status, s.arrived_at) == (ROOT, 3, "open", at_root)
    assert s.first_response_due == tehran(2026, 12, 2, 9, 30)
    assert s.resolution_due == tehran(2026, 12, 14, 9, 30)
    assert s.first_response_overdue and s.resolution_overdue
    assert run.tick(datetime(2028, 1, 1, tzinfo=UTC)) == []
    assert run.fold.pending_deadlines() == 0


def test_overdue_at_the_root_moves_nothing() -> None:
    run = new_run(unit=ROOT, kind="question")
    assert run.tick(datetime(2027, 1, 31, tzinfo=UTC)) == []
    s = run.state()
    assert (s.unit_id, s.level) == (ROOT, 0)
    assert s.first_response_overdue and s.resolution_overdue


def test_late_response_after_the_deadline_fired_does_not_undo_it() -> None:
    run = new_run()
    [esc] = run.tick(FIRST_DUE + timedelta(hours=1))
    assert esc.to_unit_id == FACULTY
    # The department answers stamped before its deadline but delivered after the clock
    # passed it: it takes effect at the clock, from a unit no longer holding it.
    late = respond(DEPT, "answer", FIRST_DUE - timedelta(hours=1))
    run.event(late, at=FIRST_DUE + timedelta(hours=1))
    s = run.state()
    assert (s.status, s.unit_id, s.level) == ("open", FACULTY, 1)


# -- escalation ids -------------------------------------------------------------------


def _cascade(sid: str) -> list[Escalated]:
    run = Run()
    run.event(
        SubmissionCreated(
            f"/test/ids {sid}", T0, sid, sid, "complaint", DEPT, "web", "staff", False
        )
    )
    run.votes(1, 50, T0 + timedelta(minutes=5), sid)
    run.tick(datetime(2027, 1, 31, tzinfo=UTC))
    return run.escalations


def test_escalation_ids_are_deterministic_and_distinct() -> None:
    once, again = _cascade("s1"), _cascade("s1")
    assert len(once) == 3  # one support step, then two overdue steps to the root
    assert once == again  # same inputs: same decisions, same ids, same instants
    ids = [e.event_id for e in once]
    assert len(set(ids)) == len(ids)
    other = [e.event_id for e in _cascade("s2")]
    assert set(ids).isdisjoint(other)
