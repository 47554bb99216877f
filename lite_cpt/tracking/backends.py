"""One backend per tracker, each the library's own client, imported only when enabled.

A backend is opened for one unit (`lite_cpt.tracking.scalars.Unit`), records the recipe, receives
`backfill(entries)` once (everything on disk so far: it writes what its store lacks), then
`log(entry)` per record, and `close(status)` with "finished", "preempted" or "failed".
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lite_cpt.errors import UserError
from lite_cpt.tracking.scalars import Entry, Unit

#: Key groups W&B charts against the `train_step` field (its own step counts records).
WANDB_GROUPS = ("train", "matrix", "accuracy", "general", "seconds", "task_end")
#: MLflow's log_batch limits: 1000 metrics, 100 params per call.
_MLFLOW_METRICS_PER_CALL, _MLFLOW_PARAMS_PER_CALL = 1000, 100
_MLFLOW_STATUS = {"finished": "FINISHED", "preempted": "KILLED", "failed": "FAILED"}
_WANDB_EXIT = {"finished": 0, "preempted": 75, "failed": 1}
#: One MLflow client per tracking URI and process: opening a SQLite store checks (and on first
#: use creates) its schema, seconds that every seed and arm of a process would otherwise repeat.
_MLFLOW_CLIENTS: dict[str, object] = {}


def open_backends(unit: Unit) -> list:
    config, backends = unit.recipe.logging, []
    if config.tensorboard:
        backends.append(TensorBoardBackend(unit))
    if config.wandb:
        backends.append(WandbBackend(unit))
    if config.mlflow:
        backends.append(MlflowBackend(unit))
    return backends


def recipe_params(unit: Unit) -> dict[str, str]:
    """The resolved recipe as flat `a.b.c` parameters (lists of named sections keyed by name, as
    `lite-cpt compare` names them), with the unit's name, seed and arm."""
    from lite_cpt.results.compare import flatten_recipe

    flat = flatten_recipe(unit.recipe.model_dump(mode="json"))
    flat.update(name=unit.recipe.name, seed=unit.seed, arm=unit.arm)
    # MLflow names take alphanumerics and _-. :/ only: `tasks[order]` becomes `tasks:order`
    return {key.replace("[order]", ":order"): value if isinstance(value, str) else json.dumps(value)
            for key, value in flat.items()}


def tracker_module(setting: str, module: str, package: str):
    """The tracker's client module, or one message naming the extra that installs it and the
    recipe switch that turns the tracker off."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"logging.{setting} needs the {package} package: pip install -e '.[tracking]' "
                        f"(or set logging.{setting}=false)") from exc


class TensorBoardBackend:
    def __init__(self, unit: Unit):
        SummaryWriter = tracker_module("tensorboard", "torch.utils.tensorboard", "tensorboard").SummaryWriter
        self._make, self._unit, self._writer = SummaryWriter, unit, None
        self.log_dir = unit.run_dir / "tensorboard" / f"seed_{unit.seed}" / unit.arm
        self._earlier = any(self.log_dir.glob("events.out.tfevents.*"))

    def backfill(self, entries: list[Entry]) -> None:
        # An earlier process may have written past the last record on disk (cut back to its
        # checkpoint) or stopped before writing it: hide what it wrote from that record's step
        # on (TensorBoard drops events at or past `purge_step` when it reads the directory) and
        # write that step again.
        purge = (entries[-1].train_step if entries else 0) if self._earlier else None
        self._writer = self._make(log_dir=str(self.log_dir), purge_step=purge)
        if not purge:  # step 0 is (re)written: the recipe with it
            self._write_recipe()
        for entry in entries:
            if purge is None or entry.train_step >= purge:
                self._add(entry)
        self._writer.flush()

    def _write_recipe(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        from lite_cpt.recipe import recipe_to_yaml

        self._writer.add_text("recipe", "```yaml\n" + recipe_to_yaml(self._unit.recipe) + "```", global_step=0)
        for summary in hparams(recipe_params(self._unit), {}):  # the HParams tab's columns
            self._writer.file_writer.add_summary(summary, global_step=0)

    def _add(self, entry: Entry) -> None:
        for tag, value in entry.scalars.items():
            self._writer.add_scalar(tag, value, global_step=entry.train_step)

    def log(self, entry: Entry) -> None:
        self._add(entry)
        self._writer.flush()

    def close(self, status: str) -> None:
        self._writer.close()


class WandbBackend:
    def __init__(self, unit: Unit):
        wandb = tracker_module("wandb", "wandb", "wandb")
        from lite_cpt.tracking.wandb_files import history_rows, run_files

        config = unit.recipe.logging
        run_id = unit.state["wandb_run_id"]  # chosen and saved by the tracker
        # rows an earlier process of this unit wrote durably (a killed one loses its unflushed tail)
        self._written = {row.get("_step") for path in run_files(unit.run_dir / "wandb", run_id)
                         for row in history_rows(path)}
        self._run = wandb.init(
            project=config.wandb_project, name=unit.name, group=unit.recipe.name, job_type=unit.arm,
            config={**unit.recipe.model_dump(mode="json"), "seed": unit.seed, "arm": unit.arm},
            mode=config.wandb_mode, dir=str(unit.run_dir), id=run_id, resume="allow", reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"))
        self._run.define_metric("train_step")
        self._run.define_metric("task")
        for group in WANDB_GROUPS:
            self._run.define_metric(f"{group}/*", step_metric="train_step")

    def backfill(self, entries: list[Entry]) -> None:
        for entry in entries:
            self.log(entry)

    def log(self, entry: Entry) -> None:
        if entry.index in self._written:
            return
        self._run.log({**entry.scalars, "train_step": entry.train_step}, step=entry.index)
        self._written.add(entry.index)

    def close(self, status: str) -> None:
        if status == "preempted":
            self._run.mark_preempting()
        self._run.finish(exit_code=_WANDB_EXIT[status])


class MlflowBackend:
    def __init__(self, unit: Unit):
        tracker_module("mlflow", "mlflow", "mlflow")
        self._unit = unit
        given = unit.recipe.logging.mlflow_tracking_uri
        # a local SQLite store by default (MLflow 3 keeps its file store in maintenance mode)
        self._client = _mlflow_client(given or f"sqlite:///{(unit.run_dir / 'mlflow.db').resolve()}",
                                      unit.run_dir)
        self._run_id = self._existing_run() or self._new_run(local=given is None)
        unit.state["mlflow_run_id"] = self._run_id
        self._logged = self._logged_pairs()

    def _existing_run(self) -> str | None:
        """The unit's run: the id in tracking.json, or one tagged with the unit (a process killed
        between creating the run and saving its id)."""
        from mlflow.exceptions import MlflowException

        run_id = self._unit.state.get("mlflow_run_id")
        try:
            if run_id and self._client.get_run(run_id).info.lifecycle_stage == "active":
                self._client.update_run(run_id, status="RUNNING")
                return run_id
        except MlflowException:
            pass
        experiment = self._client.get_experiment_by_name(self._unit.recipe.name)
        if experiment is None:
            return None
        found = self._client.search_runs([experiment.experiment_id], f"tags.`lite_cpt.unit` = '{self._unit.name}'")
        if found:
            self._client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        return None

    def _new_run(self, local: bool) -> str:
        from mlflow.entities import Param

        client, unit = self._client, self._unit
        experiment = client.get_experiment_by_name(unit.recipe.name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # artifacts beside the store, in the run directory (not <cwd>/mlruns)
            location = (unit.run_dir / "mlflow-artifacts").resolve().as_uri() if local else None
            experiment_id = client.create_experiment(unit.recipe.name, artifact_location=location)
        run_id = client.create_run(experiment_id, run_name=unit.name,
                                   tags={"lite_cpt.unit": unit.name, "lite_cpt.arm": unit.arm}).info.run_id
        params = [Param(key, value[:6000]) for key, value in recipe_params(unit).items()]
        for start in range(0, len(params), _MLFLOW_PARAMS_PER_CALL):
            client.log_batch(run_id, params=params[start:start + _MLFLOW_PARAMS_PER_CALL])
        if (unit.run_dir / "recipe.yaml").exists():
            client.log_artifact(run_id, str(unit.run_dir / "recipe.yaml"))
        return run_id

    def _logged_pairs(self) -> set[tuple[str, int]]:
        """(key, step) pairs the store already holds for the run (written before a stop)."""
        keys = self._client.get_run(self._run_id).data.metrics
        return {(key, m.step) for key in keys for m in self._client.get_metric_history(self._run_id, key)}

    def backfill(self, entries: list[Entry]) -> None:
        self._send(entries)

    def log(self, entry: Entry) -> None:
        self._send([entry])

    def _send(self, entries: list[Entry]) -> None:
        from mlflow.entities import Metric

        now, metrics = int(time.time() * 1000), []
        for entry in entries:
            for key, value in entry.scalars.items():
                if (key, entry.train_step) not in self._logged:
                    self._logged.add((key, entry.train_step))
                    metrics.append(Metric(key, value, now, entry.train_step))
        for start in range(0, len(metrics), _MLFLOW_METRICS_PER_CALL):  # one transaction per call
            self._client.log_batch(self._run_id, metrics=metrics[start:start + _MLFLOW_METRICS_PER_CALL])

    def close(self, status: str) -> None:
        self._client.set_terminated(self._run_id, _MLFLOW_STATUS[status])


def _mlflow_client(uri: str, run_dir: Path):
    if uri not in _MLFLOW_CLIENTS:
        from mlflow import MlflowClient

        run_dir.mkdir(parents=True, exist_ok=True)
        _MLFLOW_CLIENTS[uri] = MlflowClient(tracking_uri=uri)
    return _MLFLOW_CLIENTS[uri]
