"""Experiment tracking: one interface, a backend per tracker, none required.

Every record the continual loop writes to `<arm>/metrics.jsonl` (a training step, or the
"task_end" record with the phase's cost and the new matrix row) also goes to the trackers a
recipe enables under `logging:`:

    logging: {tensorboard: true}          # <run>/tensorboard/seed_<k>/<arm>/events.out.tfevents.*
    logging: {wandb: true}                # offline by default: <run>/wandb/, `wandb sync` later
    logging: {mlflow: true}               # a local SQLite store <run>/mlflow.db unless a URI is given

Numeric fields become scalars: a step record's under `train/<key>` at the arm's running step
count, a task_end record's under `task_end/<key>` at its task index. Each backend is the
library's own client, imported only when enabled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from lite_cpt.errors import UserError


class MetricLogger(Protocol):
    """Where one (seed, arm)'s scalars go."""

    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def scalars_of(record: dict) -> tuple[str, dict[str, float]]:
    """('train' | 'task_end', {key: value}) for the numeric, non-bookkeeping fields of a record."""
    group = "task_end" if record.get("event") == "task_end" else "train"
    skip = {"event", "task_index", "step"}
    scalars = {f"{group}/{key}": float(value) for key, value in record.items()
               if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool)}
    return group, scalars


class TensorBoardLogger:
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise UserError("logging.tensorboard needs the tensorboard package: pip install -e '.[tracking]' "
                            "(or set logging.tensorboard=false)") from exc
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbLogger:
    def __init__(self, run_dir: Path, name: str, group: str, config: dict, project: str, mode: str):
        try:
            import wandb
        except ImportError as exc:
            raise UserError("logging.wandb needs the wandb package: pip install wandb "
                            "(or set logging.wandb=false)") from exc
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, name=name, group=group, config=config, mode=mode,
                               dir=str(run_dir), reinit="create_new")

    def log(self, scalars: dict[str, float], step: int) -> None:
        self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()


class MlflowLogger:
    def __init__(self, run_dir: Path, name: str, experiment: str, tracking_uri: str | None):
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            raise UserError("logging.mlflow needs the mlflow package: pip install mlflow "
                            "(or set logging.mlflow=false)") from exc
        # a local SQLite store by default: MLflow 3 keeps its file store in maintenance mode
        uri = tracking_uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=uri)
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        self._run_id = self._client.create_run(experiment_id, run_name=name).info.run_id

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self._client.log_metric(self._run_id, key, value, step=step)

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


class RunTracker:
    """Fans a (seed, arm)'s records out to the enabled trackers, opening them on first use."""

    def __init__(self, recipe, run_dir: Path, seed: int):
        self.recipe, self.run_dir, self.seed = recipe, Path(run_dir), seed
        self._loggers: dict[str, list[MetricLogger]] = {}
        self._steps: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        config = self.recipe.logging
        return config.tensorboard or config.wandb or config.mlflow

    def log(self, arm: str, record: dict, metrics_path: Path | None = None) -> None:
        """Send one record; call it before the record is appended to `metrics_path`."""
        if not self.enabled:
            return
        if arm not in self._loggers:
            self._loggers[arm] = self._open(arm)
            self._steps[arm] = _logged_steps(metrics_path)
        group, scalars = scalars_of(record)
        if group == "train":
            self._steps[arm] += 1
            step = self._steps[arm]
        else:
            step = int(record.get("task_index", 0))
        for logger in self._loggers[arm]:
            logger.log(scalars, step)

    def _open(self, arm: str) -> list[MetricLogger]:
        config, name = self.recipe.logging, f"{self.recipe.name}/seed_{self.seed}/{arm}"
        loggers: list[MetricLogger] = []
        if config.tensorboard:
            loggers.append(TensorBoardLogger(self.run_dir / "tensorboard" / f"seed_{self.seed}" / arm))
        if config.wandb:
            loggers.append(WandbLogger(self.run_dir, name, self.recipe.name, self.recipe.model_dump(mode="json"),
                                       config.wandb_project, config.wandb_mode))
        if config.mlflow:
            loggers.append(MlflowLogger(self.run_dir, name, self.recipe.name, config.mlflow_tracking_uri))
        return loggers

    def close(self) -> None:
        for loggers in self._loggers.values():
            for logger in loggers:
                logger.close()
        self._loggers.clear()


def _logged_steps(metrics_path: Path | None) -> int:
    """Step records already in metrics.jsonl: a resumed run continues the count."""
    if metrics_path is None or not metrics_path.exists():
        return 0
    count = 0
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            count += json.loads(line).get("event") == "step"
        except (json.JSONDecodeError, AttributeError):
            continue
    return count
