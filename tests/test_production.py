"""Production mode: the demo university, the demo keys and a missing pseudonym key are refused.

``sada run --production`` (or ``SADA_ENV=production``) as an operator starts
it; each refusal is one line, before anything is started. The compose file
runs in production mode with the example configuration under ``ops/``, which
production mode accepts.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from e2e_support import FAST_TIMERS, SADA, SadaProcess, clean_env, free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "ops" / "sada" / "production.example.toml"
DEMO = ROOT / "sada" / "default_config.toml"


def refused(tmp_path: Path, *args: str, **env: str) -> str:
    done = subprocess.run(
        [SADA, "run", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), *args],
        env=clean_env(**env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started
    return done.stderr


def test_production_refuses_the_demo_university(tmp_path: Path) -> None:
    keys = {"SADA_PSEUDONYM_KEY": "k", "SADA_SIGNING_KEY_FILE": signing_key(tmp_path)}
    assert "demo university" in refused(tmp_path, "--production", **keys)
    copy = tmp_path / "copy.toml"
    copy.write_text(DEMO.read_text("utf-8"), "utf-8")
    err = refused(tmp_path, "--config", str(copy), SADA_ENV="production", **keys)
    assert "demo university" in err and "SADA_CONFIG" in err


@pytest.mark.parametrize("key", ["demo-portal-key", None])
def test_production_refuses_a_demo_integrator_key(tmp_path: Path, key: str | None) -> None:
    demo_hash = (
        hashlib.sha256(key.encode()).hexdigest()
        if key
        else next(
            line.split('"')[1] for line in DEMO.read_text().splitlines() if "key_sha256" in line
        )
    )
    config = tmp_path / "org.toml"
    config.write_text(
        EXAMPLE.read_text("utf-8")
        + f'\n[[integrators]]\nid = "portal"\nkey_sha256 = "{demo_hash}"\n'
        + 'sources = ["/integrations/portal"]\ntypes = ["sada.submission.created"]\n',
        "utf-8",
    )
    keys = {"SADA_PSEUDONYM_KEY": "k", "SADA_SIGNING_KEY_FILE": signing_key(tmp_path)}
    err = refused(tmp_path, "--production", "--config", str(config), **keys)
    assert "'portal'" in err and "demo key" in err


def test_production_refuses_a_missing_pseudonym_or_signing_key(tmp_path: Path) -> None:
    signing = signing_key(tmp_path)
    err = refused(tmp_path, "--production", "--config", str(EXAMPLE), SADA_SIGNING_KEY_FILE=signing)
    assert "SADA_PSEUDONYM_KEY" in err
    err = refused(tmp_path, "--production", "--config", str(EXAMPLE), SADA_PSEUDONYM_KEY="k")
    assert "SADA_SIGNING_KEY_FILE" in err


def signing_key(tmp_path: Path) -> str:
    path = tmp_path / "keys" / "signing.key"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        done = subprocess.run(
            [SADA, "audit", "key", "--generate", str(path), "--name", "test.example/2026"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    return str(path)


def test_production_runs_with_the_example_configuration(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        **FAST_TIMERS,
        SADA_ENV="production",
        SADA_PSEUDONYM_KEY="an operator's key",
        SADA_SIGNING_KEY_FILE=signing_key(tmp_path),
    )
    argv = [SADA, "run", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    run = SadaProcess("sada-run", [*argv, "--config", str(EXAMPLE)], env, tmp_path)
    try:
        wait_healthy(run, port)
        assert not (tmp_path / "data" / "pseudonym.key").exists()  # the given key, no other
        os.killpg(run.pid, signal.SIGTERM)
        assert run.wait(60) == 0, run.output()
    finally:
        run.close()


def test_compose_runs_in_production_mode_with_the_example_configuration() -> None:
    sada = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["sada"]
    command = sada["command"]
    assert "--production" in command
    config = command[command.index("--config") + 1]
    mounts = [v for v in sada["volumes"] if isinstance(v, str) and v.endswith(f":{config}:ro")]
    assert len(mounts) == 1 and "ops/sada/production.example.toml" in mounts[0]
    # The key has no default: compose refuses to start without one.
    assert ":?" in sada["environment"]["SADA_PSEUDONYM_KEY"]
    assert sada["environment"]["SADA_SIGNING_KEY_FILE"].startswith("/var/lib/sada/")
