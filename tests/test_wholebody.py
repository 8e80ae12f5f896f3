"""Whole-body and non-thorax studies (issue 10): the thorax slab, findings outside it, the not-a-thorax quarantine.

The end-to-end test runs preprocess on a tiny cohort of one whole-body study (skull base to
mid-thigh, PET and CT of different lengths, a pelvic node in the report) and one pelvis study
(about 25 s here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_fixtures import run_preprocess_catalog

from colearn_pipeline.groundtruth import derive_labels, segment_lungs
from colearn_pipeline.groundtruth.quality import thorax_check
from colearn_pipeline.groundtruth.thorax import SEED_OUTSIDE_THORAX, restrict_to_slab, seeds_in_thorax, thorax_extent
from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.generate import NON_THORAX, WHOLEBODY, field_of_view, generate_cohort, generate_study

SPACING_XYZ_MM = (2.0, 2.0, 10.0)
EXTENT = {"min_lung_area_mm2": 500.0, "margin_mm": 30.0}
THORAX = {"min_lung_ml": 500.0, "min_mediastinum_ml": 50.0, "min_lung_balance": 0.2,
          "thorax_body_parts": ["CHEST", "THORAX", "WHOLEBODY"]}
#: Tiny whole-body studies keep the size's 10 mm slices (the cohort default doubles them).
TINY_BODY = {"wholebody_slice_factor": 1.0}


def _lung_column(n_slices: int, lung_slices: range) -> np.ndarray:
    """Two 20x10-voxel "lungs" (2x2 mm pixels: 800 mm² each) on ``lung_slices``; a 4-voxel speck on slice 0."""
    mask = np.zeros((n_slices, 40, 60), bool)
    for k in lung_slices:
        mask[k, 10:30, 5:15] = mask[k, 10:30, 40:50] = True
    mask[0, 0:2, 0:2] = True                      # 16 mm²: a trachea-sized speck, not thorax
    return mask


def test_thorax_extent_is_the_lungs_plus_a_margin():
    mask = _lung_column(30, range(10, 20))
    assert thorax_extent(mask, SPACING_XYZ_MM, **EXTENT) == (7, 22)      # 30 mm = 3 slices each side
    assert thorax_extent(mask, SPACING_XYZ_MM, min_lung_area_mm2=500.0, margin_mm=200.0) == (0, 29)
    assert thorax_extent(np.zeros_like(mask), SPACING_XYZ_MM, **EXTENT) is None
    kept = restrict_to_slab(mask, (7, 22))
    assert not kept[0].any() and kept[10:20].sum() == mask[10:20].sum()
    assert not restrict_to_slab(mask, None).any()
    assert list(seeds_in_thorax([(6.6, 0, 0), (7.2, 5, 5), (22.4, 1, 1), (25, 0, 0)], (7, 22))) == [True, True, True, False]
    assert not seeds_in_thorax([(10, 0, 0)], None).any()


def test_derive_labels_follows_no_seed_outside_the_thorax():
    """A CT with lungs in slices 10-19 and a hot spot in slice 2 (the "bladder"): the seed there is
    listed as not followed and no label is derived outside the slab."""
    ct = np.full((24, 40, 60), 40.0, np.float32)
    ct[:, :, :3] = ct[:, :, -3:] = ct[:, :3, :] = ct[:, -3:, :] = -1000.0       # air around the body
    lungs = _lung_column(24, range(10, 20))
    lungs[0] = False
    ct[lungs] = -850.0
    ct[10:20, 12:28, 22:33] = 40.0                                               # a mediastinum between them
    suv = np.full(ct.shape, 1.0, np.float32)
    suv[2, 18:22, 28:32] = 30.0                                                  # bladder
    suv[14, 18:21, 8:11] = 8.0                                                   # a lung tumour
    labels, info = derive_labels(ct, suv, [(2, 20, 30), (14, 19, 9)], SPACING_XYZ_MM, lungs={"remove_airway": False},
                                 extent=EXTENT)
    assert info["thorax_extent"] == (7, 22)
    assert info["findings_not_followed"] == [{"finding": 0, "reason": SEED_OUTSIDE_THORAX}]
    assert len(info["tumours"]) == 1 and info["tumours"][0]["voxels"] > 0
    assert not labels[:7].any() and not labels[23:].any()
    assert (labels == 3).any() and (labels == 1).any()


def test_field_of_view_by_index_and_non_thorax_wins():
    cfg = C.make_config("tiny", wholebody_every=5, non_thorax_every=10)
    kinds = [field_of_view(cfg, i) for i in range(10)]
    assert kinds[4] == WHOLEBODY and kinds[9] == NON_THORAX
    assert kinds.count("thorax") == 8


def test_wholebody_phantom_study_covers_skull_base_to_thigh_with_organ_uptake(tmp_path):
    s = generate_study(tmp_path, 4, seed=3, size="tiny", wholebody_every=5, **TINY_BODY)
    study = json.loads((tmp_path / s["truth_dir"] / "study.json").read_text())
    assert study["field_of_view"] == WHOLEBODY and study["body_part_examined"] == "WHOLEBODY"
    ct, pet = study["ct_grid"], study["pet_grid"]
    dz = ct["spacing_xyz_mm"][2]
    ct_top = ct["origin_xyz_mm"][2] + (ct["shape_zyx"][0] - 1) * dz
    pet_top = pet["origin_xyz_mm"][2] + (pet["shape_zyx"][0] - 1) * dz
    assert ct_top == pytest.approx(pet_top)                                  # same top, different feet end
    bed_slices = round(C.make_config("tiny").pet_bed_length_mm / dz)
    assert abs(ct["shape_zyx"][0] - pet["shape_zyx"][0]) == bed_slices
    levels = study["levels_mm"]
    assert 850.0 <= levels["z_top"] - levels["z_bottom"] <= 1150.0
    assert 6.0 <= study["brain_suv_true"] <= 10.0 and 3.0 <= study["kidney_suv_true"] <= 5.0
    assert 10.0 <= study["bladder_suv_true"] <= 40.0 and 2.0 <= study["liver_suv_true"] <= 3.0
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / s["truth_dir"] / "labels.nii.gz")))
    z = ct["origin_xyz_mm"][2] + dz * np.arange(truth.shape[0])
    labelled = z[truth.any(axis=(1, 2))]
    assert labelled.min() >= levels["z_thorax_lo"] - 1e-3 and labelled.max() <= levels["z1"] + 1e-3
    report = json.loads((tmp_path / s["report"]).read_text())
    node = study["findings_outside_thorax"][0]["position_mm"]
    assert report["findings"][-1]["position_mm"] == node and node[2] < levels["z_iliac"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    raw = tmp_path_factory.mktemp("body") / "01_raw"
    summary = generate_cohort(raw, n_studies=2, seed=5, size="tiny", workers=1, wholebody_every=1,
                              non_thorax_every=2, **TINY_BODY)
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=0)
    kinds = {s["pseudonym"]: s["field_of_view"] for s in summary["studies"]}
    rows = {kinds[r["pseudonym"]]: r for r in result["manifest"]["studies"]}
    return {"raw": raw, "out": out, "summary": summary, "rows": rows, **result}


@pytest.mark.slow
def test_wholebody_study_is_ok_with_ground_truth_in_the_thorax_only(run):
    row = run["rows"][WHOLEBODY]
    assert row["status"] == "ok", row["reason"]
    assert row["ct_shape_zyx"][0] != row["pet_shape_zyx"][0]               # CT and PET of different lengths
    first, last = row["thorax_extent"]
    assert 0 < first < last < row["ct_shape_zyx"][0] - 1                    # head and pelvis are outside
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(run["out"] / "03_primary" / "labels" / f"{row['pseudonym']}.nii.gz")))
    assert not labels[:first].any() and not labels[last + 1:].any()
    assert row["dice_lung"] >= 0.95 and row["dice_tumour"] > 0.5
    assert row["n_findings_not_followed"] == 1
    assert row["findings_not_followed"] == [{"finding": row["n_findings"] - 1, "kind": "node", "reason": SEED_OUTSIDE_THORAX}]
    assert all(first <= k <= last for k in row["slice_index"])


@pytest.mark.slow
def test_non_thorax_study_is_quarantined_with_the_reason(run):
    row = run["rows"][NON_THORAX]
    assert row["status"] == "quarantined"
    assert row["reason"] == "not a thorax: BodyPartExamined PELVIS"
    # without the header the anatomy says the same: no lung, so no thorax slab
    ct = sitk.ReadImage(str(run["out"] / "02_intermediate" / "ct_hu" / f"{row['pseudonym']}.nii.gz"))
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    lungs = segment_lungs(hu, ct.GetSpacing())
    slab = thorax_extent(lungs, ct.GetSpacing(), **EXTENT)
    assert slab is None
    reason = thorax_check(restrict_to_slab(lungs, slab), np.zeros_like(lungs), ct.GetSpacing(), **THORAX)
    assert reason.startswith("not a thorax: lungs 0 mL")


@pytest.mark.slow
def test_phantom_truth_beside_every_study(run):
    for s in run["summary"]["studies"]:
        truth = Path(run["raw"]) / s["truth_dir"]
        assert all((truth / f).is_file() for f in ("labels.nii.gz", "suv.nii.gz", "study.json"))
    assert run["manifest"]["summary"]["quarantined"] == 1


@pytest.mark.slow
def test_groundtruth_qa_command_leaves_the_non_thorax_study_out_of_its_means(run, capsys):
    from colearn_pipeline.groundtruth.cli import main as groundtruth_qa

    assert groundtruth_qa([str(run["raw"])]) == 0
    printed = capsys.readouterr().out
    pelvis = next(s["pseudonym"] for s in run["summary"]["studies"] if s["field_of_view"] == NON_THORAX)
    assert f"{pelvis:<20} not scored: its truth holds no lung (not a thorax)" in printed
    assert "mean of 1 " in printed
