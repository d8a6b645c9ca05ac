"""What the read-only commands print and refuse: local times, CSV, one time parser, verify reports.

Over the real SQLite store of :mod:`test_replay_audit`'s scenario, through the
CLI in-process (and as a subprocess where a real pipe matters).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e_support import SADA, clean_env
from test_replay_audit import live  # noqa: F401  (the fixture)

from sada.app.cli import run as cli
from sada.app.replay import compare

Live = tuple[str, dict[str, Any]]


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli(list(args), out, err)
    return code, out.getvalue(), err.getvalue()


# -- 5. read-only commands never create a database -------------------------------------------


READ_ONLY = [
    ["track", "57240000"],
    ["audit", "verify"],
    ["audit", "timeline", "57240000"],
    ["replay", "--verify"],
    ["replay"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:2]))
def test_read_only_commands_on_a_missing_store_say_so_and_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    nowhere = tmp_path / "no-such-data"
    code, _, err = _cli(*command, "--data-dir", str(nowhere))
    assert code != 0
    assert err.count("\n") == 1 and "no Sada database" in err, err
    assert not nowhere.exists()
    # And from a directory of its own, with no option: no ./sada-data appears.
    done = subprocess.run(
        [SADA, *command], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:2]))
def test_read_only_commands_on_an_empty_database_say_so(tmp_path: Path, command: list[str]) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    code, _, err = _cli(*command, "--database", f"sqlite:///{empty}")
    assert code != 0
    assert err.count("\n") == 1 and "holds no Sada store" in err, err
    with sqlite3.connect(empty) as db:  # still empty: not migrated
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


# -- 9. a reader that stops reading ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json", "csv"])
def test_output_into_a_closed_pipe_ends_quietly(live: Live, fmt: str) -> None:  # noqa: F811
    url, facts = live
    code = facts["viral"]["data"]["tracking_code"]
    for command in (
        ["audit", "timeline", code, "--format", fmt, "--database", url],
        ["track", code, "--database", url],
    ):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first byte: like `| head -0`
        try:
            done = subprocess.run(
                [SADA, *command], stdout=write, stderr=subprocess.PIPE, env=clean_env(), timeout=60
            )
        finally:
            os.close(write)
        assert done.returncode == 0
        assert done.stderr == b""


# -- 12. local time, labelled; CSV booleans; one time parser -------------------------------------


LOCAL = re.compile(
    r"14\d\d/\d\d/\d\d \d\d:\d\d:\d\d \(2026-\d\d-\d\dT\d\d:\d\d:\d\d\+03:30 Asia/Tehran\)"
)


def test_human_output_shows_the_calendars_local_time_labelled(live: Live) -> None:  # noqa: F811
    url, facts = live
    code = facts["answered"]["data"]["tracking_code"]
    rc, text, _ = _cli("track", code, "--database", url)
    assert rc == 0
    created = next(line for line in text.splitlines() if line.startswith("created"))
    assert LOCAL.search(created), created
    assert not re.search(r"\d\.\d{6}", text)  # no microseconds
    assert "Z " not in text and "Z\n" not in text  # no UTC beside local time
    rc, text, _ = _cli("audit", "timeline", code, "--database", url)
    assert rc == 0
    assert all(LOCAL.match(line) for line in text.splitlines()), text


def test_timeline_csv_spells_booleans_as_json_does(live: Live) -> None:  # noqa: F811
    url, facts = live
    code = facts["viral"]["data"]["tracking_code"]
    rc, out, _ = _cli("audit", "timeline", code, "--format", "csv", "--database", url)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["late"] for r in rows} == {"false"}
    assert "False" not in out and "True" not in out


def _as_of(url: str, when: str) -> list[dict[str, Any]]:
    rc, out, err = _cli("replay", "--database", url, "--as-of", when)
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_as_of_takes_an_instant_a_date_and_a_jalali_date(live: Live) -> None:  # noqa: F811
    url, _ = live
    # The scenario's day after its start: 2026-11-22 is 1405-09-01; 00:00 in Tehran.
    instant = _as_of(url, "2026-11-22T00:00:00+03:30")
    assert instant and {s["as_of"] for s in instant} == {"2026-11-21T20:30:00.000000Z"}
    assert _as_of(url, "2026-11-22") == instant
    assert _as_of(url, "1405-09-01") == instant
    assert _as_of(url, "۱۴۰۵/۰۹/۰۱") == instant
    rc, _, err = _cli("replay", "--database", url, "--as-of", "yesterday")
    assert rc == 1 and err.count("\n") == 1 and "--as-of" in err


# -- 10. readable verification --------------------------------------------------------------


def test_verify_refuses_a_broken_chain_naming_the_record(live: Live) -> None:  # noqa: F811
    url, _ = live
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        votes = [
            (p, o, bytes(r))
            for p, o, r in db.execute("SELECT partition, offset, record FROM archive ORDER BY 1, 2")
            if b"vote.cast" in bytes(r)
        ]
        partition, offset, record = votes[3]
        changed = record.replace(b'"support"', b'"oppose"')
        db.execute(
            "UPDATE archive SET record = ? WHERE partition = ? AND offset = ?",
            (changed, partition, offset),
        )
    rc, out, err = _cli("replay", "--database", url, "--verify")
    assert rc == 1
    assert err.count("\n") == 1 and f"partition {partition} offset {offset}" in err, err
    assert "replayed" not in out


def test_verify_reports_per_table_counts_and_sorts_numerically(live: Live) -> None:  # noqa: F811
    url, facts = live
    sid = facts["viral"]["data"]["submission_id"]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE submissions SET support = support + 7 WHERE submission_id = ?", (sid,))
        db.execute("UPDATE checkpoints SET clock = NULL")  # rows of another table differ too
        parts = [r[0] for r in db.execute("SELECT partition FROM checkpoints ORDER BY 1")]
    rc, out, _ = _cli("replay", "--database", url, "--verify", "--limit", "20")
    assert rc == 1
    head = out.splitlines()[1]
    assert head.startswith("verify: ") and "checkpoints " in head and "submissions 1" in head
    assert f"submissions ({sid}): support: live 67, replayed 60" in out.replace("'", "")
    shown = [int(m.group(1)) for m in re.finditer(r"^  checkpoints \((\d+)\)", out, re.M)]
    assert shown == parts


def test_differences_are_sorted_numerically() -> None:
    rows = [(1, n, "x") for n in (100, 1000, 101, 99, 2)]
    diffs = compare({"votes": rows}, {"votes": []}, {"votes": 2})
    assert [d.key for d in diffs] == [(1, 2), (1, 99), (1, 100), (1, 101), (1, 1000)]


def test_verify_as_of_compares_with_the_store_at_that_instant(live: Live) -> None:  # noqa: F811
    url, _ = live
    rc, out, err = _cli("replay", "--database", url, "--as-of", "2026-11-21T07:00:00Z", "--verify")
    assert rc == 0, out + err
    assert "row for row" in out


def test_simulate_start_takes_the_same_spellings() -> None:
    runs = [
        _cli("simulate", "--submissions", "2", "--days", "1", "--start", when)
        for when in ("2026-10-03", "1405-07-11", "۱۴۰۵/۰۷/۱۱", "2026-10-03T00:00:00+03:30")
    ]
    assert all(rc == 0 for rc, _, _ in runs)
    assert len({out for _, out, _ in runs}) == 1 and runs[0][1]
