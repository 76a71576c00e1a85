"""The command line: exit codes, messages, and secrets kept out of output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kafka_bridge.cli import main
from kafka_bridge.version import __version__
from tests.conftest import NewTopicFactory
from tests.pipeline_support import produce
from tools.local_api import LocalApi

CANARY = "canary-secret-7f3a9c"


@pytest.fixture(autouse=True)
def _logging_restored(restore_logging: None) -> None:
    """The command configures logging for the process."""


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _valid_yaml(bootstrap: str = "127.0.0.1:9", topic: str = "t") -> str:
    return (
        "kafka:\n"
        f"  bootstrap_servers: {bootstrap}\n"
        f"  topics: [{topic}]\n"
        "api:\n"
        "  primary_url: http://127.0.0.1:9/ingest\n"
        "metrics:\n"
        "  enabled: false\n"
    )


def test_version_prints_the_package_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_a_typo_in_a_key_exits_2_naming_the_key_and_the_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _valid_yaml().replace("primary_url", "primry_url")

    code = main(["check-config", "--config", str(_config(tmp_path, text))])

    assert code == 2
    error = capsys.readouterr().err
    assert "api.primry_url" in error
    assert "primary_url" in error.replace("api.primry_url", "")


def test_check_config_never_prints_a_file_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "token"
    secret.write_text(CANARY + "\n")
    text = _valid_yaml().replace(
        "api:\n",
        f"api:\n  headers:\n    Authorization: file://{secret}\n",
    )

    code = main(["check-config", "--config", str(_config(tmp_path, text))])

    out, err = capsys.readouterr()
    assert code == 0
    assert "Authorization" in out
    assert CANARY not in out + err


def test_a_secret_that_breaks_a_rule_is_not_echoed_in_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "workers"
    secret.write_text(CANARY)
    text = _valid_yaml() + f"pipeline:\n  workers: file://{secret}\n"

    code = main(["check-config", "--config", str(_config(tmp_path, text))])

    assert code == 2
    assert CANARY not in "".join(capsys.readouterr())


def test_no_config_path_exits_2_saying_how_to_give_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BRIDGE_CONFIG", raising=False)

    code = main(["check-config"])

    assert code == 2
    assert "KAFKA_BRIDGE_CONFIG" in capsys.readouterr().err


def test_the_config_path_may_come_from_the_environment(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _config(tmp_path, _valid_yaml())
    monkeypatch.setenv("KAFKA_BRIDGE_CONFIG", str(path))

    code = main(["check-config"])

    assert code == 0
    assert "primary_url" in capsys.readouterr().out


def test_an_unknown_subcommand_exits_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["launch"])

    assert exit_info.value.code == 2


def test_a_consumer_setting_the_bridge_owns_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _valid_yaml().replace(
        "  topics: [t]\n",
        "  topics: [t]\n  consumer:\n    enable.auto.commit: true\n",
    )

    code = main(["run", "--config", str(_config(tmp_path, text))])

    assert code == 2
    assert "kafka.consumer.enable.auto.commit" in capsys.readouterr().err


@pytest.mark.kafka
def test_run_delivers_then_exits_0_on_sigterm(
    tmp_path: Path, kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    topic = new_topic(2)
    with LocalApi() as api:
        text = _valid_yaml(kafka_bootstrap, topic).replace(
            "http://127.0.0.1:9/ingest", api.url
        )
        produce(kafka_bootstrap, topic, 20)
        log_path = tmp_path / "bridge.log"
        with log_path.open("wb") as log_file:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "kafka_bridge.cli", "run",
                 "--config", str(_config(tmp_path, text))],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            delivered = api.wait_for_count(20, timeout_seconds=60)
            bridge.send_signal(signal.SIGTERM)
            code = bridge.wait(timeout=60)
        finally:
            if bridge.poll() is None:
                bridge.kill()
                bridge.wait()

    log = log_path.read_text()
    assert delivered, log
    assert code == 0, log
    assert '"bridge_stopped"' in log


@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize(
    ("section", "extra"),
    [("consumer", ""), ("producer", "dlq:\n  topic: t.dlq\n")],
)
def test_a_property_librdkafka_refuses_exits_2_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    section: str,
    extra: str,
) -> None:
    text = _valid_yaml().replace(
        "  topics: [t]\n",
        f"  topics: [t]\n  {section}:\n    fetch.wiat.max.ms: 50\n",
    ) + extra

    code = main([command, "--config", str(_config(tmp_path, text))])

    assert code == 2
    out, error = capsys.readouterr()
    assert f"kafka.{section}.fetch.wiat.max.ms" in error
    assert "Traceback" not in error
    assert out == ""


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_a_transform_that_cannot_be_imported_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = _valid_yaml() + "pipeline:\n  transform: no_such_module:fn\n"

    code = main([command, "--config", str(_config(tmp_path, text))])

    assert code == 2
    error = capsys.readouterr().err
    assert "pipeline.transform" in error
    assert "no_such_module" in error


def test_check_config_accepts_what_librdkafka_accepts_and_connects_nowhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        text = _valid_yaml(bootstrap=f"127.0.0.1:{port}").replace(
            "  topics: [t]\n",
            "  topics: [t]\n  consumer:\n    fetch.wait.max.ms: 50\n",
        ) + "dlq:\n  topic: t.dlq\n"

        code = main(["check-config", "--config", str(_config(tmp_path, text))])

        with pytest.raises(TimeoutError):
            listener.accept()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "fetch.wait.max.ms" in out


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--processes", "0"], "--processes"),
        (["--processes", "every"], "--processes"),
        (["--max-restarts", "-2"], "--max-restarts"),
        (["--restart-backoff", "0"], "--restart-backoff"),
    ],
)
def test_a_bad_process_option_exits_2_naming_it_and_what_it_takes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    named: str,
) -> None:
    config = str(_config(tmp_path, _valid_yaml()))

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--config", config, *options])

    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert named in error
    assert options[1] in error


def test_a_bad_configuration_exits_2_before_any_process_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _valid_yaml().replace("primary_url: http", "primary_url: ftp")

    code = main(["run", "--config", str(_config(tmp_path, text)),
                 "--processes", "2"])

    error = capsys.readouterr().err
    assert code == 2
    assert "api.primary_url" in error
    assert "process_started" not in error


def test_a_metrics_port_in_use_stops_the_supervisor_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = _valid_yaml().replace(
            "  enabled: false\n",
            f"  enabled: true\n  host: 127.0.0.1\n  port: {port}\n",
        )

        code = main(["run", "--config", str(_config(tmp_path, text)),
                     "--processes", "2"])

    error = capsys.readouterr().err
    assert code == 2
    assert f"127.0.0.1:{port}" in error
    assert "process_started" not in error
