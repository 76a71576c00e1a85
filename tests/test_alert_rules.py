"""The Prometheus alert rules are valid, tested, labelled and documented.

promtool checks the rule file and runs its unit tests in
tests/promtool/alerts_test.yaml; the other tests hold the rules to the
conventions the runbook in docs/alerts.md relies on. promtool is found on
PATH or installed by tools/promtool.py (`make test` does that first); when
neither works the tests fail with the reason rather than skip.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.promtool import PromtoolUnavailable, ensure_promtool

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
RULES_PATH = REPOSITORY_ROOT / "chart" / "prometheus_alerts.yaml"
RULE_TESTS_PATH = REPOSITORY_ROOT / "tests" / "promtool" / "alerts_test.yaml"
RUNBOOK_PATH = REPOSITORY_ROOT / "docs" / "alerts.md"

SEVERITIES = {"page", "ticket"}
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook"}

_PROMTOOL_TIMEOUT_SECONDS = 60.0
_RUNBOOK_PREFIX = "docs/alerts.md#"


def run_promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in the repository root; fail the test if it cannot."""
    try:
        promtool = ensure_promtool()
    except PromtoolUnavailable as error:
        pytest.fail(f"promtool is needed to test the alert rules: {error}")

    command = [promtool, *arguments]
    try:
        return subprocess.run(
            command,
            cwd=REPOSITORY_ROOT,
            capture_output=True,
            text=True,
            timeout=_PROMTOOL_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"`{' '.join(command)}` did not finish within "
            f"{_PROMTOOL_TIMEOUT_SECONDS:.0f} s:\n{error.output or ''}"
        )


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path} does not hold a mapping"
    return document


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rule file, across its groups."""
    groups = load_yaml(RULES_PATH)["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    return [rule for rule in rules if "alert" in rule]


def runbook_anchors() -> set[str]:
    """The anchors a Markdown renderer gives the runbook's headings."""
    anchors = set()
    for line in RUNBOOK_PATH.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#{1,6} +(.+)", line)
        if heading is not None:
            words = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(words.replace(" ", "-"))
    return anchors


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {result.returncode}\n{result.stdout}{result.stderr}"


def test_the_rule_file_passes_promtool_check() -> None:
    result = run_promtool("check", "rules", str(RULES_PATH))

    assert result.returncode == 0, describe(result)


def test_the_alerts_fire_and_stay_quiet_as_their_unit_tests_expect() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS_PATH))

    assert result.returncode == 0, describe(result)


def test_every_alert_has_a_severity_and_the_runbook_annotations() -> None:
    problems = []
    for rule in alert_rules():
        severity = rule.get("labels", {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{rule['alert']}: severity {severity!r}")
        missing = REQUIRED_ANNOTATIONS - set(rule.get("annotations", {}))
        if missing:
            problems.append(f"{rule['alert']}: no {sorted(missing)}")

    assert alert_rules(), f"no alerting rule in {RULES_PATH}"
    assert problems == []


def test_every_runbook_annotation_names_a_section_of_the_runbook() -> None:
    anchors = runbook_anchors()
    problems = []
    for rule in alert_rules():
        runbook = rule.get("annotations", {}).get("runbook", "")
        anchor = runbook.removeprefix(_RUNBOOK_PREFIX)
        if not runbook.startswith(_RUNBOOK_PREFIX) or anchor not in anchors:
            problems.append(f"{rule['alert']}: {runbook!r}")

    assert problems == []


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS_PATH)["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = firing if check.get("exp_alerts") else quiet
            expected.add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}

    assert names - firing == set(), "alerts no unit test fires"
    assert names - quiet == set(), "alerts no unit test keeps quiet"
