"""Who is told what: the pure notification rule, the monitoring-unit config, and the
projector filling a batch's notifications (hand-computed cases)."""

from __future__ import annotations

import base64
import json
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from sada.infra.settings import webhook_keys
from sada.pipeline.domain.config import parse_config
from sada.pipeline.domain.errors import ConfigError, SettingsError
from sada.pipeline.domain.logcodec import encode_event, encode_tick
from sada.pipeline.domain.memstore import MemoryStore
from sada.pipeline.domain.model import Escalated, ResponsePosted
from sada.pipeline.domain.notify import (
    ESCALATED,
    NAMESPACE,
    NOTIFICATION_TYPES,
    OVERDUE,
    REFERRED,
    RESPONDED,
    THRESHOLD_REACHED,
    Audience,
    Follow,
    apply_follows,
    for_escalation,
    for_response,
    notification_id,
)
from sada.pipeline.domain.outbound import notification_event, notification_schema
from sada.pipeline.domain.projector import Projector
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.vocabulary import ESCALATION_REASONS, RESPONSE_KINDS
from sada.pipeline.domain.webhooks import routes

T = datetime(2026, 5, 5, 9, 0, tzinfo=UTC)
AUDIENCE = Audience(
    {
        "author:stu-1": "/integrations/telegram",
        "follower:v2": None,
        "follower:v1": None,
    }
)


def _esc(reason: str) -> Escalated:
    return Escalated(
        "esc-1",
        "sub-1",
        T,
        0,
        1,
        "univ.food",
        "univ.vc",
        reason,
        50,
        None,  # type: ignore[arg-type]
    )


def _resp(kind: str, target: str | None = None) -> ResponsePosted:
    return ResponsePosted("/p r-1", T, "sub-1", "r-1", "univ.food", kind, target)


def test_threshold_escalation_tells_unit_author_and_followers_not_monitoring() -> None:
    got = for_escalation(_esc("support_threshold"), AUDIENCE, "univ.audit")
    assert [(n.recipient, n.type) for n in got] == [
        ("unit:univ.vc", ESCALATED),
        ("author:stu-1", ESCALATED),
        ("follower:v1", THRESHOLD_REACHED),
        ("follower:v2", THRESHOLD_REACHED),
    ]
    assert got[1].source == "/integrations/telegram"
    assert got[0].source is None
    assert all(n.at == T and n.submission_id == "sub-1" for n in got)
    assert got[0].data["to_unit_id"] == "univ.vc"


def test_overdue_escalation_tells_the_monitoring_unit() -> None:
    got = for_escalation(_esc("first_response_overdue"), AUDIENCE, "univ.audit")
    assert [(n.recipient, n.type) for n in got] == [
        ("unit:univ.vc", ESCALATED),
        ("monitoring:univ.audit", OVERDUE),
        ("author:stu-1", ESCALATED),
        ("follower:v1", ESCALATED),
        ("follower:v2", ESCALATED),
    ]
    assert [n.recipient for n in for_escalation(_esc("resolution_overdue"), Audience(), None)] == [
        "unit:univ.vc"
    ]


def test_ids_are_uuid5_of_decision_and_recipient() -> None:
    got = for_escalation(_esc("support_threshold"), AUDIENCE, None)
    assert got[0].id == str(uuid.uuid5(NAMESPACE, "esc-1\nunit:univ.vc"))
    assert got[0].id == notification_id("esc-1", "unit:univ.vc")
    assert len({n.id for n in got}) == len(got)
    # The same decision again: the same ids.
    assert [n.id for n in for_escalation(_esc("support_threshold"), AUDIENCE, None)] == [
        n.id for n in got
    ]


def test_responses() -> None:
    ack = for_response(_resp("acknowledgement"), T, AUDIENCE, "univ.audit")
    assert [(n.recipient, n.type) for n in ack] == [("author:stu-1", RESPONDED)]
    answer = for_response(_resp("answer"), T, AUDIENCE, None)
    assert [(n.recipient, n.type) for n in answer] == [
        ("author:stu-1", RESPONDED),
        ("follower:v1", RESPONDED),
        ("follower:v2", RESPONDED),
    ]
    assert answer[0].decision_id == "/p r-1" and answer[0].data["kind"] == "answer"
    referral = for_response(_resp("referral", "univ.it"), T, AUDIENCE, None)
    assert [(n.recipient, n.type) for n in referral] == [
        ("unit:univ.it", REFERRED),
        ("author:stu-1", REFERRED),
    ]
    assert referral[0].data["referred_to_unit_id"] == "univ.it"


@pytest.mark.parametrize("kind", RESPONSE_KINDS)
def test_the_author_hears_of_every_response_and_followers_of_answers_and_resolutions(
    kind: str,
) -> None:
    target = "univ.it" if kind == "referral" else None
    got = {n.recipient: n.type for n in for_response(_resp(kind, target), T, AUDIENCE, None)}
    assert got["author:stu-1"] == (REFERRED if kind == "referral" else RESPONDED)
    followers = {r for r in got if r.startswith("follower:")}
    assert followers == (
        {"follower:v1", "follower:v2"} if kind in ("answer", "resolution") else set()
    )


@pytest.mark.parametrize("reason", ESCALATION_REASONS)
def test_the_author_hears_of_every_escalation(reason: str) -> None:
    got = {n.recipient: n.type for n in for_escalation(_esc(reason), AUDIENCE, "univ.audit")}
    assert got["author:stu-1"] == ESCALATED


def test_one_notification_per_recipient() -> None:
    # The escalation target is also a follower's id spelled as a unit: still one each.
    audience = Audience({"unit:univ.vc": None, "follower:v1": None})
    got = for_escalation(_esc("support_threshold"), audience, None)
    assert [n.recipient for n in got] == ["unit:univ.vc", "follower:v1"]


def test_apply_follows_in_order() -> None:
    followers: dict[str, str | None] = {"follower:v1": None}
    apply_follows(
        followers,
        [
            Follow("sub-1", "follower:v2", None, True),
            Follow("sub-1", "follower:v1", None, False),
            Follow("sub-1", "author:a", "/s", True),
        ],
    )
    assert followers == {"follower:v2": None, "author:a": "/s"}


def _units(*extra: dict[str, object]) -> dict[str, object]:
    return {
        "units": [
            {"id": "univ", "name": "U"},
            {"id": "univ.audit", "name": "A", "parent": "univ", **(extra[0] if extra else {})},
        ]
    }


def test_monitoring_unit_from_config() -> None:
    assert parse_config(_units()).monitoring_unit == "univ"  # default: the root
    assert parse_config(_units({"monitoring": True})).monitoring_unit == "univ.audit"
    with pytest.raises(ConfigError) as e:
        parse_config(_units({"monitoring": "yes"}))
    assert "units[1].monitoring" in str(e.value)


# -- the projector fills a batch's notifications ------------------------------------------

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


def _ce(
    n: int, type_: str, data: dict[str, object], minutes: int, sid: str = "sub-1"
) -> tuple[bytes, str]:
    ce = {
        "specversion": "1.0",
        "id": f"e{n}",
        "source": "/integrations/telegram",
        "type": type_,
        "time": (T + timedelta(minutes=minutes)).isoformat(),
        "subject": sid,
        "datacontenttype": "application/json",
        "data": {"submission_id": sid, **data},
    }
    return encode_event(
        ce, T + timedelta(minutes=minutes), False, "sada.x"
    ), f"/integrations/telegram e{n}"


def _history() -> list[bytes]:
    created = {
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
    return [
        _ce(0, "sada.submission.created", created, 0)[0],
        _ce(1, "sada.vote.cast", {"voter_id": "v1", "stance": "support"}, 1)[0],
        _ce(2, "sada.vote.cast", {"voter_id": "v3", "stance": "oppose"}, 2)[0],
        _ce(3, "sada.vote.cast", {"voter_id": "v2", "stance": "support"}, 3)[0],  # threshold
        _ce(4, "sada.vote.retracted", {"voter_id": "v1"}, 4)[0],
        _ce(5, "sada.response.posted", _answer("univ"), 5)[0],
        _ce(6, "sada.submission.created", {**created, "tracking_code": "7816839"}, 6, "sub-2")[0],
        encode_tick(T + timedelta(days=60)),  # sub-2 was never answered: overdue
    ]


def _answer(unit: str) -> dict[str, object]:
    return {"response_id": "r-1", "unit_id": unit, "kind": "acknowledgement", "body": "x"}


def _notes(store: MemoryStore) -> list[tuple[str, str, str]]:
    return [(n.decision_id, n.recipient, n.type) for n in store.unpublished_notifications()]


def test_projector_tells_each_decisions_audience_as_it_was_then() -> None:
    store = MemoryStore()
    Projector(RULES, store, 0).apply_batch(list(enumerate(_history())))
    notes = _notes(store)
    esc = store.unpublished_escalations()
    assert [e.reason for e in esc][:1] == ["support_threshold"]
    threshold = esc[0].event_id
    assert notes[:4] == [
        (threshold, "unit:univ", ESCALATED),
        (threshold, "author:stu-1", ESCALATED),
        (threshold, "follower:v1", THRESHOLD_REACHED),  # v3 opposed: not a follower
        (threshold, "follower:v2", THRESHOLD_REACHED),  # its vote crossed the threshold
    ]
    # The acknowledgement: the author only (followers hear of answers and resolutions).
    assert notes[4] == ("/integrations/telegram e5", "author:stu-1", RESPONDED)
    assert store.unpublished_notifications()[1].source == "/integrations/telegram"
    overdue = next(e for e in esc if e.submission_id == "sub-2")
    assert overdue.reason == "first_response_overdue"
    assert [(r, t) for d, r, t in notes if d == overdue.event_id] == [
        ("unit:univ", ESCALATED),
        ("monitoring:univ.audit", OVERDUE),
        ("author:stu-1", ESCALATED),
    ]
    # At the root nothing moves: a missed deadline tells the holding and the monitoring unit.
    missed = [(d, r, t) for d, r, t in notes if d.startswith("missed ")]
    assert missed[:2] == [
        ("missed sub-2 first_response 2026-05-11T09:06:00+00:00", "unit:univ", OVERDUE),
        ("missed sub-2 first_response 2026-05-11T09:06:00+00:00", "monitoring:univ.audit", OVERDUE),
    ]
    # The acknowledged submission missed only its resolution deadline.
    assert [d for d, _, _ in missed if "sub-1" in d] == [
        "missed sub-1 resolution 2026-05-19T09:03:00+00:00"
    ] * 2
    ids = [n.id for n in store.unpublished_notifications()]
    assert len(ids) == len(set(ids))


def test_batch_boundaries_change_nothing() -> None:
    whole = MemoryStore()
    Projector(RULES, whole, 0).apply_batch(list(enumerate(_history())))
    for cut in range(1, len(_history())):
        split = MemoryStore()
        records = list(enumerate(_history()))
        projector = Projector(RULES, split, 0)
        projector.apply_batch(records[:cut])
        projector.apply_batch(records[cut:])
        assert _notes(split) == _notes(whole), cut
        # A restarted projector redelivered the whole log: nothing new.
        Projector(RULES, split, 0).apply_batch(records)
        assert _notes(split) == _notes(whole), cut


# -- the CloudEvents: one schema per type, an example each ---------------------------------

NOTIFICATION_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "notifications"


def _schema(type_: str) -> Draft202012Validator:
    schema = json.loads((NOTIFICATION_SCHEMAS / f"{type_}.v1.json").read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == notification_schema(type_)
    return Draft202012Validator(schema)


@pytest.mark.parametrize("type_", NOTIFICATION_TYPES)
def test_each_type_has_a_schema_and_a_valid_example(type_: str) -> None:
    paths = sorted((NOTIFICATION_SCHEMAS / "examples").glob(f"{type_}.valid.*.json"))
    assert paths
    for path in paths:
        example = json.loads(path.read_text("utf-8"))
        assert example["type"] == type_ and example["dataschema"] == notification_schema(type_)
        _schema(type_).validate(example["data"])
        wrong = {**example["data"], "recipient": "someone"}
        assert not _schema(type_).is_valid(wrong)


def test_every_notification_of_a_history_fits_its_schema() -> None:
    store = MemoryStore()
    Projector(RULES, store, 0).apply_batch(list(enumerate(_history())))
    made = store.unpublished_notifications()
    made += for_response(_resp("referral", "univ.it"), T, AUDIENCE, None)
    assert {n.type for n in made} == set(NOTIFICATION_TYPES)
    for n in made:
        event = notification_event(n)
        assert event["id"] == n.id and event["subject"] == n.submission_id
        _schema(n.type).validate(event["data"])


def test_the_readmes_webhook_example_parses_and_routes() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    block = readme.split("<!-- example: webhooks -->\n```toml\n", 1)[1].split("```", 1)[0]
    raw = tomllib.loads(load_config_text() + block)
    hooks = parse_config(raw).webhooks
    assert [h.id for h in hooks] == ["food-unit-inbox"] and hooks[0].secret_env
    with pytest.raises(ConfigError) as e:
        parse_config({**raw, "webhooks": [{**raw["webhooks"][0], "types": ["escalated"]}]})
    assert "webhooks[0].types" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({**raw, "webhooks": [{**raw["webhooks"][0], "url": "ftp://x"}]})
    assert "webhooks[0].url" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({**raw, "webhooks": [{**raw["webhooks"][0], "secret": "whsec_AAAA"}]})
    assert "webhooks[0].secret_env" in str(e.value)  # both given


def load_config_text() -> str:
    shipped = Path(__file__).resolve().parent.parent / "sada" / "default_config.toml"
    return shipped.read_text("utf-8") + "\n"


def test_routes_follow_types_recipient_kinds_and_unit_subtrees() -> None:
    config = parse_config(
        {
            **_units(),
            "webhooks": [
                {"id": "all", "url": "http://a", "secret": SECRET, "types": [ESCALATED]},
                {
                    "id": "root-units",
                    "url": "https://b/x",
                    "secret": SECRET,
                    "types": [ESCALATED, OVERDUE],
                    "units": ["univ"],
                },
                {
                    "id": "audit-only",
                    "url": "https://c",
                    "secret": SECRET,
                    "types": [OVERDUE],
                    "units": ["univ.audit"],
                    "recipients": ["monitoring"],
                },
            ],
        }
    )
    made = for_escalation(_esc("first_response_overdue"), AUDIENCE, "univ.audit")
    parent = {"univ.vc": "univ", "univ.audit": "univ"}.get
    got = {n.recipient: routes(config.webhooks, n, parent) for n in made}
    assert got == {
        "unit:univ.vc": ["all", "root-units"],
        "monitoring:univ.audit": ["root-units", "audit-only"],
        "author:stu-1": ["all"],
        "follower:v1": ["all"],
        "follower:v2": ["all"],
    }


SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()


def test_webhook_keys_name_the_variable() -> None:
    hook = parse_config(
        {"webhooks": [{"id": "w", "url": "http://a", "secret_env": "SADA_W", "types": [ESCALATED]}]}
    ).webhooks
    assert webhook_keys(hook, {"SADA_W": SECRET}) == {"w": b"0123456789abcdef"}
    for env in ({}, {"SADA_W": "plain"}):
        with pytest.raises(SettingsError) as e:
            webhook_keys(hook, env)
        assert "SADA_W" in str(e.value)
