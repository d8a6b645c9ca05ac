"""A store with known contents for the work queue, the dashboard and the reports.

:func:`populate` writes submissions in every SLA state (overdue, at risk, on
time, overdue at the root, closed, withdrawn), with Persian titles in the
spellings that arrive (Arabic ك/ي, with and without a zero-width non-joiner),
through the store's own batch write, with each creation archived as the
projector archives it. Deadlines come from the real rules of the shipped
configuration; the pipeline clock is :data:`CLOCK`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from sada.consumers.store import SqlStore
from sada.pipeline.domain.config import Config, load_config
from sada.pipeline.domain.logcodec import encode_event, encode_tick, event_key
from sada.pipeline.domain.model import (
    SUBMISSION_CREATED,
    Escalated,
    EscalationReason,
    SubmissionState,
    format_time,
)
from sada.pipeline.domain.ports import AppliedEvent, BatchWrite, Checkpoint
from sada.pipeline.domain.rules import Rules

POSTGRES_URL = os.environ.get(
    "SADA_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
TEHRAN = ZoneInfo("Asia/Tehran")
CLOCK = datetime(2026, 1, 6, 12, 0, tzinfo=TEHRAN)  # a Tuesday, noon
SOURCE = "/integrations/web"

ZWNJ = "\u200c"


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    unit: str
    created: datetime
    title: str
    body: str = "متن درخواست"
    channel: str = "web"
    status: str = "open"
    level: int = 0
    support: int = 0
    oppose: int = 0
    flagged: bool = False  # overdue at the root
    responded: bool = False


def _t(day: int, hour: int, minute: int = 0, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=TEHRAN)


SPECS = (
    # Overdue: its first response was due Monday 09:00.
    Spec(
        "anatomy",
        "complaint",
        "univ.fac-medicine.anatomy",
        _t(3, 9),
        "كتابخانه دانشکده تعطيل است",
        "ساعت کار كتابخانه کوتاه شده",
        support=12,
        oppose=2,
    ),
    # Overdue at the root, flagged: nothing can move it.
    Spec(
        "root",
        "complaint",
        "univ",
        _t(20, 9, month=12, year=2025),
        "Library card renewal",
        "The central library refuses renewals",
        level=2,
        flagged=True,
        channel="email",
    ),
    # Overdue: a question due Monday 16:00.
    Spec(
        "monitoring",
        "question",
        "univ.monitoring",
        _t(4, 8),
        f"ساعات کتاب{ZWNJ}خانه مرکزی",
        "پاسخ داده نشده",
        channel="telegram",
    ),
    # At risk: due Tuesday 12:00, which is the clock itself (not passed yet).
    Spec(
        "food-risk",
        "complaint",
        "univ.food",
        _t(4, 12),
        "کیفیت غذای سلف",
        "غذا سرد است",
        channel="telegram",
        support=3,
    ),
    # On time.
    Spec("food-ok", "criticism", "univ.food", _t(5, 9), "صف طولانی سلف", "صف شلوغ است"),
    Spec(
        "hospital",
        "suggestion",
        "univ.hospital-a",
        _t(6, 8),
        "نوبت‌دهی پیامکی",
        "کتابخانه بیمارستان هم پیامک بدهد",
        support=60,
        level=1,
    ),
    # On time, first response given: only the resolution clock runs.
    Spec(
        "dorm",
        "complaint",
        "univ.dormitories.girls",
        _t(6, 9),
        "آب گرم خوابگاه",
        "آبگرمکن خراب است",
        responded=True,
        channel="whatsapp",
    ),
    # Closed and withdrawn: no clocks.
    Spec("closed", "complaint", "univ.food", _t(3, 10), "نان بیات", status="closed"),
    Spec("withdrawn", "question", "univ.fac-nursing", _t(3, 11), "ساعت کلاس", status="withdrawn"),
)
# (submission, from, to, level reached, reason, when)
_DEC22, _DEC23 = _t(22, 9, month=12, year=2025), _t(23, 9, month=12, year=2025)
ESCALATIONS: tuple[tuple[str, str, str, int, EscalationReason, datetime], ...] = (
    ("root", "univ.monitoring", "univ.vc-student", 1, "first_response_overdue", _DEC22),
    ("root", "univ.vc-student", "univ", 2, "first_response_overdue", _DEC23),
    ("hospital", "univ.hospital-a.emergency", "univ.hospital-a", 1, "support_threshold", _t(6, 10)),
)
EXPECTED_SLA = {
    "anatomy": "overdue",
    "root": "overdue",
    "monitoring": "overdue",
    "food-risk": "at_risk",
    "food-ok": "on_time",
    "hospital": "on_time",
    "dorm": "on_time",
    "closed": None,
    "withdrawn": None,
}


def tracking_code(i: int) -> str:
    from sada.pipeline.domain.tracking import damm_check_digit

    body = f"7816838{i:03d}"
    return body + str(damm_check_digit(body))


def sid(name: str) -> str:
    return f"sub-{name}"


def state_of(spec: Spec, i: int, rules: Rules) -> SubmissionState:
    first, resolution = rules.deadlines(spec.kind, spec.created)
    open_ = spec.status == "open"
    return SubmissionState(
        submission_id=sid(spec.name),
        tracking_code=tracking_code(i),
        kind=spec.kind,
        channel=spec.channel,
        created_at=spec.created,
        status=spec.status,  # type: ignore[arg-type]
        unit_id=spec.unit,
        level=spec.level,
        support=spec.support,
        oppose=spec.oppose,
        arrived_at=spec.created,
        first_response_due=first if open_ and not spec.responded else None,
        resolution_due=resolution if open_ else None,
        first_response_overdue=spec.flagged,
        resolution_overdue=False,
        first_response_at=spec.created if spec.responded else None,
        closed_at=spec.created if spec.status == "closed" else None,
        satisfaction=None,
        escalations=spec.level,
        updated_at=spec.created,
    )


def created_event(spec: Spec, i: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"c-{spec.name}",
        "source": SOURCE,
        "type": SUBMISSION_CREATED,
        "time": format_time(spec.created),
        "subject": sid(spec.name),
        "datacontenttype": "application/json",
        "dataschema": "https://sada.example/schemas/sada.submission.created/v1.json",
        "data": {
            "submission_id": sid(spec.name),
            "tracking_code": tracking_code(i),
            "kind": spec.kind,
            "title": spec.title,
            "body": spec.body,
            "language": "fa",
            "channel": spec.channel,
            "unit_id": spec.unit,
            "author": {"id": f"p-{i}", "role": "student"},
            "anonymous": False,
        },
    }


def populate(store: SqlStore, config: Config, specs: tuple[Spec, ...] = SPECS) -> None:
    """Write ``specs`` in one batch of partition 0, then a tick to :data:`CLOCK`."""
    rules = Rules.from_config(config)
    batch = BatchWrite(0, Checkpoint(0))
    offset = 0
    for i, spec in enumerate(sorted(specs, key=lambda s: s.created)):
        ce = created_event(spec, i)
        batch.archive.append((offset, encode_event(ce, spec.created, False, "sada.submissions")))
        batch.applied.append(
            AppliedEvent(
                event_key(ce),
                offset,
                sid(spec.name),
                SUBMISSION_CREATED,
                spec.created,
                spec.created,
                False,
                True,
                "",
            )
        )
        batch.states.append(state_of(spec, i, rules))
        offset += 1
    by_name = {spec.name: spec for spec in specs}
    for name, from_unit, to_unit, level, reason, at in ESCALATIONS:
        if name in by_name:
            batch.escalations.append(
                Escalated(
                    f"esc-{name}-{level}", sid(name), at, level - 1, level,
                    from_unit, to_unit, reason, by_name[name].support, at,
                )
            )  # fmt: skip
    batch.archive.append((offset, encode_tick(CLOCK)))
    batch.checkpoint = Checkpoint(0, offset + 1, CLOCK)
    store.write(batch)


OpenStore = Callable[..., SqlStore]


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """``open_store(backend, name="main")``: a migrated store; again: the same database."""
    opened: list[SqlStore] = []
    schemas: list[str] = []
    admin: Engine | None = None

    def open_(backend: str, name: str = "main") -> SqlStore:
        nonlocal admin
        if backend == "sqlite":
            (tmp_path / "data").mkdir(exist_ok=True)
            url = f"sqlite:///{tmp_path / 'data' / name}.db"
        else:
            admin = admin or create_engine(POSTGRES_URL)
            schema = f"sada_q_{uuid.uuid5(uuid.NAMESPACE_URL, str(tmp_path) + name).hex}"
            if schema not in schemas:
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                schemas.append(schema)
            url = (
                make_url(POSTGRES_URL)
                .update_query_dict({"options": f"-csearch_path={schema},public"})
                .render_as_string(hide_password=False)
            )
        store = SqlStore(url)
        opened.append(store)
        store.migrate()
        return store

    yield open_
    for store in opened:
        store.close()
    if admin is not None:
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def config() -> Config:
    return load_config()
