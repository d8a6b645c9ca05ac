"""Each closed set of names is the one its schema has, wherever the code uses it.

The schema files are read here directly, not through the vocabulary, so that
adding a value (a channel, say) is one schema edit: this test then shows every
set that follows it, and fails for any copy that does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest

from sada.infra import contracts, metric_labels
from sada.pipeline.domain import config, model, vocabulary
from sada.pipeline.domain.errors import SadaError
from sada.pipeline.domain.reasons import Reason

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def enum(file: str, *path: str) -> set[str]:
    node: Any = json.loads((SCHEMA_DIR / file).read_text(encoding="utf-8"))
    for key in path:
        node = node[key]
    return set(node["enum"])


SCHEMA_ENUMS: dict[str, tuple[tuple[str, ...], set[str]]] = {
    "event types": (vocabulary.EVENT_TYPES, enum("cloudevent.v1.json", "properties", "type")),
    "submission kinds": (
        vocabulary.SUBMISSION_KINDS,
        enum("sada.common.v1.json", "$defs", "kind"),
    ),
    "channels": (vocabulary.CHANNELS, enum("sada.common.v1.json", "$defs", "channel")),
    "author roles": (vocabulary.AUTHOR_ROLES, enum("sada.common.v1.json", "$defs", "role")),
    "stances": (vocabulary.STANCES, enum("sada.vote.cast.v1.json", "properties", "stance")),
    "response kinds": (
        vocabulary.RESPONSE_KINDS,
        enum("sada.response.posted.v1.json", "properties", "kind"),
    ),
    "escalation reasons": (
        vocabulary.ESCALATION_REASONS,
        enum("sada.submission.escalated.v1.json", "properties", "reason"),
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_ENUMS))
def test_each_set_is_its_schema_enum_in_sorted_order(name: str) -> None:
    values, in_schema = SCHEMA_ENUMS[name]
    assert set(values) == in_schema
    assert list(values) == sorted(values)
    assert len(values) == len(set(values))


def test_event_types_are_one_set_everywhere() -> None:
    types = set(vocabulary.EVENT_TYPES)
    assert types == contracts.EVENT_TYPES
    assert set(contracts.TOPIC_OF_TYPE) == types
    assert types == metric_labels.EVENT_TYPES
    names = {
        model.SUBMISSION_CREATED,
        model.SUBMISSION_WITHDRAWN,
        model.VOTE_CAST,
        model.VOTE_RETRACTED,
        model.RESPONSE_POSTED,
        model.SATISFACTION_RATED,
        model.SUBMISSION_ESCALATED,
        model.SUBMISSION_FOLLOWED,
        model.SUBMISSION_UNFOLLOWED,
    }
    assert names == types


def test_submission_kinds_are_one_set_everywhere() -> None:
    assert config.KINDS == vocabulary.SUBMISSION_KINDS
    assert set(vocabulary.SUBMISSION_KINDS) == metric_labels.KINDS
    # Every kind has a default SLA, and nothing else has one.
    assert set(config.DEFAULT_SLA) == set(vocabulary.SUBMISSION_KINDS)


def test_channels_and_reasons_bound_the_metric_labels() -> None:
    assert set(vocabulary.CHANNELS) == metric_labels.CHANNELS
    assert set(vocabulary.ESCALATION_REASONS) == metric_labels.ESCALATION_REASONS
    assert set(vocabulary.REJECTION_REASONS) == metric_labels.REJECTION_REASONS
    assert set(vocabulary.SLA_STATUSES) == metric_labels.STATUSES


def test_the_type_checkers_literals_are_the_schema_sets() -> None:
    assert set(get_args(model.Stance)) == set(vocabulary.STANCES)
    assert set(get_args(model.EscalationReason)) == set(vocabulary.ESCALATION_REASONS)


def test_closing_responses_are_response_kinds() -> None:
    assert set(vocabulary.RESPONSE_KINDS) >= model.CLOSING_RESPONSES


def test_the_rejection_reasons_are_the_reason_enum_in_sorted_order() -> None:
    assert tuple(sorted(r.value for r in Reason)) == vocabulary.REJECTION_REASONS


def test_a_literal_that_disagrees_with_its_schema_stops_the_import() -> None:
    with pytest.raises(SadaError, match="Stance"):
        vocabulary._agree("Stance", {"support", "oppose", "abstain"}, vocabulary.STANCES)
    vocabulary._agree("Stance", {"support", "oppose"}, vocabulary.STANCES)
