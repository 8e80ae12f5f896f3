"""MLflow runs of ``colearn-train``: one parent run with system metrics, one child run per job.

Inside ``kedro run`` the project's hooks own MLflow; this is for training outside it
(``make paper``), where every (net, seed) job gets its own run with its own parameters and
per-epoch metrics, under a parent run that records system metrics (CPU, memory and, where
``nvidia-ml-py`` is installed, GPU utilisation and memory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from colearn_pipeline.training.config import TrainConfig

logger = logging.getLogger(__name__)


class JobTracker:
    """Per-epoch metrics of one job into its MLflow run (an ``on_epoch_end`` callback)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def __call__(self, row: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(k, float(v), now, step) for k, v in row.items() if k != "epoch" and v == v]
        self.client.log_batch(self.run_id, metrics=metrics)


@contextlib.contextmanager
def job_runs(tracking_uri: str, experiment: str, jobs: Sequence[tuple[str, int]], model_kwargs: Mapping[str, Any],
             config: TrainConfig, run_name: str = "colearn-train") -> Iterator[list[JobTracker]]:
    """Open a parent run (system metrics on) and a child run per ``(net, seed)`` job.

    Yields one :class:`JobTracker` per job; on exit every run ends FINISHED, or FAILED (KILLED
    for a keyboard interrupt) when the block raised, so none is left RUNNING.
    """
    import mlflow
    from mlflow.entities import Param

    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = mlflow.MlflowClient(tracking_uri)
    training = {f"training.{k}": v for k, v in dataclasses.asdict(config).items() if k != "seed"}
    status = "FINISHED"
    with mlflow.start_run(run_name=run_name, log_system_metrics=True) as parent:
        children = []
        for net, seed in jobs:
            child = client.create_run(experiment_id, run_name=f"{net}-seed{seed}",
                                      tags={"mlflow.parentRunId": parent.info.run_id, "net": net})
            params = {"net": net, "training.seed": seed, **{f"model.{k}": v for k, v in model_kwargs.items()},
                      **training}
            client.log_batch(child.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
            children.append(child.info.run_id)
        try:
            yield [JobTracker(client, run_id) for run_id in children]
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            for run_id in children:
                client.set_terminated(run_id, status)
            if status != "FINISHED":
                mlflow.end_run(status)
