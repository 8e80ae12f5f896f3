"""MLflow hooks without training: declared logging, nested parameters, KILLED on signals,
orphaned RUNNING runs closed as FAILED (SQLite store in tmp_path)."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient

from colearn_pipeline.hooks import ROOT_TAG, MlflowHooks, close_orphaned_runs, nested_run

SETTINGS = {"enabled": True, "tracking_uri": None, "experiment_name": "hooks", "log_models": False,
            "fail_on_logging_error": True}


class FakeCatalog:
    """What the hooks use of a Kedro catalog: the parameters and each dataset's metadata."""

    def __init__(self, params, metadata):
        self.params, self.metadata = params, metadata

    def __contains__(self, name):
        return name == "parameters"

    def load(self, name):
        return self.params

    def get(self, name):
        return SimpleNamespace(metadata=self.metadata.get(name))


def _start(tmp_path, monkeypatch, metadata=None, **settings):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = {"mlflow": {**SETTINGS, **settings}, "model": {"width": 8}, "training": {"learning_rate": 0.1},
              "net_overrides": {"tb": {"training": {"learning_rate": 0.05}}}}
    hooks = MlflowHooks()
    hooks.before_pipeline_run({"project_path": str(tmp_path), "pipeline_names": ["t"]}, None,
                              FakeCatalog(params, metadata or {}))
    return hooks, MlflowClient(uri)


def _runs(client):
    exp = client.get_experiment_by_name("hooks")
    return client.search_runs([exp.experiment_id])


def test_nested_runs_carry_their_net_and_seed_parameters(tmp_path, monkeypatch):
    hooks, client = _start(tmp_path, monkeypatch)
    node = SimpleNamespace(namespace="tb", name="tb.train_evaluate")
    hooks.before_node_run(node, None, {}, False, "r")
    with nested_run("tb seed 3", {"seed": 3, "training": {"learning_rate": 0.05, "seed": 3}}, {"net": "tb"}):
        mlflow.log_metric("x", 1.0)
    hooks.after_node_run(node, None, {}, {}, False, "r")
    hooks.after_pipeline_run({}, {}, None, None)
    runs = {r.info.run_name: r for r in _runs(client)}
    assert runs["tb"].data.params["training.learning_rate"] == "0.05"  # override applied
    assert runs["tb"].data.params["model.width"] == "8"
    assert runs["tb seed 3"].data.params["seed"] == "3"
    assert runs["tb seed 3"].data.tags["mlflow.parentRunId"] == runs["tb"].info.run_id
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert {r.data.tags[ROOT_TAG] for r in runs.values()} == {hooks.parent_run_id}
    assert client.get_experiment_by_name("hooks").tags["mlflow.experimentKind"] == "custom_model_development"


def test_only_declared_datasets_are_logged(tmp_path, monkeypatch):
    hooks, client = _start(tmp_path, monkeypatch, metadata={"report_md": {"mlflow": "artifact"}})
    hooks.after_dataset_saved("report_md", "# hello", None)
    hooks.after_dataset_saved("other_md", "# not declared", None)
    run_id = hooks.parent_run_id
    hooks.after_pipeline_run({}, {}, None, None)
    assert [a.path for a in client.list_artifacts(run_id)] == ["report.md"]


def test_a_logging_failure_is_an_error_unless_conf_says_otherwise(tmp_path, monkeypatch):
    hooks, _ = _start(tmp_path, monkeypatch, metadata={"bad": {"mlflow": "picture"}, "obj": {"mlflow": "artifact"}})
    with pytest.raises(RuntimeError, match="could not log bad"):
        hooks.after_dataset_saved("bad", "x", None)
    with pytest.raises(RuntimeError, match="could not log obj"):
        hooks.after_dataset_saved("obj", object(), None)
    hooks.on_pipeline_error(None, {}, None, None)
    lenient, _ = _start(tmp_path, monkeypatch, metadata={"obj": {"mlflow": "artifact"}}, fail_on_logging_error=False)
    lenient.after_dataset_saved("obj", object(), None)  # a warning, no error
    lenient.after_pipeline_run({}, {}, None, None)


def test_sigint_marks_every_run_killed(tmp_path, monkeypatch):
    hooks, client = _start(tmp_path, monkeypatch)
    node = SimpleNamespace(namespace="colearn", name="colearn.train_evaluate")
    hooks.before_node_run(node, None, {}, False, "r")
    with pytest.raises(KeyboardInterrupt):
        with nested_run("colearn seed 1", {"seed": 1}, {}):
            hooks._on_signal(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    statuses = {r.info.run_name: r.info.status for r in _runs(client)}
    assert statuses == {"kedro t (local)": "KILLED", "colearn": "KILLED", "colearn seed 1": "KILLED"}


def test_sigterm_marks_the_run_killed_and_the_process_still_terminates(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_mlflow_hooks import FakeCatalog, SETTINGS
        from colearn_pipeline.hooks import MlflowHooks
        hooks = MlflowHooks()
        hooks.before_pipeline_run({{"project_path": ".", "pipeline_names": ["t"]}}, None,
                                  FakeCatalog({{"mlflow": SETTINGS}}, {{}}))
        os.kill(os.getpid(), signal.SIGTERM)
        print("survived")
    """)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM and "survived" not in proc.stdout, proc.stderr[-2000:]
    assert [r.info.status for r in _runs(MlflowClient(uri))] == ["KILLED"]


def test_orphaned_running_runs_of_dead_processes_are_closed_as_failed(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("hooks")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    orphan = client.create_run(exp, tags={"colearn.host": host, "colearn.pid": str(dead.pid)}).info.run_id
    alive = client.create_run(exp, tags={"colearn.host": host, "colearn.pid": str(os.getppid())}).info.run_id
    elsewhere = client.create_run(exp, tags={"colearn.host": "other-host", "colearn.pid": "1"}).info.run_id
    hooks, _ = _start(tmp_path, monkeypatch)  # a new run closes the orphan on start
    hooks.after_pipeline_run({}, {}, None, None)
    status = {r: client.get_run(r).info.status for r in (orphan, alive, elsewhere)}
    assert status == {orphan: "FAILED", alive: "RUNNING", elsewhere: "RUNNING"}
    assert close_orphaned_runs(client, exp, host) == []
