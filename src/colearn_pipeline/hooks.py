"""MLflow tracking through plain Kedro hooks (no kedro-mlflow).

One MLflow run per ``kedro run``; a nested run per namespace (``colearn``, ``tb``, ...,
``validate.colearn``, ...). What is logged:

- parent run: every parameter (flattened, ``training.learning_rate``), tags (Kedro session id,
  env, pipelines), the split, Table II (Markdown and CSV), the per-slice metrics, the figures,
  the validation table;
- nested run of a net: per-epoch training (and validation) metrics, test metrics (the Table II
  means and SDs), the training history CSV, its training-curve figure, the model bundle file
  (state dict) and an MLflow PyTorch model with an input example.

Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else ``params:mlflow.tracking_uri``, else
``sqlite:///<project>/mlflow.db``. Artifacts of a new experiment on a SQLite store go to
``mlartifacts/`` beside the database file. A dataset whose catalog entry has
``metadata: {private: true}`` is never logged. ``mlflow.enabled: false`` (or ``COLEARN_MLFLOW=0``)
turns the hooks off.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

#: MLflow's limit on one parameter value.
_MAX_PARAM_LENGTH = 6000


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested parameters into ``{"a.b.c": "value"}`` strings for ``mlflow.log_params``."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = str(value)
            out[name] = text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."
    return out


def private_datasets(catalog) -> set[str]:
    """Datasets never logged to MLflow: ``metadata: {private: true}`` in the catalog (e.g. the
    pseudonym and file-label maps, which hold identifiers and live in conf/local only)."""
    names: set[str] = set()
    for name in catalog.keys() if hasattr(catalog, "keys") else []:
        try:
            metadata = getattr(catalog.get(name), "metadata", None) or {}
        except Exception:  # noqa: BLE001 - a dataset that cannot be built is not logged by us either
            continue
        if metadata.get("private"):
            names.add(name)
    return names


def resolve_tracking_uri(configured: str | None, project_path: str | os.PathLike) -> str:
    """``$MLFLOW_TRACKING_URI`` > configured value > ``sqlite:///<project>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if configured:
        return str(configured)
    return f"sqlite:///{Path(project_path).resolve() / 'mlflow.db'}"


def _artifact_root_for(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


class MlflowHooks:
    """Kedro hooks that track a ``kedro run`` in MLflow (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self.enabled = False
        self.parent_run_id: str | None = None
        self.child_runs: dict[str, str] = {}
        self._opened_for_node: dict[str, bool] = {}
        self._settings: dict[str, Any] = {}
        self._client = None
        self.tracking_uri: str | None = None
        self._private: set[str] = set()

    # -- pipeline --------------------------------------------------------------------------
    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Start the parent run and log every parameter."""
        self._reset()
        try:
            params = catalog.load("parameters")
        except Exception:  # noqa: BLE001 - a catalog without parameters
            params = {}
        settings = dict(params.get("mlflow") or {})
        if not settings.get("enabled", True) or os.environ.get("COLEARN_MLFLOW", "1") == "0":
            return
        import mlflow
        from mlflow import MlflowClient

        project_path = run_params.get("project_path") or os.getcwd()
        self.tracking_uri = resolve_tracking_uri(settings.get("tracking_uri"), project_path)
        mlflow.set_tracking_uri(self.tracking_uri)
        name = settings.get("experiment_name", "colearn-pipeline")
        client = MlflowClient(self.tracking_uri)
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name, artifact_location=settings.get("artifact_location")
                                     or _artifact_root_for(self.tracking_uri))
        mlflow.set_experiment(name)
        while mlflow.active_run() is not None:  # a run left open by an earlier failure in this process
            mlflow.end_run()
        names = run_params.get("pipeline_names") or ["__default__"]
        run = mlflow.start_run(
            run_name=f"kedro {'+'.join(names)} ({run_params.get('env') or 'local'})",
            tags={
                "kedro.session_id": str(run_params.get("session_id", "")),
                "kedro.run_id": str(run_params.get("run_id", "")),
                "kedro.env": str(run_params.get("env") or "local"),
                "kedro.pipelines": ",".join(names),
                "kedro.namespaces": ",".join(run_params.get("namespaces") or []),
            },
        )
        self.parent_run_id = run.info.run_id
        self._private = private_datasets(catalog)
        self._client = client
        self._settings = settings
        self.enabled = True
        flat = flatten_params(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i : i + 100]))
        logger.info("MLflow run %s in %s", self.parent_run_id, self.tracking_uri)

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        """Finish every run started by this hook."""
        self._finish("FINISHED")

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        """Mark the runs failed."""
        self._finish("FAILED")

    def _finish(self, status: str) -> None:
        if not self.enabled:
            return
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run(status=status)
        for run_id in self.child_runs.values():
            self._client.set_terminated(run_id, status=status)
        self._client.set_terminated(self.parent_run_id, status=status)
        uri = self.tracking_uri
        logger.info(
            "MLflow: run %s (%s); open the UI with: mlflow ui --backend-store-uri %s",
            self.parent_run_id, status, uri,
        )
        self.enabled = False

    # -- nested runs -----------------------------------------------------------------------
    def _child(self, namespace: str) -> str:
        with self._lock:
            if namespace not in self.child_runs:
                run = self._client.create_run(
                    experiment_id=self._client.get_run(self.parent_run_id).info.experiment_id,
                    run_name=namespace,
                    tags={"mlflow.parentRunId": self.parent_run_id, "net": namespace.split(".")[-1],
                          "namespace": namespace},
                )
                self.child_runs[namespace] = run.info.run_id
            return self.child_runs[namespace]

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        """Make the node's nested run active, so nodes can log per-epoch metrics live."""
        if not self.enabled or not node.namespace:
            return
        import mlflow

        child = self._child(node.namespace)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == child:
            return
        mlflow.start_run(run_id=child, nested=active is not None)
        self._opened_for_node[node.name] = True

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async, run_id) -> None:
        """Deactivate the nested run opened for the node (its status stays RUNNING)."""
        self._close_node_run(node)

    @hook_impl
    def on_node_error(self, error, node, catalog, inputs, is_async, run_id) -> None:
        """Deactivate the nested run opened for the node."""
        self._close_node_run(node)

    def _close_node_run(self, node) -> None:
        if self._opened_for_node.pop(node.name, False):
            import mlflow

            active = mlflow.active_run()
            if active is not None and active.info.run_id != self.parent_run_id:
                # end_run would mark it FINISHED; pop it without touching its status instead
                mlflow.end_run(status="RUNNING")

    # -- outputs ---------------------------------------------------------------------------
    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        """Log a saved output to the matching run (see the module docstring)."""
        if not self.enabled or dataset_name in self._private:
            return
        try:
            self._log_output(dataset_name, data)
        except Exception as exc:  # noqa: BLE001 - tracking must never fail a run
            logger.warning("MLflow: could not log %s: %s", dataset_name, exc)

    def _run_for(self, dataset_name: str) -> tuple[str, str]:
        namespace, _, short = dataset_name.rpartition(".")
        return (self._child(namespace) if namespace else self.parent_run_id), short

    def _log_output(self, dataset_name: str, data: Any) -> None:
        import pandas as pd
        from matplotlib.figure import Figure

        client = self._client
        run_id, short = self._run_for(dataset_name)
        if isinstance(data, Figure):
            client.log_figure(run_id, data, f"figures/{short}.png")
        elif short == "split" and isinstance(data, Mapping):
            client.log_dict(run_id, dict(data), "split.json")
            client.log_param(run_id, "split.n_train", len(data["train"]))
            client.log_param(run_id, "split.n_test", len(data["test"]))
        elif short == "history" and isinstance(data, pd.DataFrame):
            client.log_text(run_id, data.to_csv(index=False), "training_history.csv")
            self._fill_epoch_metrics(run_id, data)
        elif short == "model" and isinstance(data, Mapping):
            self._log_model(run_id, data)
        elif short == "table_ii_csv" and isinstance(data, pd.DataFrame):
            client.log_text(run_id, data.to_csv(index=False), "table_ii.csv")
            self._log_test_metrics(data)
        elif isinstance(data, str) and short.endswith("_md"):
            client.log_text(run_id, data, f"{short.removesuffix('_md')}.md")
        elif short == "validation_accuracy_csv" and isinstance(data, pd.DataFrame):
            client.log_text(run_id, data.to_csv(index=False), "validation_accuracy.csv")
            self._log_validation_metrics(data)
        elif isinstance(data, pd.DataFrame):
            client.log_text(run_id, data.to_csv(index=False), f"tables/{short}.csv")

    def _fill_epoch_metrics(self, run_id: str, history) -> None:
        """Log the epochs that were not logged live (e.g. epochs restored from a checkpoint)."""
        from mlflow.entities import Metric

        done = {m.step for m in self._client.get_metric_history(run_id, "train_loss")}
        now = int(time.time() * 1000)
        metrics = []
        for _, row in history.iterrows():
            step = int(row["epoch"])
            if step in done:
                continue
            for key, value in row.items():
                if key == "epoch" or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                    continue
                metrics.append(Metric(key, float(value), now, step))
        for i in range(0, len(metrics), 1000):
            self._client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def _log_test_metrics(self, table) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metric_cols = [c for c in table.columns if c.endswith(("_mean", "_sd", "_p"))]
        for net, rows in table.groupby("net"):
            metrics = []
            for _, r in rows.iterrows():
                for c in metric_cols:
                    v = r[c]
                    if isinstance(v, (int, float)) and math.isfinite(float(v)):
                        metrics.append(Metric(f"test_{r['ROI']}_{c}", float(v), now, 0))
            if metrics:
                self._client.log_batch(self._child(str(net)), metrics=metrics)

    def _log_validation_metrics(self, table) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for _, r in table.iterrows():
            run_id = self._child(f"validate.{r['net']}")
            k = int(r["fold"])
            self._client.log_batch(run_id, metrics=[
                Metric(f"fold_{k}_train_accuracy", float(r["train_accuracy"]), now, 0),
                Metric(f"fold_{k}_val_accuracy", float(r["val_accuracy"]), now, 0),
            ])

    def _log_model(self, run_id: str, bundle: Mapping[str, Any]) -> None:
        import mlflow
        import numpy as np
        import torch

        from colearn_pipeline.training import atomic_torch_save, load_model

        with tempfile.TemporaryDirectory() as tmp:
            path = atomic_torch_save(dict(bundle), Path(tmp) / "model.pt")
            self._client.log_artifact(run_id, str(path), "state_dict")
        self._client.log_param(run_id, "net", bundle["net"])
        self._client.log_param(run_id, "fingerprint", bundle.get("fingerprint", ""))
        if not self._settings.get("log_models", True):
            return
        model = load_model(bundle, "cpu")
        h, w = bundle["input_hw"]
        example = np.zeros((1, 2, int(h), int(w)), dtype=np.float32)
        active = mlflow.active_run()
        with mlflow.start_run(run_id=run_id, nested=active is not None):
            mlflow.pytorch.log_model(
                model, name="model", input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "colearn-pipeline"],
            )
