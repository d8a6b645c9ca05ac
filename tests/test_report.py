"""``sada report`` over a store with known contents: CSV and HTML, Persian and English.

The ranking must be the dashboard's over the period; the HTML's charts must
render in headless Chromium (screenshots in ``test-artifacts/``).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import uuid
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import queue_support
from queue_support import OpenStore, populate

from sada.app import cli
from sada.consumers.report import CSV_COLUMNS, period_bounds
from sada.consumers.snapshot import unit_ranking
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.rules import Rules

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TEHRAN = ZoneInfo("Asia/Tehran")

open_store = queue_support.open_store
config = queue_support.config


def sada(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("period", "lang"), [("week", "fa"), ("month", "fa"), ("month", "en")])
def test_csv_report_ranks_units_as_the_dashboard_does(
    open_store: OpenStore, config: Config, tmp_path: Path, period: str, lang: str
) -> None:
    store = open_store("sqlite")
    populate(store, config)
    url = f"sqlite:///{tmp_path / 'data' / 'main.db'}"
    code, out, err = sada(
        "report", "--database", url, "--period", period, "--lang", lang, "--format", "csv"
    )
    assert code == 0, err
    assert out.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(out.removeprefix("\ufeff"))))
    assert rows and tuple(rows[0]) == CSV_COLUMNS
    start, end = period_bounds(period, queue_support.CLOCK.date(), lang)
    expected = unit_ranking(
        store,
        Rules.from_config(config),
        datetime.combine(start, time(), tzinfo=TEHRAN),
        datetime.combine(end, time(), tzinfo=TEHRAN),
    )
    assert [(r["unit_id"], int(r["rank"])) for r in rows] == [
        (e["unit_id"], e["position"]) for e in expected
    ]
    for r, e in zip(rows, expected, strict=True):
        assert int(r["received"]) == e["received"]
        assert int(r["answered_in_time"]) == e["first_responses_in_time"]
        assert int(r["late"]) == e["first_responses_late"]
        assert int(r["escalated"]) == e["escalations_away"]
    assert rows[0]["period_start"] == start.isoformat()
    if period == "week":
        assert (rows[0]["period_start"], rows[0]["period_start_jalali"]) == (
            "2026-01-03",
            "1404/10/13",
        )  # a Saturday
        food = next(r for r in rows if r["unit_id"] == "univ.food")
        assert int(food["received"]) == 3
    if period == "month" and lang == "fa":
        assert rows[0]["period_start_jalali"] == "1404/10/01"  # Dey 1404
    if period == "month" and lang == "en":
        assert rows[0]["period_start"] == "2026-01-01"


def test_report_for_one_unit_and_bad_arguments(
    open_store: OpenStore, config: Config, tmp_path: Path
) -> None:
    store = open_store("sqlite")
    populate(store, config)
    url = f"sqlite:///{tmp_path / 'data' / 'main.db'}"
    code, out, _ = sada("report", "--database", url, "--unit", "univ.food", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.removeprefix("\ufeff"))))
    assert [r["unit_id"] for r in rows] == ["univ.food"]
    code, out, err = sada("report", "--database", url, "--unit", "univ.nowhere")
    assert code == 1 and err.count("\n") == 1 and "unit" in err
    code, out, err = sada("report", "--database", url, "--at", "someday")
    assert code == 1 and "--at" in err


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium not found: apt-get install -y chromium", pytrace=False)


def browse(tmp: Path, url: str, *args: str) -> str:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp / uuid.uuid4().hex[:8]}",
        *args,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_html_report_charts_render_in_chromium(
    open_store: OpenStore, config: Config, tmp_path: Path, lang: str
) -> None:
    store = open_store("sqlite")
    populate(store, config)
    url = f"sqlite:///{tmp_path / 'data' / 'main.db'}"
    page = tmp_path / f"report-{lang}.html"
    code, out, err = sada(
        "report", "--database", url, "--period", "week", "--lang", lang, "-o", str(page)
    )
    assert code == 0, err
    assert str(page) in out
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    dom = browse(tmp_path, page.as_uri(), "--dump-dom")
    assert f'<html lang="{lang}" dir="{"rtl" if lang == "fa" else "ltr"}">' in dom
    # Both charts drew their bars: received per unit, and the in-time share.
    received = re.findall(r'data-chart="answers" data-key="received:\d+" data-value="(\d+)"', dom)
    assert sorted(int(v) for v in received) == sorted(
        int(v) for v in re.findall(r'data-field="received" data-value="(\d+)"', dom)
    )
    assert 'data-chart="ratio"' in dom
    if lang == "fa":
        assert "۱۴۰۴/۱۰/۱۳" in dom and "گزارش پاسخ‌گویی واحدها" in dom
    else:
        assert "2026-01-03" in dom and "Units' answering report" in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{lang}.png"
    shot.unlink(missing_ok=True)
    browse(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1300,1400")
    assert shot.stat().st_size > 10_000
