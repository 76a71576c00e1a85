"""`make bench`: kafka-bridge's records per second and added latency, per
delivery mode, process count and API speed, against what bare loops reach.

Users choose the bridge by how many records per second a core moves and
how much latency it adds, so the bench runs a matrix (tools/bench_cases.py)
on one machine, in one run, on a local broker and two local sinks: nginx
answering 204 at once (tools/nginx_sink.py) and an asyncio server answering
204 after 20 ms (tools/slow_sink.py). In order:

1. ceilings (tools/bench_ceilings.py): consume loops with orjson over a
   topic of their own, with one process and with one per CPU; then POST
   loops with the threads and processes of each bridge case, one record or
   100 per POST, on each sink;
2. the baseline a user would write (tools/bench_baseline.py), on each sink;
3. the bridge cases (tools/bench_bridge.py), each over a backlog of its
   own: rate, ratio to the lower ceiling, added latency at half its rate,
   peak memory per process, CPU by whom.

Each topic is deleted once its case is done. The figures are printed as
one table with the targets (tools/bench_targets.py) below it, and written
with the facts of the machine to bench-results.json. docs/performance.md
explains them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import confluent_kafka
from confluent_kafka import KafkaException

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka_bridge.usable_cpus import usable_cpus  # noqa: E402
from tools.bench_baseline import (  # noqa: E402
    BaselineError,
    BaselineRun,
    measure_baseline,
)
from tools.bench_bridge import (  # noqa: E402
    LATENCY_RATE_FRACTION,
    LATENCY_SECONDS,
    BridgeCaseError,
    SinkTarget,
    Tuning,
    bridge_runs_processes,
    run_bridge_case,
)
from tools.bench_cases import (  # noqa: E402
    CASE_NAMES,
    DEFAULT_WORKERS,
    FAST_SINK,
    ONE_PROCESS,
    POST_CEILING_SECONDS,
    RECORDS_PER_BATCH,
    SLOW_SINK,
    SLOW_SINK_DELAY_SECONDS,
    BaselineCase,
    BridgeCase,
    PostCeilingCase,
    Selection,
    Sizes,
)
from tools.bench_ceilings import (  # noqa: E402
    Ceiling,
    CeilingError,
    measure_consume,
    measure_post,
)
from tools.bench_cpu import (  # noqa: E402
    BENCH,
    BRIDGE,
    BROKER,
    SINK,
    CpuMeter,
    CpuShare,
    CpuWatch,
)
from tools.bench_records import (  # noqa: E402
    PARTITIONS,
    ProduceError,
    Topics,
    produce_backlog,
    record_value,
)
from tools.bench_results import (  # noqa: E402
    BaselineFigures,
    BridgeFigures,
    CeilingFigures,
    Results,
)
from tools.bench_spawn import SpawnError  # noqa: E402
from tools.bench_table import print_results, print_targets  # noqa: E402
from tools.bench_targets import evaluate  # noqa: E402
from tools.local_kafka import (  # noqa: E402
    KAFKA_VERSION,
    LocalKafka,
    LocalKafkaError,
)
from tools.nginx_sink import NginxSink, NginxSinkError, nginx_version  # noqa: E402
from tools.slow_sink import SlowSink, SlowSinkError  # noqa: E402

BENCH_STATE_DIR = ROOT / ".cache" / "kafka" / "bench"
RESULTS_PATH = ROOT / "bench-results.json"
MINIMUM_RECORDS = 1_000
# The case whose CPU per record tools/bench_instrumentation.py sets the
# cost of the metrics against: one record per POST, one process.
INSTRUMENTATION_CASE = "record-fast-1"

# Failures the bench reports in a line instead of a traceback.
_FAILURES = (
    BaselineError, BridgeCaseError, CeilingError, LocalKafkaError,
    NginxSinkError, ProduceError, SlowSinkError, SpawnError,
)
_VALUE_SIZE_SAMPLE = 1_000

Measured = TypeVar("Measured")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; 0 if no bridge case lost a record or failed to
    stop cleanly."""
    options = _parse_arguments(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = _run(options)
    except _FAILURES as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped")
        return 130

    targets = evaluate(
        results,
        latency_judged=options.latency_fraction == LATENCY_RATE_FRACTION,
    )
    results = replace(results, targets=[t.as_dict() for t in targets])
    print_results(results)
    print_targets(targets)
    RESULTS_PATH.write_text(json.dumps(_as_json(results), indent=2) + "\n")
    print(f"\nwritten to {RESULTS_PATH.name}")
    return 0 if results.ok else 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so that what the bench started stops.
    raise KeyboardInterrupt


@dataclass
class _Site:
    """Where this run measures: its broker, sinks and directory, and the
    bridge running at the moment, for counting CPU by role."""

    broker: LocalKafka
    bootstrap: str
    nginx: NginxSink
    slow_sink: SlowSink
    topics: Topics
    work: Path
    run_id: str
    bridge_pid: int | None = None

    def sink(self, name: str) -> SinkTarget:
        if name == FAST_SINK:
            return SinkTarget(self.nginx.url, self.nginx.arrivals.path, 0.0)
        return SinkTarget(
            self.slow_sink.url,
            self.slow_sink.arrivals.path,
            self.slow_sink.delay_seconds,
        )

    def role_roots(self) -> dict[str, list[int]]:
        broker = self.broker.running_pid()
        return {
            BRIDGE: [self.bridge_pid] if self.bridge_pid else [],
            SINK: [*self.nginx.process_ids(), *self.slow_sink.process_ids()],
            BROKER: [broker] if broker else [],
            BENCH: [os.getpid()],
        }

    def set_bridge_pid(self, pid: int | None) -> None:
        self.bridge_pid = pid


def _run(options: argparse.Namespace) -> Results:
    selection = Selection.matching(options.only)
    sizes = _sizes(options)
    workers = {FAST_SINK: options.workers, SLOW_SINK: options.slow_workers}
    tuning = Tuning(options.latency_fraction, options.batch_wait_ms)
    not_run = _cases_this_bridge_cannot_run(selection)
    if not_run:
        selection = selection.without_processes()

    machine = _machine_facts()
    with contextlib.ExitStack() as stack:
        site = _set_up(stack)
        meter = CpuMeter(site.role_roots)
        ceilings = _measure_ceilings(site, selection, sizes, workers, meter)
        baselines = [
            _measure_baseline(site, case, sizes, meter)
            for case in selection.baseline_cases
        ]
        bridge_cases = [
            _measure_bridge_case(
                site, case, sizes, workers, meter, ceilings, tuning
            )
            for case in selection.bridge_cases
        ]

    return Results(
        machine=machine,
        settings=_settings(selection, sizes, workers, tuning),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        bridge_cases=bridge_cases,
        baselines=baselines,
        ceilings=list(ceilings.values()),
        not_run=not_run,
    )


def _say(message: str) -> None:
    print(message, flush=True)


def _cases_this_bridge_cannot_run(selection: Selection) -> dict[str, str]:
    several = [
        case.name for case in selection.bridge_cases
        if case.processes != ONE_PROCESS
    ]
    if not several or bridge_runs_processes():
        return {}
    return dict.fromkeys(several, "this kafka-bridge has no run --processes")


def _set_up(stack: contextlib.ExitStack) -> _Site:
    """A work directory, a broker and both sinks, each stopped on exit."""
    work = Path(stack.enter_context(
        tempfile.TemporaryDirectory(prefix="kafka-bridge-bench-")
    ))
    _say("starting a local Kafka broker (the first run fetches its jars)")
    broker = LocalKafka(BENCH_STATE_DIR)
    stack.callback(broker.stop)
    bootstrap = broker.start()

    nginx = stack.enter_context(NginxSink(work / "nginx"))
    slow_sink = stack.enter_context(
        SlowSink(work / "slow-sink", delay_seconds=SLOW_SINK_DELAY_SECONDS)
    )
    topics = Topics(bootstrap)
    stack.callback(topics.close)
    run_id = str(int(time.time()))
    return _Site(broker, bootstrap, nginx, slow_sink, topics, work, run_id)


@contextlib.contextmanager
def _case_topic(site: _Site, name: str) -> Iterator[str]:
    """A fresh topic for one case, deleted after it to give back disk."""
    topic = site.topics.create(f"bench-{name}-{site.run_id}")
    try:
        yield topic
    finally:
        # A broker already gone takes the topic with it.
        with contextlib.suppress(KafkaException):
            site.topics.delete(topic)


def _timed(
    meter: CpuMeter, measure: Callable[[CpuWatch], Measured]
) -> tuple[Measured, CpuShare | None]:
    """Run a measurement that says when its loops start and end; its
    result, and the CPU shares in between."""
    watch = CpuWatch(meter)
    measured = measure(watch)
    return measured, watch.share


# -- 1. ceilings -------------------------------------------------------


def _measure_ceilings(
    site: _Site,
    selection: Selection,
    sizes: Sizes,
    workers: dict[str, int],
    meter: CpuMeter,
) -> dict[str, CeilingFigures]:
    figures: dict[str, CeilingFigures] = {}
    consume_ceilings = selection.consume_ceilings()
    if consume_ceilings:
        figures.update(
            _measure_consume_ceilings(site, consume_ceilings, sizes, meter)
        )

    for post in selection.post_ceilings():
        url = site.sink(post.sink).url
        _say(
            f"{post.name}: POSTs of {post.records_per_post} record(s) "
            f"from {post.processes} process(es) x {workers[post.sink]} "
            f"threads, {sizes.ceiling_seconds:g} s"
        )
        figures[post.name] = _measure_post_ceiling(
            post, url, workers[post.sink], sizes.ceiling_seconds, meter
        )
    return figures


def _measure_post_ceiling(
    post: PostCeilingCase,
    url: str,
    workers: int,
    seconds: float,
    meter: CpuMeter,
) -> CeilingFigures:
    def measure(watch: CpuWatch) -> Ceiling:
        return measure_post(
            post.name, url,
            records_per_post=post.records_per_post,
            processes=post.processes,
            threads=workers,
            seconds=seconds,
            watch=watch,
        )

    return _ceiling_figures(*_timed(meter, measure))


def _measure_consume_ceilings(
    site: _Site, ceilings: dict[str, int], sizes: Sizes, meter: CpuMeter
) -> dict[str, CeilingFigures]:
    figures = {}
    records = sizes.consume_ceiling_records
    with _case_topic(site, "consume") as topic:
        _say(f"consume ceilings: producing {records:,} records")
        produced = produce_backlog(site.bootstrap, topic, records)
        for name, processes in ceilings.items():
            _say(f"{name}: consume loops in {processes} process(es)")
            measure = functools.partial(
                measure_consume, name, site.bootstrap, produced, processes
            )
            figures[name] = _ceiling_figures(*_timed(meter, measure))
    return figures


def _ceiling_figures(
    ceiling: Ceiling, share: CpuShare | None
) -> CeilingFigures:
    figures = CeilingFigures.of(ceiling, share)
    _say(f"  {figures.records_per_second:,.0f} records/s")
    return figures


# -- 2. the baseline ---------------------------------------------------


def _measure_baseline(
    site: _Site, case: BaselineCase, sizes: Sizes, meter: CpuMeter
) -> BaselineFigures:
    records = sizes.of(case.default_records)
    url = site.sink(case.sink).url
    with _case_topic(site, case.name) as topic:
        _say(f"{case.name}: producing {records:,} records")
        produce_backlog(site.bootstrap, topic, records)
        _say(f"{case.name}: one thread, requests.post per record")
        measure = functools.partial(
            measure_baseline, case.name, site.bootstrap, topic, url, records
        )
        run, share = _timed(meter, measure)
    return _baseline_figures(run, share)


def _baseline_figures(
    run: BaselineRun, share: CpuShare | None
) -> BaselineFigures:
    figures = BaselineFigures.of(run, share)
    _say(f"  {figures.records_per_second:,.1f} records/s")
    return figures


# -- 3. the bridge -----------------------------------------------------


def _measure_bridge_case(
    site: _Site,
    case: BridgeCase,
    sizes: Sizes,
    workers: dict[str, int],
    meter: CpuMeter,
    ceilings: dict[str, CeilingFigures],
    tuning: Tuning,
) -> BridgeFigures:
    records = sizes.of(case.default_records)
    with _case_topic(site, case.name) as topic:
        _say(f"{case.name}: producing {records:,} records")
        backlog = produce_backlog(site.bootstrap, topic, records)
        _say(
            f"{case.name}: kafka-bridge, {case.process_count} process(es) "
            f"x {workers[case.sink]} workers"
        )
        run = run_bridge_case(
            case,
            backlog,
            bootstrap=site.bootstrap,
            sink=site.sink(case.sink),
            workers=workers[case.sink],
            work_dir=site.work,
            meter=meter,
            register_pid=site.set_bridge_pid,
            tuning=tuning,
        )
    figures = BridgeFigures.of(case, records, run, ceilings)
    _say(
        f"  {figures.records_per_second:,.0f} records/s; added latency p99 "
        f"{figures.added_latency_p99_ms} ms"
    )
    return figures


# -- results -----------------------------------------------------------


def _settings(
    selection: Selection,
    sizes: Sizes,
    workers: dict[str, int],
    tuning: Tuning,
) -> dict[str, Any]:
    values = [record_value(index) for index in range(_VALUE_SIZE_SAMPLE)]
    return {
        "cases": [
            *(case.name for case in selection.bridge_cases),
            *(case.name for case in selection.baseline_cases),
        ],
        "mean_value_bytes": round(sum(map(len, values)) / len(values)),
        "partitions": PARTITIONS,
        "workers": workers,
        "auto_processes": usable_cpus(),
        "records_per_batch": RECORDS_PER_BATCH,
        "slow_sink_delay_ms": SLOW_SINK_DELAY_SECONDS * 1000,
        "scale": sizes.scale,
        "records_per_case": sizes.records,
        "post_ceiling_seconds": sizes.ceiling_seconds,
        "consume_ceiling_records": sizes.consume_ceiling_records,
        "latency_seconds": LATENCY_SECONDS,
        "latency_rate_fraction": tuning.latency_fraction,
        "batch_max_wait_ms": tuning.batch_max_wait_ms,
    }


def _as_json(results: Results) -> dict[str, Any]:
    document = asdict(results)
    instrumented = results.bridge_case(INSTRUMENTATION_CASE)
    if instrumented is not None:
        document["bridge_cpu_ms_per_record"] = instrumented.cpu_ms_per_record
    return document


def _machine_facts() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "confluent_kafka": confluent_kafka.__version__,
        "kafka": KAFKA_VERSION,
        "nginx": nginx_version(),
        "kernel": platform.release(),
        # Other work on the machine slows every figure; this shows it.
        "load_average_before": round(os.getloadavg()[0], 2),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


# -- options -----------------------------------------------------------


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Measure kafka-bridge per delivery mode, process count "
        "and API speed against bare consume and POST loops, on a local "
        "broker, an nginx sink and a 20 ms sink.",
        epilog=f"cases: {', '.join(CASE_NAMES)}",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scale", type=_positive_fraction, default=1.0,
        help="multiply every case's records and the POST ceilings' time "
        "by this (default: %(default)s)",
    )
    size.add_argument(
        "--records", type=_count("--records", MINIMUM_RECORDS), default=None,
        help="records for every case and for the consume ceilings, "
        "instead of each one's own",
    )
    parser.add_argument(
        "--ceiling-seconds", type=_positive_fraction, default=None,
        help=f"how long each POST ceiling runs (default: "
        f"{POST_CEILING_SECONDS:g} x --scale)",
    )
    parser.add_argument(
        "--only", action="append", metavar="CASE",
        help="run only the cases matching this name or shell pattern, "
        "such as 'record-*'; may be repeated (ceilings follow the cases)",
    )
    parser.add_argument(
        "--workers", type=_count("--workers", 1),
        default=DEFAULT_WORKERS[FAST_SINK],
        help="the bridge's pipeline.workers against nginx, and the threads "
        "of each POST ceiling process there (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-fraction", type=_latency_fraction,
        default=LATENCY_RATE_FRACTION,
        help="send the latency records at this fraction of the rate each "
        "case reached on its backlog (default: %(default)s); the latency "
        "target is judged only at the default",
    )
    parser.add_argument(
        "--batch-wait-ms", type=_count("--batch-wait-ms", 0), default=None,
        help="the bridge's delivery.batch_max_wait_ms in the batch cases "
        "(default: the bridge's own)",
    )
    parser.add_argument(
        "--slow-workers", type=_count("--slow-workers", 1),
        default=DEFAULT_WORKERS[SLOW_SINK],
        help="the same against the 20 ms sink (default: %(default)s)",
    )
    options = parser.parse_args(argv)
    if Selection.matching(options.only).empty:
        parser.error(
            f"--only matches no case; the cases are {', '.join(CASE_NAMES)}"
        )
    return options


def _sizes(options: argparse.Namespace) -> Sizes:
    seconds = options.ceiling_seconds or POST_CEILING_SECONDS * options.scale
    return Sizes(
        scale=options.scale, records=options.records, ceiling_seconds=seconds
    )


def _count(option: str, minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least minimum, or a message
    naming the option, the rule and the bad value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{option} must be a whole number of at least {minimum:,}, "
                f"not {text!r}; leave it out for the default"
            )
        return value

    return parse


def _latency_fraction(text: str) -> float:
    value = _positive_fraction(text)
    if value > 1:
        raise argparse.ArgumentTypeError(
            f"expected a fraction of the rate, above 0 and at most 1, "
            f"not {text!r}"
        )
    return value


def _positive_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"expected a number above 0, such as 0.1, not {text!r}"
        )
    return value


if __name__ == "__main__":
    sys.exit(main())
