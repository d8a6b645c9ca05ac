"""One simulated submission: the events it is made of, and its state as the pipeline follows it."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sada.pipeline.domain import decide
from sada.pipeline.domain.logcodec import to_domain
from sada.pipeline.domain.model import (
    RESPONSE_POSTED,
    SATISFACTION_RATED,
    SUBMISSION_CREATED,
    SUBMISSION_WITHDRAWN,
    VOTE_CAST,
    VOTE_RETRACTED,
    SubmissionState,
)
from sada.producers.events import build_event
from sada.producers.simulator.world import PEOPLE, World, new_id, person, weighted
from sada.producers.texts import Composed

CHANNELS = (
    ("telegram", 28),
    ("web", 25),
    ("whatsapp", 14),
    ("phone", 10),
    ("email", 10),
    ("sms", 8),
    ("in_person", 5),
)
KINDS = (("complaint", 35), ("suggestion", 25), ("question", 25), ("criticism", 15))
LANGUAGES = (("fa", 76), ("ru", 13), ("en", 11))
ROLES: Mapping[str, tuple[tuple[str, int], ...]] = {
    "fa": (("student", 52), ("staff", 15), ("citizen", 14), ("faculty", 10), ("alumni", 6)),
    "ru": (("alumni", 40), ("student", 45), ("faculty", 15)),
    "en": (("student", 50), ("faculty", 25), ("citizen", 15), ("alumni", 10)),
}
_VOTE_CHANNELS = ("web", "telegram", "whatsapp")
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Step:
    """A response a unit will post, unless something moves the submission first."""

    at: datetime
    kind: str
    referred_to: str | None = None


class Tracker:
    """One submission: builds its events and follows its state as the pipeline will."""

    def __init__(self, world: World, rng: random.Random, created_at: datetime) -> None:
        self.world = world
        self.rng = rng
        self.kind = weighted(rng, KINDS)
        self.language = weighted(rng, LANGUAGES)
        self.channel = weighted(rng, CHANNELS)
        self.unit_id = world.pick_unit(rng)
        self.tracking_code = world.new_code(rng)
        self.submission_id = new_id(rng)
        self.text: Composed = world.texts.submission(
            rng, kind=self.kind, language=self.language, unit_id=self.unit_id, channel=self.channel
        )
        self.created_at = created_at
        self.state: SubmissionState | None = None
        self.stances: dict[str, str] = {}
        self.overdue_escalations = 0
        self.referrals = 0
        self.last_time = created_at

    @property
    def is_open(self) -> bool:
        return self.state is not None and self.state.status == "open"

    def create(self) -> dict[str, Any]:
        rng = self.rng
        data = {
            "submission_id": self.submission_id,
            "tracking_code": self.tracking_code,
            "kind": self.kind,
            "title": self.text.title,
            "body": self.text.body,
            "language": self.language,
            "channel": self.channel,
            "unit_id": self.unit_id,
            "author": {
                "id": person(rng.randrange(PEOPLE)),
                "role": weighted(rng, ROLES[self.language]),
            },
            "anonymous": rng.random() < 0.25,
        }
        return self._event(SUBMISSION_CREATED, data, self.created_at, self.channel)

    def advance_one(self, until: datetime) -> bool:
        """Fire the earliest deadline before ``until``, if any; True if it moved the submission."""
        assert self.state is not None
        due = decide.next_due(self.state)
        if due is None or not due < until:
            return False
        self.state, escalations = decide.advance(self.state, due + _ONE_US, self.world.rules)
        self.overdue_escalations += len(escalations)
        return bool(escalations)

    def vote(self, at: datetime, voter: str, stance: str | None) -> dict[str, Any]:
        data = {"submission_id": self.submission_id, "voter_id": voter}
        if stance is None:
            type_ = VOTE_RETRACTED
        else:
            type_, data["stance"] = VOTE_CAST, stance
        return self._event(type_, data, at, self.rng.choice(_VOTE_CHANNELS))

    def respond(self, at: datetime, kind: str, referred_to: str | None = None) -> dict[str, Any]:
        assert self.state is not None
        unit = self.state.unit_id
        data: dict[str, Any] = {
            "submission_id": self.submission_id,
            "response_id": new_id(self.rng),
            "unit_id": unit,
            "kind": kind,
            "body": self.world.texts.response(
                self.rng,
                kind=kind,
                language=self.language,
                topic=self.text.topic,
                tracking_code=self.tracking_code,
                unit_name=self.world.unit_name(referred_to or unit),
            ),
        }
        if referred_to is not None:
            data["referred_to_unit_id"] = referred_to
            self.referrals += 1
        return self._event(RESPONSE_POSTED, data, at, "unit-desk")

    def rate(self, at: datetime, rating: int) -> dict[str, Any]:
        data: dict[str, Any] = {"submission_id": self.submission_id, "rating": rating}
        if self.rng.random() < 0.5:
            data["comment"] = self.world.texts.rating_comment(self.rng, rating, self.language)
        return self._event(SATISFACTION_RATED, data, at, self.channel)

    def withdraw(self, at: datetime) -> dict[str, Any]:
        data = {"submission_id": self.submission_id}
        if self.rng.random() < 0.6:
            data["reason"] = self.world.texts.withdrawal_reason(
                self.rng, self.language, self.channel
            )
        return self._event(SUBMISSION_WITHDRAWN, data, at, self.channel)

    def rating_for(self, closing: str) -> int:
        assert self.state is not None and self.state.closed_at is not None
        sla = self.world.rules.sla[self.kind]
        took = self.world.calendar.business_hours_between(self.created_at, self.state.closed_at)
        base = {"resolution": 4.4, "answer": 3.8, "rejection": 1.6}[closing]
        score = base - 0.6 * self.overdue_escalations - (0.8 if took > sla.resolution_hours else 0)
        return min(5, max(1, round(score + self.rng.gauss(0, 0.8))))

    def _event(self, type_: str, data: dict[str, Any], at: datetime, via: str) -> dict[str, Any]:
        # Events of one submission never go back in time, whatever rounding did.
        at = max(at, self.last_time)
        self.last_time = at
        event = build_event(type_, data, source=self.world.source(via), time=at, rng=self.rng)
        domain = to_domain(event)
        rules = self.world.rules
        if self.state is None:
            self.state = decide.create(domain, at, rules)  # type: ignore[arg-type]
            return event
        prev = None
        if type_ in (VOTE_CAST, VOTE_RETRACTED):
            prev = self.stances.get(data["voter_id"])
            if type_ == VOTE_CAST:
                self.stances[data["voter_id"]] = data["stance"]
            else:
                self.stances.pop(data["voter_id"], None)
        self.state, escalations = decide.advance(self.state, at, rules)
        self.overdue_escalations += len(escalations)
        decision = decide.apply(self.state, domain, at, rules, prev)  # type: ignore[arg-type]
        assert decision.state is not None
        self.state = decision.state
        return event
