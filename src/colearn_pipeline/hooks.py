"""MLflow tracking through plain Kedro hooks (no kedro-mlflow).

One MLflow run per ``kedro run``; a nested run per namespace (``colearn``, ``tb``, ...,
``validate.colearn``, ...) carrying that net's effective model and training parameters; inside
it, a nested run per training seed (and K-fold partition, grid point) opened by the node with
:func:`nested_run`, with its own parameters, so MLflow's compare view lines nets and seeds up.

What is logged is declared in the catalog (``metadata: {mlflow: KIND}``, see
``conf/base/catalog_train_eval.yml`` and :data:`LOG_KINDS`), never inferred from names.
The experiment is tagged ``mlflow.experimentKind = custom_model_development`` so the MLflow UI
opens on its training runs.

Status: a run ends FINISHED, or FAILED on a pipeline error; SIGINT / SIGTERM mark every run of
this ``kedro run`` KILLED before the signal takes its usual course; a run left RUNNING by a
killed process (SIGKILL, power loss) is closed as FAILED by the next run on the same host.
A failed MLflow call fails the run unless ``mlflow.fail_on_logging_error`` is false.

Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else ``params:mlflow.tracking_uri``, else
``sqlite:///<project>/mlflow.db``. Artifacts of a new experiment on a SQLite store go to
``mlartifacts/`` beside the database file. A dataset whose catalog entry has
``metadata: {private: true}`` is never logged. ``mlflow.enabled: false`` (or ``COLEARN_MLFLOW=0``)
turns the hooks off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from colearn_pipeline._process import pid_alive

logger = logging.getLogger(__name__)

#: MLflow's limit on one parameter value.
_MAX_PARAM_LENGTH = 6000
#: Kinds of ``metadata: {mlflow: KIND}`` in the catalog.
LOG_KINDS: tuple[str, ...] = ("artifact", "history", "model", "comparison", "validation", "manifest")
#: Tag on every run of one ``kedro run``: the parent run's id.
ROOT_TAG = "colearn.root_run"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


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


def _log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in flatten_params(params).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


@contextlib.contextmanager
def nested_run(name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> Iterator[Any]:
    """A nested MLflow run under the active one, with its own parameters; no-op without one.

    Ends FINISHED, or FAILED when the block raises. Used by nodes for one seed / partition.
    """
    import mlflow

    active = mlflow.active_run()
    if active is None:
        yield None
        return
    root = active.data.tags.get(ROOT_TAG) if active.data.tags else None
    root = root or mlflow.get_run(active.info.run_id).data.tags.get(ROOT_TAG, active.info.run_id)
    with mlflow.start_run(run_name=name, nested=True, tags={**tags, ROOT_TAG: root}) as run:
        _log_params(mlflow.MlflowClient(), run.info.run_id, params)
        yield run


@dataclasses.dataclass(frozen=True)
class MlflowSettings:
    """``mlflow`` block of the parameters (every key required)."""

    enabled: bool
    tracking_uri: str | None
    experiment_name: str
    log_models: bool
    fail_on_logging_error: bool


def close_orphaned_runs(client, experiment_id: str, host: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this host whose process is gone; return their ids."""
    closed = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get("colearn.host") != host or not tags.get("colearn.pid"):
            continue
        if pid_alive(int(tags["colearn.pid"])):
            continue
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
    if closed:
        logger.warning("MLflow: closed %d run(s) left RUNNING by a killed process as FAILED", len(closed))
    return closed


#: Tries of :func:`experiment_id` when another process is creating the same store or experiment.
STORE_CREATION_TRIES = 5


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock beside a SQLite store (``mlflow.db.lock``), so one process creates its tables;
    no-op for other stores (a tracking server serialises for itself)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def experiment_id(uri: str, name: str) -> tuple[Any, str]:
    """A client of the store at ``uri`` and the id of experiment ``name``, created when missing; safe when
    several processes start together on a new store.

    The client (whose construction creates a SQLite store's tables) and the experiment are made
    under :func:`_store_lock`; a race lost anyway (another store kind, "already exists", a locked
    database) is retried after a pause.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    for attempt in range(STORE_CREATION_TRIES):
        try:
            with _store_lock(uri):
                client = MlflowClient(uri)
                experiment = client.get_experiment_by_name(name)
                if experiment is not None:
                    return client, experiment.experiment_id
                return client, client.create_experiment(name, artifact_location=_artifact_root_for(uri))
        except (MlflowException, OperationalError) as exc:
            if attempt == STORE_CREATION_TRIES - 1:
                raise
            logger.warning("MLflow: store or experiment busy (%s); trying again", type(exc).__name__)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class MlflowHooks:
    """Kedro hooks that track a ``kedro run`` in MLflow (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._previous_handlers: dict[int, Any] = {}
        self._reset()

    def _reset(self) -> None:
        self.enabled = False
        self.parent_run_id: str | None = None
        self.child_runs: dict[str, str] = {}
        self._opened_for_node: dict[str, bool] = {}
        self._settings: MlflowSettings | None = None
        self._params: dict[str, Any] = {}
        self._catalog = None
        self._client = None
        self.tracking_uri: str | None = None
        self._private: set[str] = set()

    # -- pipeline --------------------------------------------------------------------------
    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Close orphans, start the parent run, log every parameter, catch SIGINT/SIGTERM."""
        self._reset()
        params = catalog.load("parameters") if "parameters" in catalog else {}
        if "mlflow" not in params or os.environ.get("COLEARN_MLFLOW", "1") == "0":
            return
        from colearn_pipeline.pipelines.train_eval.params import strict

        settings = strict(MlflowSettings, params["mlflow"], "mlflow")
        if not settings.enabled:
            return
        import mlflow

        self.tracking_uri = resolve_tracking_uri(settings.tracking_uri, run_params.get("project_path") or os.getcwd())
        mlflow.set_tracking_uri(self.tracking_uri)
        client, exp_id = experiment_id(self.tracking_uri, settings.experiment_name)
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(exp_id, key, value)
        close_orphaned_runs(client, exp_id, socket.gethostname())
        mlflow.set_experiment(experiment_id=exp_id)
        while mlflow.active_run() is not None:  # a run left open by an earlier failure in this process
            mlflow.end_run(status="FAILED")
        run = mlflow.start_run(run_name=self._run_name(run_params), tags=self._run_tags(run_params))
        self.parent_run_id = run.info.run_id
        client.set_tag(self.parent_run_id, ROOT_TAG, self.parent_run_id)
        self._client, self._settings, self._params, self._catalog = client, settings, params, catalog
        self._private = private_datasets(catalog)  # the maps back to UIDs and paths: never logged
        self.enabled = True
        _log_params(client, self.parent_run_id, params)
        self._install_signal_handlers()
        logger.info("MLflow run %s in %s", self.parent_run_id, self.tracking_uri)

    @staticmethod
    def _run_name(run_params: Mapping[str, Any]) -> str:
        names = run_params.get("pipeline_names") or ["__default__"]
        return f"kedro {'+'.join(names)} ({run_params.get('env') or 'local'})"

    @staticmethod
    def _run_tags(run_params: Mapping[str, Any]) -> dict[str, str]:
        return {
            "kedro.session_id": str(run_params.get("session_id", "")),
            "kedro.run_id": str(run_params.get("run_id", "")),
            "kedro.env": str(run_params.get("env") or "local"),
            "kedro.pipelines": ",".join(run_params.get("pipeline_names") or ["__default__"]),
            "kedro.namespaces": ",".join(run_params.get("namespaces") or []),
            "colearn.host": socket.gethostname(),
            "colearn.pid": str(os.getpid()),
        }

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        """Finish every run started by this ``kedro run``."""
        self._finish("FINISHED")

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        """Mark the runs failed."""
        self._finish("FAILED")

    def _finish(self, status: str) -> None:
        with self._lock:
            if not self.enabled:
                return
            self.enabled = False
            import mlflow

            while mlflow.active_run() is not None:
                mlflow.end_run(status=status)
            exp = self._client.get_run(self.parent_run_id).info.experiment_id
            query = f"tags.`{ROOT_TAG}` = '{self.parent_run_id}' and attributes.status = 'RUNNING'"
            for run in self._client.search_runs([exp], query, max_results=10000):
                self._client.set_terminated(run.info.run_id, status=status)
            self._restore_signal_handlers()
            logger.info("MLflow: run %s (%s); open the UI with: mlflow ui --backend-store-uri %s",
                        self.parent_run_id, status, self.tracking_uri)

    # -- signals ---------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame) -> None:
        """Mark the runs KILLED, then let the signal do what it did before the hooks."""
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self._finish("KILLED")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    # -- nested runs -----------------------------------------------------------------------
    def _net_params(self, namespace: str) -> dict[str, Any]:
        """The effective parameters of the net of a namespace (overrides applied)."""
        from colearn_pipeline.pipelines.train_eval.params import net_overrides

        net = namespace.split(".")[-1]
        model_extra, training_extra = net_overrides(self._params.get("net_overrides") or {}, net)
        return {"net": net, "model": {**(self._params.get("model") or {}), **model_extra},
                "training": {**(self._params.get("training") or {}), **training_extra}}

    def _child(self, namespace: str) -> str:
        with self._lock:
            if namespace not in self.child_runs:
                run = self._client.create_run(
                    experiment_id=self._client.get_run(self.parent_run_id).info.experiment_id,
                    run_name=namespace,
                    tags={"mlflow.parentRunId": self.parent_run_id, "net": namespace.split(".")[-1],
                          "namespace": namespace, ROOT_TAG: self.parent_run_id},
                )
                self.child_runs[namespace] = run.info.run_id
                _log_params(self._client, run.info.run_id, self._net_params(namespace))
            return self.child_runs[namespace]

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        """Make the node's nested run active, so nodes can open seed runs and log live."""
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
        """Deactivate the nested run opened for the node (it is finished with the parent)."""
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
                # a net's run spans several nodes: pop it without ending it; _finish ends it
                mlflow.end_run(status="RUNNING")

    # -- outputs ---------------------------------------------------------------------------
    def declared_kind(self, dataset_name: str) -> str | None:
        """The ``mlflow`` kind a dataset declares in the catalog, or None."""
        dataset = self._catalog.get(dataset_name) if self._catalog is not None else None
        metadata = getattr(dataset, "metadata", None) or {}
        kind = metadata.get("mlflow")
        if kind is not None and kind not in LOG_KINDS:
            raise ValueError(f"catalog entry {dataset_name!r}: metadata.mlflow {kind!r} is not one of {LOG_KINDS}")
        return kind

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        """Log a saved output declared in the catalog to the run of its namespace (private datasets never)."""
        if not self.enabled or dataset_name in self._private:
            return
        try:
            kind = self.declared_kind(dataset_name)
            if kind is not None:
                self._log_output(dataset_name, kind, data)
        except Exception as exc:
            if self._settings.fail_on_logging_error:
                raise RuntimeError(f"MLflow: could not log {dataset_name}: {exc}") from exc
            logger.warning("MLflow: could not log %s: %s", dataset_name, exc)

    def _run_for(self, dataset_name: str) -> tuple[str, str]:
        namespace, _, short = dataset_name.rpartition(".")
        return (self._child(namespace) if namespace else self.parent_run_id), short

    def _log_output(self, dataset_name: str, kind: str, data: Any) -> None:
        run_id, short = self._run_for(dataset_name)
        if kind == "model":
            self._log_model(run_id, data)
            return
        self._log_artifact(run_id, short, data)
        if kind == "history":
            self._fill_epoch_metrics(run_id, data)
        elif kind == "comparison":
            self._log_comparison_metrics(data, prefix="validate." if dataset_name.startswith("validate.") else "")
        elif kind == "validation":
            self._log_validation_metrics(data)
        elif kind == "manifest":
            self._log_manifest_metrics(run_id, data)

    def _log_artifact(self, run_id: str, short: str, data: Any) -> None:
        import pandas as pd
        from matplotlib.figure import Figure

        client = self._client
        if isinstance(data, Figure):
            client.log_figure(run_id, data, f"figures/{short}.png")
        elif isinstance(data, pd.DataFrame):
            client.log_text(run_id, data.to_csv(index=False), f"tables/{short.removesuffix('_csv')}.csv")
        elif isinstance(data, str):
            client.log_text(run_id, data, f"{short.removesuffix('_md')}.md")
        elif isinstance(data, Mapping):
            client.log_text(run_id, json.dumps(data, indent=2, default=str), f"{short}.json")
        else:
            raise TypeError(f"no artifact format for {type(data).__name__}")

    def _fill_epoch_metrics(self, run_id: str, history) -> None:
        """Log the epochs of the first seed/partition not logged live (e.g. restored ones)."""
        from mlflow.entities import Metric

        if "seed" in history:
            history = history[(history["seed"] == history["seed"].iloc[0]) & (history["fold"] == history["fold"].iloc[0])]
        done = {m.step for m in self._client.get_metric_history(run_id, "train_loss")}
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(row["epoch"]))
            for _, row in history.iterrows() if int(row["epoch"]) not in done
            for key, value in row.items()
            if key not in ("epoch", "seed", "fold") and isinstance(value, (int, float)) and math.isfinite(float(value))
        ]
        for i in range(0, len(metrics), 1000):
            self._client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def _log_comparison_metrics(self, table, prefix: str) -> None:
        """Each net's study-level means (and its difference to the reference) in its run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for net, rows in table.groupby("net"):
            metrics = [
                Metric(f"test_{r['roi']}_{r['metric']}_{col}", float(r[col]), now, 0)
                for _, r in rows.iterrows() for col in ("mean", "sd_seeds", "difference", "p_holm")
                if isinstance(r[col], (int, float)) and math.isfinite(float(r[col]))
            ]
            if metrics:
                self._client.log_batch(self._child(prefix + str(net)), metrics=metrics)

    def _log_validation_metrics(self, table) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for net, rows in table.groupby("net"):
            nested = "partition" in rows and rows["partition"].nunique() > 1  # K-fold: one choice per partition
            metrics = [Metric(("partition_%d_" % int(r["partition"]) if nested else "")
                              + f"grid_{int(r['grid_point'])}_fold_{int(r['fold'])}_score", float(r["score"]), now, 0)
                       for _, r in rows.iterrows() if math.isfinite(float(r["score"]))]
            if metrics:
                self._client.log_batch(self._child(f"validate.{net}"), metrics=metrics)

    def _log_manifest_metrics(self, run_id: str, manifest: Mapping[str, Any]) -> None:
        """The preprocess manifest's summary figures, and each study's derived-vs-expert agreement
        (``expert_dice_<class>`` ... as ``<figure>/<pseudonym>``), as metrics of the run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [(k, v) for k, v in (manifest.get("summary") or {}).items()]
        values += [(f"{k}/{row['pseudonym']}", v) for row in manifest.get("studies") or []
                   for k, v in row.items() if k.startswith("expert_")]
        metrics = [Metric(k, float(v), now, 0) for k, v in values
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        for i in range(0, len(metrics), 1000):
            self._client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def _log_model(self, run_id: str, bundle: Mapping[str, Any]) -> None:
        import mlflow
        import numpy as np
        import torch

        from colearn_pipeline.training import atomic_torch_save, load_model

        with tempfile.TemporaryDirectory() as tmp:
            path = atomic_torch_save(dict(bundle), Path(tmp) / "model.pt")
            self._client.log_artifact(run_id, str(path), "state_dict")
        self._client.set_tag(run_id, "fingerprint", bundle.get("fingerprint", ""))
        if not self._settings.log_models:
            return
        model = load_model(bundle, "cpu")
        h, w = bundle["input_hw"]
        example = np.zeros((1, 2, int(h), int(w)), dtype=np.float32)
        active = mlflow.active_run()
        opened = active is None or active.info.run_id != run_id
        if opened:
            mlflow.start_run(run_id=run_id, nested=active is not None)
        try:
            mlflow.pytorch.log_model(
                model, name="model", input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "colearn-pipeline"],
            )
        finally:
            if opened:
                mlflow.end_run(status="RUNNING")
