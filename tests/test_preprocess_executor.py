"""The executor: bad input vs our bugs, signals, and the same outputs on a Dask LocalCluster as on the local pool."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from colearn_pipeline.pipelines.preprocess import executor
from colearn_pipeline.pipelines.preprocess.executor import STAGING_PREFIX, StudyError, StudyTaskError, make_task, run_tasks
from colearn_pipeline.pipelines.preprocess.params import ExecutorParams, build

CONF = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_preprocess.yml"


def _executor(tmp_path, **change) -> ExecutorParams:
    block = yaml.safe_load(CONF.read_text())["preprocess"]["executor"]
    return build(ExecutorParams, {**block, "staging_dir": str(tmp_path), **change}, "preprocess.executor")


def good_task(*, staging_dir: str, value: int) -> dict:
    """A task that works."""
    return {"row": {"value": value}, "staged": {}}


def bad_input_task(*, staging_dir: str, value: int) -> dict:
    """A task whose input is bad."""
    raise StudyError(f"study-{value}", "ct/ct_0001.dcm", "something wrong with the input")


def buggy_task(*, staging_dir: str, value: int) -> dict:
    """A task with a bug of ours."""
    return {"row": [][value], "staged": {}}  # IndexError


def sleepy_task(*, staging_dir: str, value: int) -> dict:
    """Writes its pid and sleeps (signal tests)."""
    Path(staging_dir).mkdir(parents=True, exist_ok=True)
    (Path(staging_dir) / f"pid-{os.getpid()}").write_text("")
    time.sleep(60)
    return {"row": {}, "staged": {}}


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_input_quarantines_and_a_bug_stops_the_run_with_its_traceback(tmp_path, workers):
    params = _executor(tmp_path, workers=workers)
    tasks = [make_task("study-1", "demo", good_task, {"value": 1}, str(tmp_path / "s1")),
             make_task("study-2", "demo", bad_input_task, {"value": 2}, str(tmp_path / "s2"))]
    results = run_tasks(tasks, params)
    assert results["study-1"]["status"] == "ok" and results["study-1"]["row"]["value"] == 1
    assert results["study-2"]["status"] == "quarantined"
    assert results["study-2"]["file"] == "ct/ct_0001.dcm" and "wrong with the input" in results["study-2"]["reason"]
    with pytest.raises(StudyTaskError, match=r"(?s)study-3: stage demo: unexpected IndexError.*buggy_task"):
        run_tasks([*tasks, make_task("study-3", "demo", buggy_task, {"value": 3}, str(tmp_path / "s3"))], params)


RUNNER = """
import sys
from test_preprocess_executor import _executor, sleepy_task
from pathlib import Path
from colearn_pipeline.pipelines.preprocess.executor import make_task, run_tasks, staging_folder
params = _executor(Path(sys.argv[1]), workers=2)
stage = staging_folder(params)
run_tasks([make_task(f"study-{i}", "demo", sleepy_task, {"value": i}, str(stage / f"s{i}")) for i in range(3)], params)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to find the workers")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signal_leaves_no_worker_and_no_staging_behind(tmp_path, signum):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path)], env=env)
    deadline = time.time() + 60
    pids: list[int] = []
    while len(pids) < 2 and time.time() < deadline:
        time.sleep(0.2)
        pids = [int(p.name.split("-")[1]) for p in tmp_path.glob(f"{STAGING_PREFIX}*/s*/pid-*")]
    assert len(pids) == 2, "the workers did not start"
    proc.send_signal(signum)
    assert proc.wait(timeout=30) != 0
    deadline = time.time() + 10
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)]
    left = list(tmp_path.glob(f"{STAGING_PREFIX}*"))
    if signum == signal.SIGKILL:  # nothing can clean up after SIGKILL: the next run does
        from colearn_pipeline.pipelines.preprocess.executor import remove_stale_staging

        assert len(left) == 1 and remove_stale_staging(tmp_path) == left
    else:
        assert not left


def _content_digest(out: Path) -> dict[str, str]:
    """Hash of every output's content: NIfTI voxels and geometry, NPZ arrays (zip timestamps aside)."""
    digests = {}
    for path in sorted(out.rglob("*")):
        if ".records" in path.parts or not path.is_file():
            continue
        h = hashlib.sha256()
        if path.name.endswith((".nii.gz", ".nii")):
            img = sitk.ReadImage(str(path))
            h.update(sitk.GetArrayViewFromImage(img).tobytes())
            h.update(repr((img.GetSpacing(), img.GetOrigin(), img.GetDirection(), img.GetPixelIDTypeAsString())).encode())
        elif path.suffix == ".npz":
            with np.load(path) as npz:
                for key in sorted(npz.files):
                    h.update(key.encode() + npz[key].tobytes() + str(npz[key].dtype).encode())
        else:
            continue
        digests[str(path.relative_to(out))] = h.hexdigest()
    return digests


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_outputs_as_the_local_pool(tmp_path):
    from dicom_fixtures import run_preprocess_catalog

    from colearn_pipeline.phantom.generate import generate_cohort

    raw = tmp_path / "raw"
    generate_cohort(raw, n_studies=4, seed=9, size="tiny", workers=2)
    local = run_preprocess_catalog(raw, tmp_path / "local", workers=2)
    try:
        dask = run_preprocess_catalog(raw, tmp_path / "dask", workers=2, executor={"kind": "dask"})
    finally:
        for key in list(executor._DASK):
            executor._close_dask(key)
    assert local["manifest"]["summary"]["ok"] == dask["manifest"]["summary"]["ok"] == 4
    ours, theirs = _content_digest(tmp_path / "local"), _content_digest(tmp_path / "dask")
    assert len(ours) == 4 * 8 and ours == theirs
    pids = {r["pseudonym"]: r for r in dask["manifest"]["studies"]}
    assert all(r["status"] == "ok" for r in pids.values())
