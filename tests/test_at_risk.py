"""At-risk notices: a clock passing 80% of its span tells the unit holding the submission
and the monitoring unit, once per deadline, at the instant the SLA rule gives (the
pipeline clock), whatever the batches, restarts or wall clock (hand-computed cases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sada.pipeline.domain.config import parse_config
from sada.pipeline.domain.logcodec import encode_event, encode_tick
from sada.pipeline.domain.memstore import MemoryStore
from sada.pipeline.domain.notify import AT_RISK, AtRisk, for_at_risk, notification_id
from sada.pipeline.domain.projector import Projector
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.sla import RunningClock, at_risk_instant, at_risk_marks, sla_status

T = datetime(2026, 5, 5, 9, 0, tzinfo=UTC)  # a Tuesday
US = timedelta(microseconds=1)
RULES = Rules.from_config(
    parse_config(
        {
            "ladder": {"support": [2]},
            "units": [
                {"id": "univ", "name": "U"},
                {"id": "univ.audit", "name": "A", "parent": "univ", "monitoring": True},
                {"id": "univ.food", "name": "F", "parent": "univ"},
            ],
        }
    )
)
HOURS = RULES.sla["complaint"]


def _ce(n: int, type_: str, data: dict[str, object], at: datetime) -> bytes:
    ce = {
        "specversion": "1.0",
        "id": f"e{n}",
        "source": "/integrations/telegram",
        "type": type_,
        "time": at.isoformat(),
        "subject": "sub-1",
        "datacontenttype": "application/json",
        "data": {"submission_id": "sub-1", **data},
    }
    return encode_event(ce, at, False, "sada.x")


def _created(at: datetime = T) -> bytes:
    data = {
        "tracking_code": "7816838",
        "kind": "complaint",
        "unit_id": "univ.food",
        "channel": "telegram",
        "title": "t",
        "body": "b",
        "language": "fa",
        "author": {"id": "stu-1", "role": "student"},
        "anonymous": False,
    }
    return _ce(0, "sada.submission.created", data, at)


def _risky(store: MemoryStore) -> list[tuple[str, str, datetime]]:
    return [
        (n.recipient, n.data["clock"], n.at)
        for n in store.unpublished_notifications()
        if n.type == AT_RISK
    ]


def test_the_notice_is_the_sla_rule_turned_into_a_decision() -> None:
    first = at_risk_instant(RULES.calendar, T, HOURS.first_response_hours)
    due = RULES.calendar.add_business_hours(T, HOURS.first_response_hours)
    running = [RunningClock(T, HOURS.first_response_hours, due)]
    # A microsecond before its instant the clock is on time; at its instant it is at risk.
    assert sla_status(RULES.calendar, first - US, running) == "on_time"
    assert sla_status(RULES.calendar, first, running) == "at_risk"
    store = MemoryStore()
    projector = Projector(RULES, store, 0)
    projector.apply_batch([(0, _created()), (1, encode_tick(first - US))])
    assert _risky(store) == []
    projector.apply_batch([(2, encode_tick(first))])
    assert _risky(store) == [
        ("unit:univ.food", "first_response", first),
        ("monitoring:univ.audit", "first_response", first),
    ]
    n = store.unpublished_notifications()[0]
    assert n.decision_id == f"at_risk sub-1 first_response {due.isoformat()}"
    assert n.id == notification_id(n.decision_id, "unit:univ.food")


def test_one_notice_per_deadline_and_recipient_however_the_log_is_cut() -> None:
    far = T + timedelta(days=60)
    log = [_created(), *(encode_tick(T + timedelta(hours=h)) for h in range(0, 24 * 30, 7))]
    log.append(encode_tick(far))
    whole = MemoryStore()
    Projector(RULES, whole, 0).apply_batch(list(enumerate(log)))
    cut = MemoryStore()
    for start in range(0, len(log), 3):
        # A new projector each batch, which resumes from what the store committed; each
        # batch redelivers the record before it.
        batch = range(max(0, start - 1), min(len(log), start + 3))
        Projector(RULES, cut, 0).apply_batch([(o, log[o]) for o in batch])
    assert cut.checkpoints[0].next_offset == len(log)
    assert _risky(cut) == _risky(whole)
    # The food unit, never answering, was at risk, missed, escalated: the clocks ran again.
    recipients = [(r, c) for r, c, _ in _risky(whole)]
    assert recipients[:4] == [
        ("unit:univ.food", "first_response"),
        ("monitoring:univ.audit", "first_response"),
        ("unit:univ", "first_response"),
        ("monitoring:univ.audit", "first_response"),
    ]
    ids = [n.id for n in whole.unpublished_notifications()]
    assert len(ids) == len(set(ids))


def test_a_stopped_or_moved_clock_is_not_at_risk() -> None:
    first = at_risk_instant(RULES.calendar, T, HOURS.first_response_hours)
    ack = {"response_id": "r-1", "unit_id": "univ.food", "kind": "acknowledgement", "body": "x"}
    store = MemoryStore()
    Projector(RULES, store, 0).apply_batch(
        [
            (0, _created()),
            (1, _ce(1, "sada.response.posted", ack, first - timedelta(minutes=1))),
            (2, encode_tick(first + timedelta(hours=1))),
        ]
    )
    assert _risky(store) == []  # answered in time: only the resolution clock runs on
    referral = {**ack, "kind": "referral", "referred_to_unit_id": "univ.audit"}
    store = MemoryStore()
    Projector(RULES, store, 0).apply_batch(
        [
            (0, _created()),
            (1, _ce(1, "sada.response.posted", referral, first - timedelta(minutes=1))),
            (2, encode_tick(first + timedelta(hours=1))),
        ]
    )
    assert _risky(store) == []  # the referred unit's clock started later: not at risk yet


def test_marks_follow_the_running_clocks_only() -> None:
    store = MemoryStore()
    Projector(RULES, store, 0).apply_batch([(0, _created())])
    state = store.states["sub-1"][1]
    marks = at_risk_marks(state, RULES)
    assert [(m[2], m[3], m[4]) for m in marks] == [
        ("first_response", "univ.food", state.first_response_due),
        ("resolution", "univ.food", state.resolution_due),
    ]
    assert at_risk_marks(state.__class__(**{**_fields(state), "status": "withdrawn"}), RULES) == []


def test_without_a_monitoring_unit_only_the_holding_unit_is_told() -> None:
    r = AtRisk("sub-1", "univ.food", "resolution", T + timedelta(days=3), T)
    assert [(n.recipient, n.type) for n in for_at_risk(r, None)] == [("unit:univ.food", AT_RISK)]


def _fields(state: object) -> dict[str, object]:
    return {name: getattr(state, name) for name in state.__slots__}  # type: ignore[attr-defined]
