"""Issue 25: one run at a time per project data folder, MLflow store creation safe under concurrency, and a
failing environment (a full or read-only output folder, a data folder that is a file) told as a message
that says a re-run resumes, with the previous manifest never left looking current.

Full and read-only disks are simulated without root rights (tests may run as root, where chmod stops
no write): ``os.replace`` raises ``OSError(ENOSPC)`` / ``OSError(EROFS)`` for the stage outputs.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dicom_fixtures import FIXTURE_QUALITY, preprocess_catalog
from test_train_eval_e2e import KEDRO, copy_project, project_env

from colearn_pipeline.phantom.config import CONVENTIONS
from colearn_pipeline.phantom.generate import generate_study
from colearn_pipeline.runlock import (
    LOCK_NAME,
    RunGuardHooks,
    RunLock,
    RunLockError,
    environment_message,
)

SEED = 25
HOLD_SCRIPT = """
import sys, time
from colearn_pipeline.runlock import RunLock
lock = RunLock(sys.argv[1]); lock.acquire(); print("held", flush=True); time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_with_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    data = tmp_path / "data"
    holder = _holder(data)
    try:
        with pytest.raises(RunLockError, match=rf"another run is in progress since \d{{4}}-.* UTC, pid {holder.pid}"):
            RunLock(data).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: its lock file still names it
        holder.wait()
    assert str(holder.pid) in (data / LOCK_NAME).read_text()
    lock = RunLock(data)
    note = lock.acquire()
    assert note and f"stale run lock of pid {holder.pid}" in note and "no longer running" in note
    assert json.loads((data / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert (data / LOCK_NAME).read_text() == ""  # free: the next run takes it without a note
    again = RunLock(data)
    assert again.acquire() is None
    again.release()


def test_data_folder_that_is_a_file_gives_a_message(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    guard = RunGuardHooks()
    with pytest.raises(SystemExit) as stop:
        guard.before_pipeline_run({"project_path": str(tmp_path)}, pipeline=None, catalog=None)
    message = str(stop.value.code)
    assert "a path that should be a folder is a file" in message and "at data" in message
    assert "run the same command again: it resumes" in message


def _fail_replace(real_replace, out: Path, code: int):
    stages = (out / "02_intermediate", out / "03_primary", out / "05_model_input")

    def replace(src, dst, *args, **kwargs):
        if any(Path(dst).is_relative_to(s) for s in stages):
            raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    return replace


def _guarded_run(project: Path, raw: Path, out: Path):
    """One preprocess run through the project's catalog with the run guard's hooks called as Kedro calls them."""
    from kedro.runner import SequentialRunner

    from colearn_pipeline.pipelines.preprocess import create_pipeline

    catalog, _ = preprocess_catalog(raw, out, workers=0)
    pipeline, guard, params = create_pipeline(), RunGuardHooks(), {"project_path": str(project)}
    guard.before_pipeline_run(params, pipeline, catalog)
    try:
        result = SequentialRunner().run(pipeline, catalog)
    except Exception as error:
        guard.on_pipeline_error(error, params, pipeline, catalog)
        raise
    guard.after_pipeline_run(params, result, pipeline, catalog)


def test_full_or_read_only_output_folder_gives_a_message_and_a_rerun_resumes(tmp_path, monkeypatch):
    project, raw = tmp_path, tmp_path / "raw"
    out = project / "data"
    first = generate_study(raw, 0, seed=SEED, size="tiny", convention=CONVENTIONS[0])
    _guarded_run(project, raw, out)
    reporting = out / "08_reporting"
    assert json.loads((reporting / "preprocess_run_status.json").read_text())["status"] == "complete"
    second = generate_study(raw, 1, seed=SEED, size="tiny", convention=CONVENTIONS[0])  # work for the next run
    real_replace = os.replace
    for code, words in ((errno.ENOSPC, "the disk is full"), (errno.EROFS, "the file system is read-only")):
        monkeypatch.setattr(os, "replace", _fail_replace(real_replace, out, code))
        with pytest.raises(SystemExit) as stop:
            _guarded_run(project, raw, out)
        monkeypatch.setattr(os, "replace", real_replace)
        message = str(stop.value.code)
        assert words in message and os.strerror(code) in message and "at data/0" in message, message
        assert "run the same command again: it resumes" in message and "Traceback" not in message
        status = json.loads((reporting / "preprocess_run_status.json").read_text())
        assert status["status"] == "failed" and words in status["problem"]
        assert not (reporting / "preprocess_manifest.json").exists()  # never left looking current
        assert (reporting / "preprocess_manifest.previous.json").is_file()
        assert status["previous_manifest"] == ["preprocess_manifest.previous.json", "preprocess_manifest.previous.csv"]
    _guarded_run(project, raw, out)  # fixed: the re-run resumes
    manifest = json.loads((reporting / "preprocess_manifest.json").read_text())
    assert {r["pseudonym"]: r["status"] for r in manifest["studies"]} == {first["pseudonym"]: "ok",
                                                                          second["pseudonym"]: "ok"}
    assert json.loads((reporting / "preprocess_run_status.json").read_text())["status"] == "complete"
    assert not list(reporting.glob("*.previous.*"))


def test_a_bug_keeps_its_traceback():
    assert environment_message(TypeError("unsupported operand"), "/tmp") is None
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/elsewhere/x.nii")
    assert "the disk is full" in environment_message(wrapped, "/tmp")


@pytest.mark.slow
def test_two_concurrent_kedro_runs_one_refused(tmp_path):
    env = {"preprocess": {"executor": {"workers": 0}, "model_input": {"model_size": [32, 32]},
                          "quality": dict(FIXTURE_QUALITY)},
           "mlflow": {"enabled": True, "experiment_name": "lock-test", "log_models": False}}
    root = copy_project(tmp_path / "project", yaml.safe_dump(env), "parameters.yml")
    generate_study(root / "data" / "01_raw", 0, seed=SEED, size="tiny", convention=CONVENTIONS[0])
    environment = {**project_env(root), "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([KEDRO, "run", "--env", "test", "--pipeline=preprocess"], cwd=root, text=True,
                             env={**environment, "COLEARN_RUN_LOCK_TEST_HOLD_S": "40"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lock = root / "data" / LOCK_NAME
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and lock.read_text()) and first.poll() is None:
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[0][-4000:]
    holder = json.loads(lock.read_text())
    second = subprocess.run([KEDRO, "run", "--env", "test", "--pipeline=preprocess"], cwd=root, env=environment,
                            capture_output=True, text=True, timeout=300, check=False)
    output = second.stdout + second.stderr
    assert second.returncode != 0 and "another run is in progress since" in output, output[-3000:]
    assert f"pid {holder['pid']}" in output and "Traceback" not in output, output[-3000:]
    log, _ = first.communicate(timeout=600)
    assert first.returncode == 0, log[-4000:]
    manifest = json.loads((root / "data" / "08_reporting" / "preprocess_manifest.json").read_text())
    assert manifest["summary"]["ok"] == 1


RACE_SCRIPT = """
import sys, time
start = float(sys.argv[2])
from colearn_pipeline.hooks import experiment_id
time.sleep(max(0.0, start - time.time()))
client, exp = experiment_id(sys.argv[1], "race")
print(exp)
"""


@pytest.mark.slow
def test_mlflow_store_created_by_processes_starting_together(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 15  # all imported by then, then all at once
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, uri, str(start)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err[-3000:]
        assert "OperationalError" not in err
    assert len({out.strip() for out, _ in results}) == 1


def test_run_status_after_a_failure_says_which_manifest_is_current(tmp_path):
    from colearn_pipeline.pipelines.preprocess.manifest import RunStatus, previous_path

    manifests = [tmp_path / "preprocess_manifest.json", tmp_path / "preprocess_manifest.csv"]
    for path in manifests:
        previous_path(path).write_text("old")
        path.write_text("new")  # written whole by this run, which failed afterwards (e.g. no study ok)
    status = RunStatus(tmp_path / "preprocess_run_status.json", manifests, "t0")
    status.fail("PreprocessRunError: see the run's log", environment=False)
    record = json.loads(status.path.read_text())
    assert record["status"] == "failed" and record["manifest"] == [p.name for p in manifests]
    assert all(p.read_text() == "new" for p in manifests) and not list(tmp_path.glob("*.previous.*"))
    for path in manifests:
        previous_path(path).write_text("old")
        path.write_text("ne")  # cut short by a full disk
    status.fail("colearn: the run stopped: the disk is full", environment=True)
    record = json.loads(status.path.read_text())
    assert not any(p.exists() for p in manifests) and record["previous_manifest"] == [
        "preprocess_manifest.previous.json", "preprocess_manifest.previous.csv"]


def test_dicom_folder_that_is_a_file_gives_a_message(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dicom").write_text("an export that went wrong")
    (raw / "reports").mkdir()
    with pytest.raises(SystemExit) as stop:
        _guarded_run(tmp_path, raw, tmp_path / "data")
    message = str(stop.value.code)
    assert "a path that should be a folder is a file" in message and "at raw/dicom." in message, message
