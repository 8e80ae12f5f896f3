"""The installed commands work from any folder: built-in defaults equal to conf/base, ``--params`` to override.

- The built-in parameter blocks of ``colearn-suv``, ``colearn-predict`` and ``colearn-phantom``, and the
  keyword defaults the groundtruth CLI runs with, are the values of ``conf/base`` (a change to either
  side without the other fails here).
- ``colearn-suv`` (the installed script) run from a folder outside the repository on an IBSI-SUV
  object writes the same SUV as run from the repository root.
- ``colearn-train`` finds its project from a subfolder, says so when started outside any project,
  and takes ``--params`` as runtime parameters.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from colearn_pipeline.groundtruth import segment_lungs, segment_mediastinum, segment_tumours
from colearn_pipeline.groundtruth.cli import load_params as groundtruth_params
from colearn_pipeline.inference.cli import BUILTIN_PARAMS as PREDICT_BUILTIN
from colearn_pipeline.inference.cli import read_params as predict_params
from colearn_pipeline.phantom.cli import BUILTIN_PARAMS as PHANTOM_BUILTIN
from colearn_pipeline.phantom.cli import load_params as phantom_params
from colearn_pipeline.suv.cli import BUILTIN_PARAMS as SUV_BUILTIN
from colearn_pipeline.suv.cli import load_plausibility
from colearn_pipeline.suv.plausibility import SuvPlausibility

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "conf" / "base"
#: The installed scripts live beside the interpreter running the tests (the project's venv).
BIN = Path(sys.executable).parent
GROUNDTRUTH_STAGES = {"lungs": segment_lungs, "mediastinum": segment_mediastinum, "tumours": segment_tumours}


def _base(name: str, block: str):
    return yaml.safe_load((BASE / name).read_text(encoding="utf-8"))[block]


def test_colearn_suv_builtin_equals_conf_base():
    assert SUV_BUILTIN == _base("parameters_suv.yml", "suv")
    assert load_plausibility(None) == SuvPlausibility.from_params(_base("parameters_suv.yml", "suv"))


def test_colearn_predict_builtin_equals_conf_base(tmp_path):
    assert PREDICT_BUILTIN == _base("parameters_predict.yml", "predict")
    assert predict_params(None) == PREDICT_BUILTIN and predict_params(None) is not PREDICT_BUILTIN
    other = tmp_path / "p.yml"
    other.write_text("predict: {batch_size: 2, device: cpu}\n")
    assert predict_params(other) == {"batch_size": 2, "device": "cpu"}


def test_colearn_phantom_builtin_equals_conf_base(tmp_path):
    assert PHANTOM_BUILTIN == _base("parameters_phantom.yml", "phantom")
    other = tmp_path / "p.yml"
    other.write_text("phantom: {n_studies: 3, size: tiny}\n")
    assert phantom_params(str(other)) == {**PHANTOM_BUILTIN, "n_studies": 3, "size": "tiny"}
    other.write_text("phantom: {n_studys: 3}\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_studys'\]"):
        phantom_params(str(other))


@pytest.mark.parametrize("stage", sorted(GROUNDTRUTH_STAGES))
def test_groundtruth_cli_defaults_equal_conf_base(stage):
    """The CLI without --params runs each stage with its keyword defaults: they are conf/base's values."""
    signature = inspect.signature(GROUNDTRUTH_STAGES[stage]).parameters
    conf = {k: v for k, v in _base("parameters_preprocess.yml", "preprocess")[stage].items() if k != "overrides"}
    assert set(conf) <= set(signature), sorted(set(conf) - set(signature))
    defaults = {k: signature[k].default for k in conf}
    if conf.get("superior_at_high_z", True) is None:  # conf: from the CT direction; the phantom's +z is superior
        conf.pop("superior_at_high_z")
        defaults.pop("superior_at_high_z")
    assert defaults == conf
    # --params conf/base/parameters_preprocess.yml is the same as no --params
    assert groundtruth_params(BASE / "parameters_preprocess.yml")[stage] == conf


def _suv_from(cwd: Path, pet: Path, out: Path) -> np.ndarray:
    proc = subprocess.run([str(BIN / "colearn-suv"), str(pet), "--out", str(out)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out)))


def test_colearn_suv_outside_the_repository_gives_the_same_suv(ibsi_suv_root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert ROOT not in elsewhere.resolve().parents and not (elsewhere / "conf").exists()
    pet = ibsi_suv_root / "DRO_0_0" / "PT"
    outside = _suv_from(elsewhere, pet, tmp_path / "outside.nii.gz")
    inside = _suv_from(ROOT, pet, tmp_path / "inside.nii.gz")
    np.testing.assert_array_equal(outside, inside)
    assert 3.99 < float(outside.max()) < 4.01  # the DRO's maximum, SUVbw 4.00


def test_colearn_suv_params_file_is_used(ibsi_suv_root, tmp_path):
    """A --params file with a narrower weight range refuses DRO_0_0 (70 kg): the file is read, not the defaults."""
    params = tmp_path / "suv.yml"
    params.write_text(yaml.safe_dump({"suv": {**SUV_BUILTIN, "weight_kg": [80.0, 300.0]}}))
    proc = subprocess.run([str(BIN / "colearn-suv"), str(ibsi_suv_root / "DRO_0_0" / "PT"), "--out",
                           str(tmp_path / "suv.nii.gz"), "--params", str(params)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 1 and "PatientWeight (0010,1030): 70" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_colearn_train_finds_its_project_from_a_subfolder_and_takes_params(tmp_path):
    from test_train_eval_e2e import make_project, project_env

    root = make_project(tmp_path / "p", n_studies=4, n_slices=3, size=16)
    sub = root / "notebooks" / "deeper"
    sub.mkdir(parents=True)
    params = tmp_path / "override.yml"
    params.write_text("training: {epochs: 3}\n")
    train = [str(BIN / "colearn-train"), "--env", "test", "--dry-run", "--nets", "tc", "--params", str(params)]
    env = {**project_env(root), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(train, cwd=sub, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("tc ")] == ["0/3", "0/3"], proc.stdout  # seeds 1, 2
    outside = tmp_path / "outside"
    outside.mkdir()
    proc = subprocess.run(train, cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "is not inside a Kedro project" in proc.stderr, proc.stderr
