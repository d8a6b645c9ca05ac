"""Work-queue query latency at scale: p50/p95 of GET /api/v1/submissions' query, in process.

Fills a fresh store with N submissions (default 100,000) through the store's
own batch write (each creation archived, so titles and bodies are indexed the
way they are in production), then times the work-queue service for the
default order, an SLA filter, a unit subtree, a text search and a deep page.

    python ops/bench/work_queue.py --database sqlite:////tmp/wq.db
    python ops/bench/work_queue.py --database postgresql+psycopg2://postgres@127.0.0.1:5432/test

The database must be empty (a fresh SQLite file, or a PostgreSQL schema of
its own: add ``?options=-csearch_path=wq_bench`` after creating the schema).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from sada.consumers.store import SqlStore
from sada.consumers.workqueue import WorkQueueService
from sada.pipeline.domain.config import KINDS, load_config
from sada.pipeline.domain.logcodec import encode_event, encode_tick, event_key
from sada.pipeline.domain.model import SUBMISSION_CREATED, SubmissionState, format_time
from sada.pipeline.domain.ports import AppliedEvent, BatchWrite, Checkpoint
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.tracking import damm_check_digit

TEHRAN = ZoneInfo("Asia/Tehran")
CLOCK = datetime(2026, 3, 3, 12, 0, tzinfo=TEHRAN)
WORDS = ["کتابخانه", "خوابگاه", "سلف", "آزمایشگاه", "پارکینگ", "کلاس", "اینترنت", "بیمارستان"]
CHANNELS = ["web", "telegram", "whatsapp", "sms", "phone", "email"]


def fill(store: SqlStore, n: int, batch_size: int = 5000) -> None:
    config = load_config()
    rules = Rules.from_config(config)
    units = sorted(config.units)
    rng = random.Random(7)
    offset = 0
    for start in range(0, n, batch_size):
        batch = BatchWrite(0, Checkpoint(0))
        for i in range(start, min(n, start + batch_size)):
            created = CLOCK - timedelta(minutes=rng.randrange(60 * 24 * 60))
            kind = rng.choice(KINDS)
            unit = rng.choice(units)
            sid = f"s-{i:07d}"
            body = f"{10**8 + i:09d}"
            code = body + damm_check_digit(body)
            title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} شماره {i}"
            ce = {
                "specversion": "1.0",
                "id": f"c-{i}",
                "source": "/bench",
                "type": SUBMISSION_CREATED,
                "time": format_time(created),
                "subject": sid,
                "datacontenttype": "application/json",
                "data": {
                    "submission_id": sid,
                    "tracking_code": code,
                    "kind": kind,
                    "title": title,
                    "body": f"متن درخواست درباره {rng.choice(WORDS)}",
                    "language": "fa",
                    "channel": rng.choice(CHANNELS),
                    "unit_id": unit,
                },
            }
            batch.archive.append((offset, encode_event(ce, created, False, "sada.submissions")))
            batch.applied.append(
                AppliedEvent(
                    event_key(ce),
                    offset,
                    sid,
                    SUBMISSION_CREATED,
                    created,
                    created,
                    False,
                    True,
                    "",
                )
            )
            first, resolution = rules.deadlines(kind, created)
            status = "open" if rng.random() < 0.7 else "closed"
            batch.states.append(
                SubmissionState(
                    sid, code, kind, ce["data"]["channel"], created, status, unit, 0,
                    rng.randrange(100), rng.randrange(10), created,
                    first if status == "open" else None,
                    resolution if status == "open" else None,
                    False, False, None, None if status == "open" else created, None, 0, created,
                )
            )  # fmt: skip
            offset += 1
        batch.archive.append((offset, encode_tick(CLOCK)))
        offset += 1
        batch.checkpoint = Checkpoint(0, offset, CLOCK)
        store.write(batch)


def timed(service: WorkQueueService, params: dict[str, str], runs: int) -> tuple[float, float]:
    service.page(params)  # warm
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        service.page(params)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    store = SqlStore(args.database)
    store.migrate()
    t = time.perf_counter()
    fill(store, args.n)
    print(f"filled {args.n} submissions in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    added = store.sync_texts()
    print(f"indexed {added} texts in {time.perf_counter() - t:.1f}s")
    if store.dialect == "postgresql":  # what autovacuum does soon after a bulk load
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE submissions"))
            conn.execute(text("ANALYZE submission_texts"))
    service = WorkQueueService(store, load_config(), sync_seconds=3600)
    first = service.page({"limit": "50"})
    deep = first
    for _ in range(20):
        deep = service.page({"limit": "50", "cursor": deep["next"]})
    cases = {
        "default order": {"limit": "50"},
        "sla=overdue": {"sla": "overdue", "limit": "50"},
        "unit subtree": {"unit": "univ.vc-student", "subtree": "true", "limit": "50"},
        "search common": {"q": "كتابخانه", "limit": "50"},  # in 1 of 4 texts
        "search 2 words": {"q": "خوابگاه سلف", "status": "open", "limit": "50"},
        "search rare": {"q": "شماره 4242", "limit": "50"},  # in 11 texts
        "page 21 (cursor)": {"limit": "50", "cursor": deep["next"] or ""},
    }
    print(f"{store.dialect}, {args.n} submissions, {args.runs} runs each")
    for name, params in cases.items():
        p50, p95 = timed(service, params, args.runs)
        print(f"  {name:18s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
    store.close()


if __name__ == "__main__":
    main()
