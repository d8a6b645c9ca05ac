"""``sada dlq`` and the client commands beside a running ``sada run``, found by its data directory.

A real ``sada run`` (embedded broker) takes bad input through ``sada publish
--raw``, given no ``--bootstrap``; ``sada dlq`` then lists each rejection with
its reason, origin, time and an excerpt that hides person ids, filtered by
reason and time, as text or JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from e2e_support import SADA, EventFactory, clean_env, free_port, start_run, wait_for, wait_healthy


def sada(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SADA, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60
    )


def test_dlq_lists_rejections_of_a_running_pipeline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    run = start_run(tmp_path, data, port)
    try:
        wait_healthy(run, port)
        # The client commands find the embedded broker through the data directory.
        topics = sada("topics", "--data-dir", str(data), cwd=tmp_path)
        assert topics.returncode == 0 and "sada.dlq" in topics.stdout, topics.stderr
        bad = EventFactory(5).submission(unit="univ.no-such-unit")
        bad["data"]["author"]["id"] = "stu-planted-dlq-author"
        nd = tmp_path / "bad.ndjson"
        nd.write_text("this is not JSON\n" + json.dumps(bad) + "\n")
        sent = sada("publish", str(nd), "--raw", "--data-dir", str(data), cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr

        def listed() -> list[dict[str, Any]] | None:
            done = sada("dlq", "--format", "json", "--data-dir", str(data), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            rows = [json.loads(line) for line in done.stdout.splitlines()]
            return rows if len(rows) >= 2 else None

        rows = wait_for(listed, 60, "both rejections in sada.dlq", run)
        by_reason = {r["reason"]: r for r in rows}
        assert set(by_reason) == {"invalid_json", "unknown_unit"}
        unit = by_reason["unknown_unit"]
        assert unit["id"] == bad["id"] and unit["source"] == bad["source"]
        assert unit["origin"].startswith("sada.submissions[")
        assert "univ.no-such-unit" in unit["detail"] + unit["excerpt"]
        assert "stu-planted-dlq-author" not in json.dumps(rows)  # person ids hidden
        assert by_reason["invalid_json"]["excerpt"] == "this is not JSON"

        only = sada("dlq", "--reason", "invalid_json", "--data-dir", str(data), cwd=tmp_path)
        assert only.returncode == 0
        assert "invalid_json" in only.stdout and "unknown_unit" not in only.stdout
        assert only.stdout.strip().endswith("1 rejected input(s)")
        assert "+03:30 Asia/Tehran" in only.stdout  # local time, labelled
        later = sada("dlq", "--since", "2999-01-01", "--data-dir", str(data), cwd=tmp_path)
        assert later.returncode == 0 and later.stdout.strip() == "0 rejected input(s)"
    finally:
        run.close()


def test_clients_without_a_running_pipeline_say_so_in_one_line(tmp_path: Path) -> None:
    missing = sada("publish", str(tmp_path / "nothing.ndjson"), cwd=tmp_path)
    assert missing.returncode == 1 and "cannot read" in missing.stderr  # the file, first
    nd = tmp_path / "one.ndjson"
    nd.write_text(json.dumps(EventFactory(6).submission()) + "\n")
    for command in (["publish", str(nd)], ["dlq"], ["topics"]):
        done = sada(*command, cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and "no sada run" in done.stderr, done.stderr
    gone = sada("dlq", "--bootstrap", "127.0.0.1:1", cwd=tmp_path)
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1
    assert "no Kafka broker answers" in gone.stderr
