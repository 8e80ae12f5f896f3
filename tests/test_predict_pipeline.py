"""The predict Kedro pipeline: every study under a folder, a bad one quarantined, the rest segmented."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
import torch

from colearn_pipeline.dicom.discovery import discover, select_ct_pet
from colearn_pipeline.phantom.generate import generate_cohort
from colearn_pipeline.training import assemble_slices, train_model
from synthetic_studies import synthetic_study

REPO = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))


@pytest.mark.slow
def test_predict_pipeline_segments_and_quarantines(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()
    names = ["study-0000000001"]
    data = assemble_slices({n: synthetic_study(n, n_slices=4, size=32) for n in names}, names)
    bundle, _ = train_model("tc", {"width": 4, "depth": 2}, data,
                            dict(seed=0, epochs=1, batch_size=4, learning_rate=0.05, progress=False))
    (root / "data" / "06_models" / "colearn").mkdir(parents=True)
    torch.save(bundle, root / "data" / "06_models" / "colearn" / "model.pt")

    raw = tmp_path / "raw"
    generate_cohort(raw, n_studies=2, seed=3, size="tiny", progress=False)
    found = discover(raw / "dicom")
    good, bad = sorted(found.studies)
    _, pet, _ = select_ct_pet(found.studies[bad], str(raw / "dicom"))
    for f in pet.files:  # the second study loses its PET
        os.remove(f)
    studies = root / "data" / "01_raw" / "predict" / "dicom"
    shutil.copytree(raw / "dicom", studies)

    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "COLUMNS": "400",  # rich: no wrapping of log lines
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    proc = subprocess.run([KEDRO, "run", "--pipeline", "predict"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = root / "data" / "07_model_output" / "predict"
    manifest = pd.read_csv(out / "manifest.csv").set_index("pseudonym")
    assert manifest.loc[good, "status"] == "ok"
    assert manifest.loc[bad, "status"] == "quarantined" and "no PET series" in manifest.loc[bad, "reason"]
    assert (out / "labels" / f"{good}.nii.gz").is_file() and (out / "summary" / f"{good}.json").is_file()
    labels = sitk.ReadImage(str(out / "labels" / f"{good}.nii.gz"))
    assert (out / "summary" / f"{good}.csv").is_file()
    for name in ("uncertainty", "disagreement"):  # the uncertainty maps, on the labels' grid
        image = sitk.ReadImage(str(out / name / f"{good}.nii.gz"))
        assert image.GetPixelID() == sitk.sitkFloat32 and image.GetSize() == labels.GetSize()
        assert image.GetOrigin() == labels.GetOrigin() and image.GetDirection() == labels.GetDirection()
    assert pydicom.dcmread(out / "seg" / f"{good}.seg.dcm").Modality == "SEG"
    assert pydicom.dcmread(out / "sr" / f"{good}.sr.dcm").Modality == "SR"
    assert not any(out.rglob(f"{bad}*")) and not list(out.glob(".predict-staging-*/*"))
    log = proc.stdout + proc.stderr  # rich wraps and annotates long log lines: look for the parts
    assert bad in log and "quarantined" in log and "no PET" in log, log[-4000:]
