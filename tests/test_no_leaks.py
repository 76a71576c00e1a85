"""No payload and no secret ever reaches the output, whatever happens.

A whole run of the daemon, at DEBUG, with secrets from a file and from the
environment, canary strings in good and poison payloads, refusals, retries
and dead letters: every line it prints is searched for the canaries.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import NewTopicFactory
from tests.pipeline_support import WAIT_SECONDS, produce, read_topic
from tools.local_api import LocalApi

pytestmark = pytest.mark.kafka

FILE_SECRET = "canary-file-secret-51d2"
ENV_SECRET = "canary-env-secret-9e07"
URL_SECRET = "canary-url-password-c3aa"
PAYLOAD_CANARY = "canary-payload-77f1"


def _config(
    tmp_path: Path, bootstrap: str, topic: str, dlq: str, url: str
) -> Path:
    secret_file = tmp_path / "token"
    secret_file.write_text(FILE_SECRET + "\n")
    with_password = url.replace("http://", f"http://bridge:{URL_SECRET}@")
    config = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"{topic}-leaks",
            "topics": [topic],
            "consumer": {"sasl.password": "env://CANARY_SECRET"},
        },
        "api": {
            "primary_url": with_password,
            "headers": {"X-Api-Token": f"file://{secret_file}"},
            "retry": {"initial_backoff_seconds": 0.01, "max_attempts": 2},
        },
        "dlq": {"topic": dlq},
        "metrics": {"enabled": False},
        "logging": {"level": "DEBUG", "format": "json"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_no_secret_and_no_payload_appears_in_any_output(
    tmp_path: Path,
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
) -> None:
    topic, dlq = new_topic(2), new_topic(1)
    good = json.dumps({"id": "x", "note": PAYLOAD_CANARY}).encode()
    poison = {
        1: f"{{{PAYLOAD_CANARY}".encode(),
        2: f'"{PAYLOAD_CANARY}\xff"'.encode("latin-1"),
    }
    values = {index: good for index in range(10)} | poison
    produce(kafka_bootstrap, topic, 10, values=values)
    api.respond_with(400, count=1)
    api.respond_with(503, count=2)
    config = _config(tmp_path, kafka_bootstrap, topic, dlq, api.url)
    env = {**os.environ, "CANARY_SECRET": ENV_SECRET, "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "bridge.log"

    checked = subprocess.run(
        [sys.executable, "-m", "kafka_bridge.cli", "check-config",
         "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    with log_path.open("wb") as log_file:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "kafka_bridge.cli", "run",
             "--config", str(config)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
        try:
            letters = read_topic(kafka_bootstrap, dlq, 3, WAIT_SECONDS)
            delivered = api.wait_for_count(10, WAIT_SECONDS)
            bridge.send_signal(signal.SIGTERM)
            code = bridge.wait(timeout=60)
        finally:
            if bridge.poll() is None:
                bridge.kill()
                bridge.wait()

    output = checked.stdout + checked.stderr + log_path.read_text("utf-8", "replace")
    assert checked.returncode == 0, checked.stderr
    assert delivered and len(letters) == 3 and code == 0, output[-3000:]
    assert '"record_delivered"' in output  # the per-record events ran
    assert "***" in checked.stdout  # and the secrets were there, masked
    for canary in (FILE_SECRET, ENV_SECRET, URL_SECRET, PAYLOAD_CANARY):
        leaking = [line for line in output.splitlines() if canary in line]
        assert not leaking, leaking[:3]
    # The secrets did reach the API: they were used, just never shown.
    first = api.received()[0]
    assert first.headers["X-Api-Token"] == FILE_SECRET
