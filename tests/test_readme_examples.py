"""The README's "Publishing events" examples work as printed, for a new user.

Each example is a fenced block of that section, marked by a preceding
``<!-- example: NAME -->`` comment. They are run as a user runs them: the
``run`` command starts ``sada run`` on the shipped defaults, the ``curl``
block goes through ``bash``, the Python blocks through the interpreter of this
virtualenv, as scripts. Only the ports change (9092 and 6066 may be taken on
the machine running the tests), to free ones. The same examples run against
Apache Kafka too, with ``sada run --bootstrap`` pointed at it.

Then what the examples published must be in the pipeline: both submissions
answer on the tracking API, and the vote is counted. Running an example
again changes nothing: the event is absorbed as a duplicate.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    SADA,
    SadaProcess,
    clean_env,
    free_port,
    get_json,
    metric_sums,
    wait_for,
    wait_healthy,
)
from kafka_support import ApacheKafka

pytestmark = [pytest.mark.broker, pytest.mark.slow]

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Publishing events"
EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[\w-]+) -->\s*```(?P<lang>\w+)\n(?P<code>.*?)```", re.S
)
BROKER_PORT, HTTP_PORT = "9092", "6066"


def examples() -> dict[str, str]:
    """The marked code blocks of the section, by name."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = {m["name"]: m["code"] for m in EXAMPLE.finditer(section)}
    assert set(found) == {"run", "curl", "confluent-kafka", "kafka-python"}, sorted(found)
    return found


def tracking_code(code: str) -> str:
    """The tracking code an example's submission carries."""
    match = re.search(r'"tracking_code": "([0-9]+)"', code)
    assert match is not None, code
    return match[1]


def json_values(text: str) -> list[Any]:
    """The JSON documents printed one after the other in ``text``."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        value, i = decoder.raw_decode(text, i)
        values.append(value)


@dataclass
class Setup:
    workdir: Path
    broker_port: int
    http_port: int
    blocks: dict[str, str]
    run: SadaProcess
    broker_kind: str

    def localise(self, code: str) -> str:
        return code.replace(f"127.0.0.1:{BROKER_PORT}", f"127.0.0.1:{self.broker_port}").replace(
            f"127.0.0.1:{HTTP_PORT}", f"127.0.0.1:{self.http_port}"
        )

    def run_example(self, name: str) -> str:
        """Run one example as a user would; its standard output."""
        code = self.localise(self.blocks[name])
        script = self.workdir / f"example-{name}.{'sh' if name == 'curl' else 'py'}"
        script.write_text(code, encoding="utf-8")
        argv = ["bash", str(script)] if name == "curl" else [sys.executable, str(script)]
        done = subprocess.run(
            argv,
            cwd=self.workdir,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, (
            f"the {name} example failed ({done.returncode})\n{code}\n"
            f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}\n{self.run.output()}"
        )
        return done.stdout

    def submission(self, code: str) -> dict[str, Any] | None:
        answer = get_json(self.http_port, f"/api/v1/submissions/{code}")
        if answer is None or answer[0] != 200:
            return None
        body: dict[str, Any] = answer[1]
        return body


@pytest.fixture
def setup(broker_kind: str, tmp_path: Path) -> Iterator[Setup]:
    blocks = examples()
    http_port = free_port()
    command = shlex.split(blocks["run"])
    assert command[:2] == ["sada", "run"], command
    node: ApacheKafka | None = None
    if broker_kind == "tansu":
        broker_port = free_port()
        command = shlex.split(blocks["run"].replace(BROKER_PORT, str(broker_port)))
    else:
        # The same examples against an Apache Kafka cluster: ``sada run`` is pointed
        # at it, and the clients' 127.0.0.1:9092 becomes its address.
        node = ApacheKafka(tmp_path / "apache-kafka").start()
        broker_port = node.port
        command = ["sada", "run", "--bootstrap", node.bootstrap]
    # The user's working directory holds ./sada-data; here, the test's own.
    run = SadaProcess(
        "sada-run", [SADA, *command[1:], "--port", str(http_port)], clean_env(), tmp_path
    )
    try:
        wait_healthy(run, http_port)
        yield Setup(tmp_path, broker_port, http_port, blocks, run, broker_kind)
    finally:
        run.close()
        if node is not None:
            node.stop()


@pytest.mark.timeout(240)
def test_publishing_examples_reach_the_pipeline(setup: Setup) -> None:
    # The address the README tells the user to read is the one the clients need.
    if setup.broker_kind == "tansu":
        assert f"broker 127.0.0.1:{setup.broker_port} embedded" in setup.run.stdout()

    printed = json_values(setup.run_example("curl"))
    assert len(printed) == 2, printed
    posted, tracked = printed
    assert (posted["accepted"], posted["rejected"]) == (1, 0), posted
    portal_code = tracking_code(setup.blocks["curl"])
    assert tracked["tracking_code"] == portal_code
    assert tracked["status"] == "open"

    assert "published" in setup.run_example("confluent-kafka")
    assert "published" in setup.run_example("kafka-python")
    complaint_code = tracking_code(setup.blocks["confluent-kafka"])

    def counted() -> dict[str, Any] | None:
        answer = setup.submission(complaint_code)
        return answer if answer is not None and answer["support"] == 1 else None

    complaint = wait_for(counted, 60, "the vote counted on the tracking API", watch=setup.run)
    assert complaint["status"] == "open"
    assert complaint["oppose"] == 0
    assert setup.submission(portal_code) is not None

    # Run twice, each example changes nothing the second time.
    before = metric_sums(setup.http_port).get("sada_events_duplicate_total", 0)
    again = json_values(setup.run_example("curl"))
    # The gateway knows the copy and does not publish it again; Kafka's copies are absorbed.
    assert [r["status"] for r in again[0]["results"]] == ["duplicate"], again[0]
    assert again[1]["submission_id"] == tracked["submission_id"]
    setup.run_example("confluent-kafka")
    setup.run_example("kafka-python")
    wait_for(
        lambda: metric_sums(setup.http_port).get("sada_events_duplicate_total", 0) >= before + 2,
        60,
        "the second copies to be absorbed as duplicates",
        watch=setup.run,
    )
    answer = setup.submission(complaint_code)
    assert answer is not None and (answer["support"], answer["oppose"]) == (1, 0)
    sums = metric_sums(setup.http_port)
    assert sums.get("sada_events_rejected_total", 0) == 0
    assert sums.get("sada_events_accepted_total", 0) == 3
