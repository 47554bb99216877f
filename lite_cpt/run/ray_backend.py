"""Ray backend: each (recipe, seed, arm) unit runs as one Ray task. The only module importing Ray.

    units ──► one base-row task per run directory (row 0, computed once per recipe and seed)
          └─► one task per unit, after its run's base row; one GPU each (one CPU slot on a
              CPU-only cluster); a task whose worker died is retried and resumes from the
              arm directory
          └─► when every unit has ended: one report task per run directory

Workers write into the run directories themselves, so every machine of a cluster must see
them (and the datasets and model weights) at the same path: a shared file system, or one
machine. Progress goes from the workers to the driver through a small Ray actor, a line at a time.

Without an address, lite-cpt starts a local cluster over this machine's GPUs (or CPU slots)
that listens on the loopback interface only, with the dashboard and usage statistics off: an
open Ray endpoint runs any code it is sent.
"""

from __future__ import annotations

import io
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lite_cpt.errors import UserError
from lite_cpt.run.units import Unit, run_groups, seed_groups

LOOPBACK = "127.0.0.1"
# Read by Ray when it starts its processes: without the first, Ray binds every interface and
# advertises the machine's address instead of 127.0.0.1.
LOCAL_CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
DEFAULT_RETRIES = 3


@dataclass(frozen=True)
class UnitEvent:
    """One message from a worker: `kind` is start, line, done or skipped."""

    label: str
    kind: str
    text: str = ""
    pid: int = 0
    host: str = ""


@dataclass
class UnitOutcome:
    unit: Unit
    ok: bool
    attempts: int
    error: str = ""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'lite-cpt[ray]' (or pip install 'ray>=2.40')") from None
    return ray


def connect(address: str | None, workers: int | None = None) -> bool:
    """Join the cluster at `address`, or start a loopback-only local one (`workers` CPU slots,
    this machine's GPUs); returns whether a local cluster was started."""
    if address is None:
        keep_local_cluster_on_loopback()
    ray = _import_ray()
    if address is None:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, _node_ip_address=LOOPBACK,
                 configure_logging=False)
        return True
    try:
        ray.init(address=address, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot connect to the Ray cluster at {address!r}: {error}. Check the address "
                        "(`ray status` on the head node prints it); a cluster started with `ray start` "
                        "needs RAY_AUTH_MODE=token and its token here") from None
    return False


def keep_local_cluster_on_loopback() -> None:
    """Set Ray's loopback switches; Ray reads the first when it is imported, so a Ray imported
    earlier without it would bind every interface: refuse to start a cluster then."""
    os.environ.update(LOCAL_CLUSTER_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        raise UserError("Ray was imported before lite-cpt could keep a local cluster on the loopback "
                        "interface; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray, "
                        "or give the address of a running cluster")


def unit_resources() -> dict:
    """One GPU per unit where the cluster has GPUs, else one CPU slot."""
    ray = _import_ray()
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": 1}


class EventBox:
    """Run as a Ray actor: workers post UnitEvents without waiting, the driver drains them.

    Posting never blocks a worker (a blocking `ray.get` inside a task lends its CPU slot to
    another task, which would run more units at once than there are slots); calls from one
    worker reach the actor in order, so a unit's lines stay in order."""

    def __init__(self):
        self._events: list[UnitEvent] = []

    def post(self, event: UnitEvent) -> None:
        self._events.append(event)

    def drain(self) -> list[UnitEvent]:
        events, self._events = self._events, []
        return events


class _EventLines(io.TextIOBase):
    """A text stream that sends each complete line to the driver as a UnitEvent."""

    def __init__(self, send: Callable[..., object]):
        self._send, self._buffer = send, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            if line.strip():
                self._send("line", line.rstrip())
        return len(text)


def _sender(box, label: str) -> Callable[..., object]:
    pid, host = os.getpid(), socket.gethostname()
    return lambda kind, text="": box.post.remote(UnitEvent(label, kind, text, pid, host))


def _worker_console(send):
    from rich.console import Console

    return Console(file=_EventLines(send), width=120, color_system=None, force_terminal=False)


def _base_row_task(unit: Unit, box) -> str:
    """Row 0 of the unit's seed (and the tiny base, if the recipe uses it)."""
    import ray

    from lite_cpt.run.units import compute_base_row

    send = _sender(box, unit.label.rsplit("/", 1)[0] + "/base")
    send("start", "base row")
    compute_base_row(unit, console=_worker_console(send))
    ray.get(send("done"))  # every event of the task has reached the box when it returns
    return str(unit.seed_dir)


def _unit_task(unit: Unit, box, _base_row_ready: str) -> str:
    """Train one unit; `_base_row_ready` is the base task's result, which Ray waits for."""
    import ray

    from lite_cpt.run.units import run_unit, unit_finished

    send = _sender(box, unit.label)
    if unit_finished(unit):
        ray.get(send("skipped", "finished earlier"))
        return unit.label
    send("start")
    run_unit(unit, console=_worker_console(send))
    ray.get(send("done"))
    return unit.label


def _report_task(run_dir: str) -> str:
    from lite_cpt.results.report import write_report

    return str(write_report(Path(run_dir)))


def run_on_ray(units: list[Unit], address: str | None = None, *, workers: int | None = None,
               retries: int = DEFAULT_RETRIES, on_event: Callable[[UnitEvent], None] | None = None
               ) -> list[UnitOutcome]:
    """Run every unit as a Ray task, stream their events to `on_event`, write each run's report
    when all its units have ended; returns one outcome per unit (a failed unit does not stop
    the others). Uses the cluster this process is already connected to, if any; otherwise
    connects (or starts a local cluster) and shuts that down at the end."""
    already = sys.modules.get("ray")
    if address is None and (already is None or not already.is_initialized()):
        keep_local_cluster_on_loopback()  # before Ray is imported: it reads the switch then
    ray = _import_ray()
    if ray.is_initialized():
        return _schedule(ray, units, retries, on_event or (lambda event: None))
    connect(address, workers)
    try:
        return _schedule(ray, units, retries, on_event or (lambda event: None))
    finally:
        ray.shutdown()


def _schedule(ray, units: list[Unit], retries: int, on_event) -> list[UnitOutcome]:
    box = ray.remote(num_cpus=0)(EventBox).remote()
    resources = unit_resources()
    base_task = ray.remote(_base_row_task).options(max_retries=retries, **resources)
    unit_task = ray.remote(_unit_task).options(max_retries=retries, **resources)
    pending = {}
    for group in seed_groups(units):
        base_ref = base_task.remote(group[0], box)
        pending.update({unit_task.remote(unit, box, base_ref): unit for unit in group})
    starts: dict[str, int] = {}
    outcomes = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        _drain(ray, box, starts, on_event)
        for ref in ready:
            unit = pending.pop(ref)
            outcomes.append(_outcome(ray, ref, unit, starts))
    _drain(ray, box, starts, on_event)
    report_task = ray.remote(_report_task).options(num_cpus=1, max_retries=retries)
    for report in ray.get([report_task.remote(str(group[0].run_dir)) for group in run_groups(units)]):
        on_event(UnitEvent("report", "done", report))
    return sorted(outcomes, key=lambda outcome: units.index(outcome.unit))


def _drain(ray, box, starts: dict[str, int], on_event) -> None:
    for event in ray.get(box.drain.remote()):
        if event.kind == "start":
            starts[event.label] = starts.get(event.label, 0) + 1
            if starts[event.label] > 1:
                event = UnitEvent(event.label, "retry", f"attempt {starts[event.label]}: a worker died; "
                                  "resuming from the arm directory", event.pid, event.host)
        on_event(event)


def _outcome(ray, ref, unit: Unit, starts: dict[str, int]) -> UnitOutcome:
    attempts = max(starts.get(unit.label, 0), 1)
    try:
        ray.get(ref)
    except ray.exceptions.RayError as error:
        cause = getattr(error, "cause", None) or error
        return UnitOutcome(unit, False, attempts, f"{type(cause).__name__}: {cause}".splitlines()[0])
    return UnitOutcome(unit, True, attempts)

