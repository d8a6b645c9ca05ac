"""Scopes that hold: a ``source`` that resolves elsewhere than it reads is refused at the gateway.

Every spelling below lies under the bot's prefix as a string, yet is not in
RFC 3986 normal form (most resolve outside the prefix). Each is tried against
each scope of the gateway's test configuration, through the real HTTP
gateway; the answer must be 403 with the reason, and nothing published.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_gateway import BOT_KEY, DESK_KEY, SOURCE, Server, cast, created, new_id, response, serve

from sada.infra import topics
from sada.producers.sources import source_problem

SPELLINGS = [
    "{p}/../telegram",
    "{p}/..",
    "{p}/./bot",
    "{p}/bot/../../telegram",
    "{p}/%2e%2e/telegram",
    "{p}/%2E%2E/telegram",
    "{p}/.%2E/telegram",
    "{p}%2F..%2Ftelegram",
    "{p}%2f..%2ftelegram",
    "{p}/%5C..%5Ctelegram",
    "{p}\\..\\telegram",
    "{p}//telegram",
    "{p}/%41",
    "{p}/bot two",
    "{p}/bot\ttwo",
    "{p}/%zz",
]
NORMAL = [
    "{p}",
    "{p}/bot-2",
    "{p}/bot/",
    "{p}/bot%20two",
    "{p}/%E2%80%8B",
    "{p}/.well-known",
    "{p}/x?y=..",
]
# The bot's prefix, and the desk's (which ends in "/" and allows anything below).
SCOPES = [(BOT_KEY, SOURCE, "bot"), (DESK_KEY, "/units", "desk")]


@pytest.fixture(scope="module")
def server(broker: str) -> Iterator[Server]:
    topics.ensure_topics(broker, 4)
    with serve(broker) as s:
        yield s


def _event(kind: str, source: str) -> dict[str, object]:
    sid = new_id("sub")
    event = created(sid) if kind == "bot" else response(sid)
    event["source"] = source
    return event


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(("key", "prefix", "kind"), SCOPES, ids=[s[2] for s in SCOPES])
def test_a_source_not_in_normal_form_is_refused(
    server: Server, key: str, prefix: str, kind: str, spelling: str
) -> None:
    source = spelling.format(p=prefix)
    reply = server.post_json(_event(kind, source), key=key)
    assert reply.status == 403, (source, reply.body)
    (reason,) = reply.body["reasons"]
    assert reason["reason"] == "forbidden"
    assert "not in normal form" in reason["detail"], reason


@pytest.mark.parametrize("spelling", NORMAL)
def test_normal_sources_under_the_prefix_are_in_scope(server: Server, spelling: str) -> None:
    source = spelling.format(p=SOURCE)
    assert source_problem(source) is None
    reply = server.post_json(_event("bot", source))
    assert reply.status == 202, reply.body


def test_a_refused_spelling_in_a_batch_refuses_the_whole_request(server: Server) -> None:
    sid = new_id("sub")
    good = created(sid)
    sneaky = cast(sid, source=SOURCE + "/../telegram")
    reply = server.post_json([good, sneaky])
    assert reply.status == 403
    assert [r["index"] for r in reply.body["reasons"]] == [1]
    assert "dot segment" in reply.body["reasons"][0]["detail"]


def test_absolute_sources_must_have_a_lower_case_scheme_and_host() -> None:
    assert source_problem("https://portal.example.ir/bot") is None
    assert source_problem("HTTPS://portal.example.ir/bot") is not None
    assert source_problem("https://Portal.example.ir/bot") is not None
    assert source_problem("https://portal.example.ir/a/../b") is not None
