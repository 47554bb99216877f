"""Units on a local 2-worker Ray cluster (loopback only) give the serial run's matrices, and a
unit whose worker is killed mid-unit is retried and resumes to the same result."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lite_cpt.run import ray_backend

# Ray reads its loopback switch when imported: set it first, as `lite-cpt ... --ray` does.
os.environ.update(ray_backend.LOCAL_CLUSTER_ENV)
import ray  # noqa: E402  (the dev extra installs it, so these tests run in CI)

from lite_cpt.run.continual import run_recipe  # noqa: E402
from lite_cpt.recipe import recipe_from_dict  # noqa: E402
from lite_cpt.run.units import plan_units  # noqa: E402
from lite_cpt.cli import app  # noqa: E402
from tests.helpers import tiny_recipe, write_recipe  # noqa: E402

ARMS = [{"name": "sft", "lr": 5e-3, "batch_size": 8}, {"name": "multitask_sft", "lr": 5e-3, "batch_size": 8}]
TASKS = ("mini_clevr", "mini_geometry")


def reduced_raw(tmp_path: Path, name: str) -> dict:
    return tiny_recipe(tmp_path, arms=ARMS, tasks=TASKS, name=name, seeds=[0, 1])


def reduced_recipe(tmp_path: Path, name: str):
    return recipe_from_dict(reduced_raw(tmp_path, name))


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def max_in_flight(events) -> int:
    """Most units started and not yet done at one point of the event stream."""
    running, most = set(), 0
    for event in events:
        if event.label.endswith("/base"):
            continue
        if event.kind == "start":
            running.add(event.label)
        elif event.kind == "done":
            running.discard(event.label)
        most = max(most, len(running))
    return most


def arm_files(run_dir: Path, arm: str, seed: int = 0) -> tuple[dict, dict]:
    arm_dir = run_dir / f"seed_{seed}" / arm
    return (json.loads((arm_dir / "matrix.json").read_text()), json.loads((arm_dir / "general.json").read_text()))


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory) -> Path:
    """The reduced recipe run serially in this process; its recipe file is saved beside it."""
    tmp_path = tmp_path_factory.mktemp("serial")
    write_recipe(tmp_path / "serial.yaml", reduced_raw(tmp_path, "serial"))
    return run_recipe(reduced_recipe(tmp_path, "serial"))


@pytest.fixture(scope="module")
def local_cluster():
    """One loopback-only local cluster of 2 CPU slots for the module (starting one is slow)."""
    started = ray_backend.connect(None, workers=2)
    assert started
    yield
    ray.shutdown()


def test_local_cluster_listens_on_loopback_only(local_cluster):
    psutil = pytest.importorskip("psutil")
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert ray.cluster_resources()["CPU"] == 2
    ours = {child.pid for child in psutil.Process().children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in ours]
    assert listening, "the cluster's processes should be listening somewhere"
    assert all(is_loopback(c.laddr.ip) for c in listening), listening


def test_ray_sweep_gives_the_serial_matrices_and_one_base_row_per_seed(local_cluster, serial_run, tmp_path):
    recipe = reduced_recipe(tmp_path, "ray")
    events = []
    outcomes = ray_backend.run_on_ray(plan_units([recipe]), on_event=events.append)

    assert [(o.unit.label, o.ok, o.attempts) for o in outcomes] == [
        (f"ray/seed {seed}/{arm}", True, 1) for seed in (0, 1) for arm in ("sft", "multitask_sft")]
    for seed in (0, 1):
        for arm in ("sft", "multitask_sft"):
            assert arm_files(recipe.run_dir, arm, seed) == arm_files(serial_run, arm, seed)
    # Row 0 once per seed, by the base task; the units only read it.
    assert sorted(e.label for e in events if e.kind == "start" and e.label.endswith("/base")) == [
        "ray/seed 0/base", "ray/seed 1/base"]
    assert any(e.kind == "line" and e.label == "ray/seed 1/sft" and "sft · geometry" in e.text for e in events)
    # Units were in flight at once on the two slots, and the report covers both seeds.
    assert max_in_flight(events) >= 2
    summary = json.loads((recipe.run_dir / "summary.json").read_text())
    assert "seed" in json.dumps(summary)
    assert (recipe.run_dir / "report.md").exists()


def unit_worker() -> "psutil.Process | None":
    """The Ray worker process running a unit: Ray titles a busy worker after its task."""
    import psutil

    for process in psutil.Process().children(recursive=True):
        try:
            if "ray::_unit_task" in " ".join(process.cmdline()):
                return process
        except psutil.Error:
            continue
    return None


def kill_when_task_saved(matrix_path: Path, task: int, killed: list, give_up: threading.Event) -> None:
    """Stop the unit's worker the moment matrix.json holds `task`'s row (task `task` saved, the
    next one starting), check it is still there, then SIGKILL it: polled every few
    milliseconds, against a next task that takes about a second, so the kill lands in it."""
    while not give_up.is_set():
        rows = (json.loads(matrix_path.read_text()).get("R") or []) if matrix_path.exists() else []
        worker = unit_worker() if len(rows) > task else None
        if worker is not None:
            worker.suspend()
            killed.append((worker.pid, len(json.loads(matrix_path.read_text())["R"])))
            worker.kill()
            return
        time.sleep(0.005)


def test_killed_worker_is_retried_and_resumes_to_the_same_result(local_cluster, serial_run, tmp_path):
    pytest.importorskip("psutil")
    recipe = recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS[:1], tasks=TASKS, name="killed"))  # seed 0
    events, killed, give_up = [], [], threading.Event()
    # SIGKILL from outside, while the unit trains task 2 (task 1 saved).
    killer = threading.Thread(target=kill_when_task_saved, daemon=True,
                              args=(recipe.run_dir / "seed_0" / "sft" / "matrix.json", 1, killed, give_up))
    killer.start()
    try:
        [outcome] = ray_backend.run_on_ray(plan_units([recipe]), on_event=events.append)
    finally:
        give_up.set()
        killer.join()

    assert killed and killed[0][1] == 2, f"not killed in task 2: {killed}"  # base row + task 1
    killed_pid = killed[0][0]
    assert outcome.ok and outcome.attempts == 2
    retry = [e for e in events if e.kind == "retry"]
    assert len(retry) == 1 and retry[0].pid != killed_pid
    assert any(e.kind == "start" and e.pid == killed_pid for e in events)
    assert any(e.kind == "line" and e.pid == retry[0].pid and "resuming after task 1" in e.text for e in events)
    assert arm_files(recipe.run_dir, "sft") == arm_files(serial_run, "sft")
    task_ends = [json.loads(line) for line in (recipe.run_dir / "seed_0" / "sft" / "metrics.jsonl").read_text().splitlines()
                 if '"task_end"' in line]
    assert [r["task_index"] for r in task_ends] == [1, 2]


def test_a_failing_unit_fails_alone_without_retries(local_cluster, serial_run, tmp_path):
    recipe = recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS, tasks=TASKS, name="failing"))
    # sft finished earlier (copied from the serial run, base row too); multitask_sft cannot
    # even create its arm directory: it raises, is not retried, and sft is still reported.
    shutil.copytree(serial_run / "seed_0" / "sft", recipe.run_dir / "seed_0" / "sft")
    shutil.copy(serial_run / "seed_0" / "base_scores.json", recipe.run_dir / "seed_0" / "base_scores.json")
    (recipe.run_dir / "seed_0" / "multitask_sft").write_text("not a directory")
    events = []
    outcomes = ray_backend.run_on_ray(plan_units([recipe]), on_event=events.append)
    assert [(o.unit.arm, o.ok, o.attempts) for o in outcomes] == [("sft", True, 1), ("multitask_sft", False, 1)]
    assert "FileExistsError" in outcomes[1].error or "NotADirectoryError" in outcomes[1].error, outcomes[1].error
    assert [e.kind for e in events if e.label == "failing/seed 0/sft"] == ["skipped"]
    assert "sft" in (recipe.run_dir / "report.md").read_text()


def test_run_ray_command_streams_progress_and_skips_finished_units(local_cluster, serial_run):
    # The serial run is finished: through the CLI, every unit is skipped and the report rewritten.
    (serial_run / "report.md").unlink()
    result = CliRunner().invoke(app, ["run", str(serial_run.parent.parent / "serial.yaml"), "--ray", "--arm", "sft"])
    assert result.exit_code == 0, result.output
    assert "serial/seed 0/sft finished earlier" in result.output
    assert "serial/seed 1/sft finished earlier" in result.output
    assert "2 of 2 unit(s) done" in result.output
    assert (serial_run / "report.md").exists()
