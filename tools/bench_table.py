"""The table `make bench` prints: every case, ceiling and target of a run.

One table, so that a bridge case, the ceilings it is set against and the
baseline a user would otherwise write can be read along one line or down
one column. CPU is in percent of one core, split by whose it was: the
measured program's own (the bridge, or the bare loop), the sinks', the
broker's, and other programs' on the machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tools.bench_bridge import LATENCY_RATE_FRACTION
from tools.bench_cases import PROCESS_PER_CPU
from tools.bench_cpu import DISTURBED_AT_CORES
from tools.bench_results import CpuFigures, Results
from tools.bench_targets import MET, Target

_HEADINGS = (
    ("", "case"), ("", "records"), ("", "records/s"),
    ("lower", "ceiling"), ("", ""), ("", "ratio"),
    ("added ms", "p50"), ("", "p99"),
    ("RSS MiB", "process"), ("", "superv."),
    ("CPU %", "own"), ("", "sink"), ("", "broker"), ("", "others"),
)
_WIDTHS = (22, 9, 10, 10, 8, 6, 9, 9, 9, 8, 7, 6, 7, 7)


def print_results(results: Results) -> None:
    _print_heading(results)
    _print_row([first for first, _ in _HEADINGS])
    _print_row([second for _, second in _HEADINGS])
    _print_bridge_cases(results)
    _print_baselines(results)
    _print_ceilings(results)
    _print_not_run(results)
    _print_disturbance(results)


def print_targets(targets: Sequence[Target]) -> None:
    print("\ntargets:")
    for target in targets:
        measured = (
            "not measured" if target.measured is None
            else f"{_number(target.measured, _digits(target.bound))} "
            f"{target.unit}".rstrip()
        )
        sign = "<=" if target.at_most else ">="
        bound = f"{sign} {_number(target.bound, _digits(target.bound))}"
        if target.note:
            bound += f" ({target.note})"
        if target.aim is not None:
            bound += f", aim {_number(target.aim, 0)}"
        status = target.status
        if target.aim_status == MET:
            status += ", aim too"
        print(f"  {status:<16} {target.description}")
        print(f"  {'':<16}   {measured}; target {bound}")


def _print_heading(results: Results) -> None:
    machine, settings = results.machine, results.settings
    print(
        f"\nkafka-bridge bench: JSON records of "
        f"{settings['mean_value_bytes']:,} bytes, {settings['partitions']} "
        f"partitions; workers a process: {_workers(settings)}; auto = "
        f"{settings['auto_processes']} processes\n"
        f"machine: {machine['cpu_model']}, {machine['cores']} cores; "
        f"Python {machine['python']}; librdkafka {machine['librdkafka']}; "
        f"{machine['nginx']}; Kafka {machine['kafka']}; load average "
        f"{machine['load_average_before']:.2f} before the run\n"
        f"sinks: fast = nginx answering 204 at once; slow = "
        f"tools/slow_sink.py answering 204 after "
        f"{settings['slow_sink_delay_ms']:g} ms\n"
        f"{_tuning(settings)}"
    )


def _tuning(settings: dict[str, Any]) -> str:
    """A line for what the run changed from the bench's defaults."""
    changes = []
    fraction = settings.get("latency_rate_fraction", LATENCY_RATE_FRACTION)
    if fraction != LATENCY_RATE_FRACTION:
        changes.append(
            f"latency records at {fraction:g} of each case's rate"
        )
    if settings.get("batch_max_wait_ms") is not None:
        changes.append(f"batch_max_wait_ms {settings['batch_max_wait_ms']}")
    return f"changed: {'; '.join(changes)}\n" if changes else ""


def _print_bridge_cases(results: Results) -> None:
    if results.bridge_cases:
        print("kafka-bridge")
    for case in results.bridge_cases:
        _print_row([
            _case_label(case.name, case.processes, case.process_count),
            _number(case.records),
            _number(case.records_per_second),
            _number(case.lower_ceiling_records_per_second),
            (case.lower_ceiling or "").split("-")[0],
            _number(case.ratio_to_lower_ceiling, 2),
            _number(case.added_latency_p50_ms, 1),
            _number(case.added_latency_p99_ms, 1),
            _number(case.peak_rss_mib),
            _number(case.supervisor_peak_rss_mib),
            *_cpu_cells(case.cpu, case.cpu.bridge_cores),
        ])


def _print_baselines(results: Results) -> None:
    if results.baselines:
        print("one thread, requests.post per record")
    for baseline in results.baselines:
        _print_row([
            baseline.name,
            _number(baseline.records),
            _number(baseline.records_per_second),
            *[""] * 7,
            *_cpu_cells(baseline.cpu, baseline.cpu.bench_cores),
        ])


def _print_ceilings(results: Results) -> None:
    if results.ceilings:
        print(
            f"ceilings: bare loops (POST threads a process: "
            f"{_workers(results.settings)})"
        )
    for ceiling in results.ceilings:
        _print_row([
            ceiling.name,
            "",
            _number(ceiling.records_per_second),
            *[""] * 7,
            *_cpu_cells(ceiling.cpu, ceiling.cpu.bench_cores),
        ])


def _print_not_run(results: Results) -> None:
    for name, reason in results.not_run.items():
        print(f"  not run: {name}: {reason}")


def _print_disturbance(results: Results) -> None:
    rows = [
        *((c.name, c.cpu) for c in results.bridge_cases),
        *((b.name, b.cpu) for b in results.baselines),
        *((c.name, c.cpu) for c in results.ceilings),
    ]
    disturbed = [
        name for name, cpu in rows
        if (cpu.others_cores or 0.0) > DISTURBED_AT_CORES
    ]
    if disturbed:
        print(
            f"\nother programs took more than {DISTURBED_AT_CORES:g} of a "
            f"core during {', '.join(disturbed)}: those figures are low and "
            f"uneven; run again on a quieter machine"
        )


def _case_label(name: str, processes: str, count: int) -> str:
    if processes == PROCESS_PER_CPU:
        return f"{name} ({count})"
    return name


def _cpu_cells(cpu: CpuFigures, own_cores: float | None) -> list[str]:
    return [
        _percent(own_cores),
        _percent(cpu.sink_cores),
        _percent(cpu.broker_cores),
        _percent(cpu.others_cores),
    ]


def _percent(cores: float | None) -> str:
    return "-" if cores is None else f"{cores * 100:.0f}"


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _digits(bound: float) -> int:
    return 0 if bound >= 100 else 1 if bound >= 1 else 2


def _print_row(cells: Sequence[str]) -> None:
    first, *rest = cells
    line = f"{first:<{_WIDTHS[0]}}" + "".join(
        f"{cell:>{width}}" for cell, width in zip(rest, _WIDTHS[1:], strict=True)
    )
    print(line.rstrip())


def _workers(settings: dict[str, Any]) -> str:
    workers = settings["workers"]
    if isinstance(workers, dict):
        return ", ".join(
            f"{count} ({sink} sink)" for sink, count in workers.items()
        )
    return str(workers)
