"""End to end on a small phantom cohort: the issue's acceptance figures, the model-input contract.

Six studies cover every scanner convention of the phantom (study i uses convention i mod 6). The
cohort has the ``demo`` size (CT 256x256, 5 mm slices; about 35 s here): at the ``tiny`` size
(10 mm slices, 8 mm PET pixels) a 10 mm node is two or three voxels and the tumour Dice measures
the voxel size rather than the segmentation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from dicom_fixtures import run_preprocess_catalog

from colearn_pipeline.phantom.config import CONVENTIONS
from colearn_pipeline.phantom.generate import generate_cohort

pytestmark = pytest.mark.slow

#: Acceptance thresholds of issue 3 (mean Dice against the phantom's truth; SUV relative error).
MIN_MEAN_DICE = {"lung": 0.95, "mediastinum": 0.85, "tumour": 0.80}
MAX_SUV_REL_ERROR = 0.01
PHANTOM_SIZE = "demo"
CONTRACT = {
    "ct_hu": np.float32, "suv": np.float32, "labels": np.uint8, "slice_index": np.int32, "ct_shape_zyx": np.int64,
    "spacing_xyz_mm": np.float64, "origin_xyz_mm": np.float64, "direction": np.float64,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    raw = tmp_path_factory.mktemp("phantom") / "01_raw"
    summary = generate_cohort(raw, n_studies=len(CONVENTIONS), seed=7, size=PHANTOM_SIZE, workers=2)
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=2)
    return {"raw": raw, "out": out, "summary": summary, **result}


def test_every_study_ok_and_every_convention_met(run):
    rows = run["manifest"]["studies"]
    assert [r["status"] for r in rows] == ["ok"] * len(CONVENTIONS), [(r["pseudonym"], r["reason"]) for r in rows]
    met = {r["scanner_convention"] for r in rows}
    assert len(met) >= 4  # BQML/START (datetime, time only), BQML/ADMIN, CNTS (Philips)


def test_suv_matches_truth_within_one_percent_for_every_convention(run):
    for r in run["manifest"]["studies"]:
        assert r["suv_voxels_compared"] > 100, r["pseudonym"]
        assert r["suv_max_rel_error"] < MAX_SUV_REL_ERROR, (r["scanner_convention"], r["suv_max_rel_error"])


def test_labels_reach_the_dice_targets(run):
    summary = run["manifest"]["summary"]
    for name, target in MIN_MEAN_DICE.items():
        assert summary[f"mean_dice_{name}"] >= target, (name, summary[f"mean_dice_{name}"])


def test_model_input_contract_and_mapping_back(run):
    rows = run["manifest"]["studies"]
    for r in rows:
        npz = np.load(run["out"] / "05_model_input" / f"{r['pseudonym']}.npz", allow_pickle=False)
        for key, dtype in CONTRACT.items():
            assert npz[key].dtype == dtype, key
        s = len(npz["slice_index"])
        assert s == r["slices_kept"] > 0
        assert npz["ct_hu"].shape == npz["suv"].shape == npz["labels"].shape == (s, 256, 256)
        assert str(npz["study"]) == r["pseudonym"]
        assert npz["labels"].max() == 3 and set(np.unique(npz["labels"])) <= {0, 1, 2, 3}
        labels_img = sitk.ReadImage(str(run["out"] / "03_primary" / "labels" / f"{r['pseudonym']}.nii.gz"))
        ct_img = sitk.ReadImage(str(run["out"] / "02_intermediate" / "ct_hu" / f"{r['pseudonym']}.nii.gz"))
        np.testing.assert_allclose(npz["spacing_xyz_mm"], ct_img.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(npz["origin_xyz_mm"], ct_img.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(npz["direction"], ct_img.GetDirection(), atol=1e-6)
        assert tuple(npz["ct_shape_zyx"]) == ct_img.GetSize()[::-1]
        full = sitk.GetArrayFromImage(labels_img)[npz["slice_index"]]
        # every kept slice holds tumour (the paper's defining class), and the 256x256 labels agree
        # with the CT-grid labels after nearest-neighbour resizing back
        assert all((full[i] == 3).any() for i in range(s))
        from colearn_pipeline.dicom.grid import resize_slices

        back = resize_slices(npz["labels"], full.shape[1:], "label")
        assert (back == full).mean() > 0.97
    assert not [p for p in run["out"].rglob("*") if p.is_file() and ".preprocess-staging" in str(p)]


def test_manifest_csv_and_identifier_map(run):
    table = pd.read_csv(run["out"] / "08_reporting" / "preprocess_manifest.csv")
    assert len(table) == len(CONVENTIONS)
    assert {"suv_factor", "scanner_convention", "slices_kept", "dice_tumour", "suv_max_rel_error"} <= set(table.columns)
    assert (table["suv_factor"] > 0).all()
    mapping = pd.read_csv(run["out"] / "local" / "pseudonym_map.csv")
    assert sorted(mapping["pseudonym"]) == sorted(table["pseudonym"])
