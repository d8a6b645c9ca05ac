"""Replay, audit and tracking over a real SQLite store, through the CLI as an auditor uses it.

A scenario is folded into a store exactly as the live projector does; then
``sada replay --verify`` must find no difference, a hand-edited row must be
named, a changed or deleted archive record must break ``sada audit verify``,
``--as-of`` must give the state at an instant, and ``sada track`` must accept
Persian digits.
"""

from __future__ import annotations

import io
import json
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sada.app.cli import run as cli
from sada.consumers.store import SqlStore
from sada.infra.topics import partition_for
from sada.pipeline.domain.config import load_config
from sada.pipeline.domain.logcodec import encode_event, encode_tick
from sada.pipeline.domain.projector import Projector
from sada.pipeline.domain.rules import Rules
from sada.producers.events import build_event

PARTITIONS = 2
T0 = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)  # Saturday 08:30 in Tehran
PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def _scenario() -> tuple[list[list[bytes]], dict[str, Any]]:
    """Log records per partition, plus facts about the scenario for assertions."""
    rng = random.Random(11)
    events: list[tuple[datetime, dict[str, Any]]] = []
    subs = []
    for i in range(6):
        e = build_event(
            "sada.submission.created",
            {
                "kind": "complaint" if i % 2 else "suggestion",
                "title": "اعتراض به کیفیت غذای خوابگاه",
                "body": "غذای سلف دانشجویی کیفیت مناسبی ندارد؛ لطفاً پیگیری شود.",
                "language": "fa",
                "channel": "telegram",
                "unit_id": "univ.dormitories.girls",
                "author": {"id": f"student-{i}", "role": "student"},
                "anonymous": False,
            },
            source="/integrations/telegram",
            time=T0 + timedelta(minutes=i),
            rng=rng,
        )
        subs.append(e)
        events.append((T0 + timedelta(minutes=i), e))
    viral = subs[0]["data"]["submission_id"]
    # 60 supporters of the first submission, one every 2 minutes: the 50th crosses the ladder.
    for v in range(60):
        t = T0 + timedelta(minutes=10 + 2 * v)
        e = build_event(
            "sada.vote.cast",
            {"submission_id": viral, "voter_id": f"voter-{v}", "stance": "support"},
            source="/integrations/telegram",
            time=t,
            rng=rng,
        )
        events.append((t, e))
    answered = subs[1]["data"]["submission_id"]
    t = T0 + timedelta(hours=2)
    events.append(
        (
            t,
            build_event(
                "sada.response.posted",
                {
                    "submission_id": answered,
                    "response_id": "r-1",
                    "unit_id": "univ.dormitories.girls",
                    "kind": "answer",
                    "body": "پیگیری شد و مشکل برطرف گردید.",
                },
                source="/integrations/portal",
                time=t,
                rng=rng,
            ),
        )
    )
    events.sort(key=lambda te: te[0])
    per_partition: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for t, e in events:
        sid = e["data"]["submission_id"]
        per_partition[partition_for(sid, PARTITIONS)].append(
            encode_event(e, t, False, "sada.votes")
        )
    end = T0 + timedelta(days=20)
    for p in range(PARTITIONS):
        per_partition[p].append(encode_tick(end))
    return per_partition, {"viral": subs[0], "answered": subs[1], "subs": subs, "end": end}


@pytest.fixture
def live(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    store = SqlStore(url)
    store.migrate()
    rules = Rules.from_config(load_config())
    records, facts = _scenario()
    for p, recs in enumerate(records):
        projector = Projector(rules, store, p)
        batch = list(enumerate(recs))
        # Delivered in two overlapping batches: the overlap is a redelivery.
        projector.apply_batch(batch[: len(batch) // 2 + 3])
        projector.apply_batch(batch[len(batch) // 2 - 3 :])
    store.close()
    return url, facts


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli(list(args), out, err)
    return code, out.getvalue(), err.getvalue()


def test_replay_verify_reports_no_difference(live: tuple[str, dict[str, Any]]) -> None:
    url, _ = live
    code, out, err = _cli("replay", "--database", url, "--verify")
    assert code == 0, out + err
    assert "row for row" in out


def test_replay_verify_names_a_row_changed_by_hand(live: tuple[str, dict[str, Any]]) -> None:
    url, facts = live
    sid = facts["viral"]["data"]["submission_id"]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE submissions SET support = support + 1 WHERE submission_id = ?", (sid,))
    code, out, _ = _cli("replay", "--database", url, "--verify")
    assert code == 1
    assert "submissions" in out and sid in out


def test_audit_verify_ok_then_detects_a_changed_byte(live: tuple[str, dict[str, Any]]) -> None:
    url, _ = live
    code, out, _ = _cli("audit", "verify", "--database", url)
    assert code == 0, out
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        partition, offset, record = db.execute(
            "SELECT partition, offset, record FROM archive"
            " ORDER BY partition, offset LIMIT 1 OFFSET 5"
        ).fetchone()
        tampered = bytearray(record)
        tampered[-3] ^= 0x01
        db.execute(
            "UPDATE archive SET record = ? WHERE partition = ? AND offset = ?",
            (bytes(tampered), partition, offset),
        )
    code, out, _ = _cli("audit", "verify", "--database", url)
    assert code == 1
    assert f"partition {partition} offset {offset}" in out


def test_audit_verify_detects_a_deleted_record(live: tuple[str, dict[str, Any]]) -> None:
    url, _ = live
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        partition, offset = db.execute(
            "SELECT partition, offset FROM archive ORDER BY partition, offset LIMIT 1 OFFSET 7"
        ).fetchone()
        db.execute("DELETE FROM archive WHERE partition = ? AND offset = ?", (partition, offset))
    code, out, _ = _cli("audit", "verify", "--database", url)
    assert code == 1
    assert f"partition {partition}" in out


def test_as_of_gives_support_and_level_at_that_instant(live: tuple[str, dict[str, Any]]) -> None:
    url, facts = live
    code_ = facts["viral"]["data"]["tracking_code"]
    # Votes land at T0+10min, +12, ...: by T0+10+2*44 = T0+98min, 45 supporters; no escalation.
    at = T0 + timedelta(minutes=98, seconds=30)
    code, out, err = _cli("replay", "--database", url, "--as-of", at.isoformat())
    assert code == 0, err
    states = {json.loads(line)["tracking_code"]: json.loads(line) for line in out.splitlines()}
    assert states[code_]["support"] == 45
    assert states[code_]["level"] == 0
    # The 50th supporter votes at T0+10+2*49 = T0+108min: one support_threshold step.
    later = T0 + timedelta(minutes=108, seconds=30)
    code, out, _ = _cli("replay", "--database", url, "--as-of", later.isoformat())
    states = {json.loads(line)["tracking_code"]: json.loads(line) for line in out.splitlines()}
    assert states[code_]["support"] == 50
    assert states[code_]["level"] == 1
    assert states[code_]["unit_id"] == "univ.dormitories"


def test_track_accepts_persian_digits(live: tuple[str, dict[str, Any]]) -> None:
    url, facts = live
    code_ = facts["answered"]["data"]["tracking_code"]
    rc, ascii_out, _ = _cli("track", "--database", url, "--json", code_)
    assert rc == 0
    rc, persian_out, _ = _cli("track", "--database", url, "--json", code_.translate(PERSIAN))
    assert rc == 0
    assert json.loads(persian_out) == json.loads(ascii_out)
    assert json.loads(ascii_out)["status"] == "closed"
    rc, text, _ = _cli("track", "--database", url, code_)
    assert rc == 0
    assert "1405/" in text  # dates are also shown in the Jalali calendar


def test_timeline_lists_every_event_and_escalation(live: tuple[str, dict[str, Any]]) -> None:
    url, facts = live
    code_ = facts["viral"]["data"]["tracking_code"]
    rc, out, err = _cli("audit", "timeline", "--database", url, "--format", "json", code_)
    assert rc == 0, err
    rows = json.loads(out)
    types = [r["type"] for r in rows]
    assert types.count("sada.vote.cast") == 60  # the redelivered overlap is not doubled
    assert types.count("sada.submission.created") == 1
    assert "sada.submission.escalated" in types
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
    rc, csv_out, _ = _cli("audit", "timeline", "--database", url, "--format", "csv", code_)
    assert rc == 0 and csv_out.count("\n") == len(rows) + 1


def test_unknown_and_malformed_codes(live: tuple[str, dict[str, Any]]) -> None:
    url, _ = live
    rc, _, err = _cli("track", "--database", url, "12345")
    assert rc == 1 and "not a tracking code" in err
    rc, _, err = _cli("track", "--database", url, "57240000")
    assert rc == 1 and "no submission" in err
