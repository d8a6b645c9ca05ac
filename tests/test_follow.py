"""Following a submission: ``sada.submission.followed`` / ``unfollowed`` from the
contract to the audience of its notifications (hand-computed cases, in memory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sada.infra.contracts import TOPIC_OF_TYPE, validate_event
from sada.pipeline.domain.config import parse_config
from sada.pipeline.domain.logcodec import encode_event, encode_tick
from sada.pipeline.domain.memstore import MemoryStore
from sada.pipeline.domain.model import ResponsePosted
from sada.pipeline.domain.notify import RESPONDED, THRESHOLD_REACHED, Audience, for_response
from sada.pipeline.domain.projector import Projector
from sada.pipeline.domain.rules import Rules
from sada.producers.privacy import Pseudonymizer, is_pseudonym

T = datetime(2026, 5, 5, 9, 0, tzinfo=UTC)
TELEGRAM, PORTAL = "/integrations/telegram", "/integrations/portal"
RULES = Rules.from_config(
    parse_config(
        {
            "ladder": {"support": [2]},
            "units": [
                {"id": "univ", "name": "U"},
                {"id": "univ.food", "name": "F", "parent": "univ"},
            ],
        }
    )
)
CREATED = {
    "tracking_code": "7816838",
    "kind": "complaint",
    "unit_id": "univ.food",
    "channel": "telegram",
    "title": "t",
    "body": "b",
    "language": "fa",
    "author": {"id": "stu-1", "role": "student"},
    "anonymous": True,
}


def _ce(n: int, type_: str, data: dict[str, object], minutes: int, source: str = TELEGRAM):
    return {
        "specversion": "1.0",
        "id": f"e{n}",
        "source": source,
        "type": type_,
        "time": (T + timedelta(minutes=minutes)).isoformat(),
        "subject": "sub-1",
        "datacontenttype": "application/json",
        "data": {"submission_id": "sub-1", **data},
    }


def _log(*events: dict[str, object]) -> list[tuple[int, bytes]]:
    out = []
    for i, ce in enumerate(events):
        at = datetime.fromisoformat(str(ce["time"]))
        out.append((i, encode_event(ce, at, False, TOPIC_OF_TYPE[str(ce["type"])])))
    return out


def _follow(n: int, who: str, minutes: int, on: bool = True, source: str = TELEGRAM):
    type_ = "sada.submission.followed" if on else "sada.submission.unfollowed"
    return _ce(n, type_, {"follower_id": who}, minutes, source)


def _answer(n: int, minutes: int, kind: str = "answer"):
    data = {"response_id": f"r-{n}", "unit_id": "univ.food", "kind": kind, "body": "x"}
    return _ce(n, "sada.response.posted", data, minutes)


def _told(store: MemoryStore) -> list[tuple[str, str, str | None]]:
    return [(n.recipient, n.type, n.source) for n in store.unpublished_notifications()]


def test_follow_events_are_votes_topic_events_and_their_person_id_is_pseudonymised() -> None:
    assert TOPIC_OF_TYPE["sada.submission.followed"] == "sada.votes"
    assert TOPIC_OF_TYPE["sada.submission.unfollowed"] == "sada.votes"
    ce = _follow(1, "stu-2290", 1)
    validate_event(ce)
    hidden = Pseudonymizer(b"a key").apply(ce)
    assert is_pseudonym(hidden["data"]["follower_id"])
    # The same person as a voter gets the same pseudonym: one follower, not two.
    vote = _ce(2, "sada.vote.cast", {"voter_id": "stu-2290", "stance": "support"}, 2)
    voted = Pseudonymizer(b"a key").apply(vote)
    assert voted["data"]["voter_id"] == hidden["data"]["follower_id"]


def test_a_follower_hears_of_the_answer_through_the_integrator_it_followed_by() -> None:
    store = MemoryStore()
    log = _log(
        _ce(0, "sada.submission.created", CREATED, 0),
        _follow(1, "f1", 1, source=PORTAL),
        _follow(2, "f2", 2),
        _follow(3, "f2", 3, on=False),  # stops before the answer
        _answer(4, 4),
    )
    Projector(RULES, store, 0).apply_batch(log)
    assert store.follows["sub-1"] == {"author:stu-1": TELEGRAM, "follower:f1": PORTAL}
    assert _told(store) == [
        ("author:stu-1", RESPONDED, TELEGRAM),
        ("follower:f1", RESPONDED, PORTAL),
    ]


def test_unfollowing_stops_the_default_follow_of_a_support_vote() -> None:
    store = MemoryStore()
    log = _log(
        _ce(0, "sada.submission.created", CREATED, 0),
        _ce(1, "sada.vote.cast", {"voter_id": "v1", "stance": "support"}, 1),
        _follow(2, "v1", 2, on=False),
        _ce(3, "sada.vote.cast", {"voter_id": "v2", "stance": "support"}, 3),  # threshold
    )
    Projector(RULES, store, 0).apply_batch(log)
    assert sorted(store.follows["sub-1"]) == ["author:stu-1", "follower:v2"]
    # Still a supporter: the vote counts, but v1 is not told.
    assert store.states["sub-1"][1].support == 2
    assert [(r, t) for r, t, _ in _told(store) if r.startswith("follower:")] == [
        ("follower:v2", THRESHOLD_REACHED)
    ]


def test_following_changes_no_state_and_following_twice_changes_nothing() -> None:
    store = MemoryStore()
    log = _log(
        _ce(0, "sada.submission.created", CREATED, 0),
        _follow(1, "f1", 1),
        _follow(2, "f1", 2),
    )
    Projector(RULES, store, 0).apply_batch(log)
    state = store.states["sub-1"][1]
    assert state.updated_at == T and state.support == 0
    assert store.follows["sub-1"] == {"author:stu-1": TELEGRAM, "follower:f1": TELEGRAM}
    assert [e.effective for e in store.events.values()] == [True, True, True]


def test_a_follow_of_an_unknown_submission_is_treated_as_a_vote_for_one() -> None:
    store = MemoryStore()
    vote = _ce(0, "sada.vote.cast", {"voter_id": "v1", "stance": "support"}, 0)
    log = _log(vote, _follow(1, "f1", 0), _follow(2, "f1", 1, on=False))
    Projector(RULES, store, 0).apply_batch([*log, (3, encode_tick(T + timedelta(minutes=5)))])
    outcome = {e.type: (e.effective, e.note) for e in store.events.values()}
    assert outcome == {
        "sada.vote.cast": (False, "unknown submission"),
        "sada.submission.followed": (False, "unknown submission"),
        "sada.submission.unfollowed": (False, "unknown submission"),
    }
    assert store.follows == {} and store.notifications == {}


def test_an_author_who_follows_hears_once_as_its_author() -> None:
    answer = ResponsePosted("k", T, "sub-1", "r-1", "univ.food", "answer", None)
    audience = Audience({"author:p1": TELEGRAM, "follower:p1": TELEGRAM, "follower:p2": None})
    told = for_response(answer, T, audience, None)
    assert [(n.recipient, n.type) for n in told] == [
        ("author:p1", RESPONDED),
        ("follower:p2", RESPONDED),
    ]
