"""``sada run --demo`` shows escalations of both kinds within two minutes.

A new user's first look: ``sada run --demo`` on the defaults (wall clock,
production timers), free ports, an empty data directory. Within two minutes
of starting it, the dashboard must show submissions escalated for public
support and for missed deadlines, and ``sada.escalations`` must carry those
escalations as valid events. It runs on the embedded broker, and with
``--bootstrap`` on Apache Kafka.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_support import (
    SADA,
    SadaProcess,
    clean_env,
    free_port,
    get_json,
    http_get,
    read_topic,
    wait_for,
)
from kafka_support import ApacheKafka

from sada.infra import contracts, topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

WITHIN_SECONDS = 120
OVERDUE = ("first_response_overdue", "resolution_overdue")
BROKER = re.compile(r"broker (127\.0\.0\.1:[0-9]+) embedded")


def both_kinds_shown(port: int) -> dict[str, int] | None:
    """The dashboard's escalations by reason, once it shows both kinds; else None."""
    answer = get_json(port, "/api/v1/dashboard")
    if answer is None or answer[0] != 200:
        return None
    reasons: dict[str, int] = answer[1]["escalations"]["reason"]
    support = reasons.get("support_threshold", 0) > 0
    overdue = any(reasons.get(r, 0) > 0 for r in OVERDUE)
    return reasons if support and overdue else None


def page_numbers(port: int) -> dict[str, float]:
    """The ``data-metric`` numbers of ``/dashboard``, by key."""
    answer = http_get(port, "/dashboard?lang=en")
    assert answer is not None and answer[0] == 200, answer
    page = answer[1].decode()
    pairs = re.findall(r'data-metric="([^"]+)" data-value="([^"]*)"', page)
    return {key: float(value) for key, value in pairs if value}


@pytest.mark.timeout(WITHIN_SECONDS + 60)
def test_demo_escalates_for_support_and_for_missed_deadlines(
    broker_kind: str, tmp_path: Path
) -> None:
    port = free_port()
    node: ApacheKafka | None = None
    argv = [SADA, "run", "--demo", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    if broker_kind == "apache-kafka":
        node = ApacheKafka(tmp_path / "apache-kafka").start()
        argv += ["--bootstrap", node.bootstrap]
    started = time.monotonic()
    run = SadaProcess("sada-run-demo", argv, clean_env(), tmp_path)
    try:
        reasons = wait_for(
            lambda: both_kinds_shown(port),
            WITHIN_SECONDS - (time.monotonic() - started),
            "escalations for support and for a missed deadline on /api/v1/dashboard",
            watch=run,
            interval=1.0,
        )
        shown_after = time.monotonic() - started
        assert shown_after <= WITHIN_SECONDS

        # The page shows what its JSON showed (counters only grow meanwhile).
        numbers = page_numbers(port)
        for reason, count in reasons.items():
            assert numbers[f"escalations:reason:{reason}"] >= count, (reason, numbers)

        # And the escalations are on sada.escalations, as valid events.
        if node is None:
            found = BROKER.search(run.stdout())
            assert found is not None, run.output()
            bootstrap = found[1]
        else:
            bootstrap = node.bootstrap

        def published() -> list[dict[str, Any]] | None:
            events = [
                orjson.loads(r.value)
                for r in read_topic(bootstrap, topics.ESCALATIONS)
                if r.value is not None
            ]
            kinds = {e["data"]["reason"] for e in events}
            if "support_threshold" in kinds and kinds & set(OVERDUE):
                return events
            return None

        events = wait_for(published, 30, "both kinds on sada.escalations", watch=run)
        for event in events:
            contracts.validate_event(event)
            data = event["data"]
            assert event["type"] == "sada.submission.escalated"
            assert data["to_level"] == data["from_level"] + 1
            assert ("deadline" in data) == (data["reason"] in OVERDUE), data
        by_reason = Counter(e["data"]["reason"] for e in events)
        assert by_reason["support_threshold"] > 0
        assert sum(by_reason[r] for r in OVERDUE) > 0
    finally:
        run.close()
        if node is not None:
            node.stop()
