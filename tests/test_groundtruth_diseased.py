"""Ground truth on diseased lungs (issue 23): large primaries, consolidated lung, pleural effusion.

Three demo-size phantom studies, one per disease (``colearn_pipeline.phantom.disease``), scored
against their truth by :mod:`colearn_pipeline.groundtruth.phantom_qa` as the command
``python -m colearn_pipeline.groundtruth RAW_DIR`` does; the truth follows radiotherapy contouring
atlases: consolidated lung is lung, pleural effusion is neither lung nor mediastinum. Plus what the
diseases do to the phantom itself (a healthy study stays byte for byte as it was).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from colearn_pipeline.dicom import resample_to_reference
from colearn_pipeline.groundtruth import LABELS, derive_labels
from colearn_pipeline.groundtruth import phantom_qa as qa
from colearn_pipeline.groundtruth.quality import review_reasons
from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom import generate_study, make_config
from colearn_pipeline.phantom.anatomy import rasterise, sample_anatomy
from colearn_pipeline.phantom.disease import (
    disease_kinds,
    paint_consolidation,
    paint_effusion,
)
from colearn_pipeline.phantom.generate import study_streams
from colearn_pipeline.phantom.geometry import Grid
from colearn_pipeline.phantom.imaging import labels_from_tissue

#: Per study: the issue's lung and tumour targets (0.98, 0.90; they are cohort means) and the
#: mediastinum floor of every single study in tests/test_groundtruth_phantom.py (the mean's 0.93 is
#: checked on the cohort; study 0's healthy anatomy alone gives 0.90, docs/groundtruth.md).
TARGETS = {"lung": 0.98, "mediastinum": 0.88, "tumour": 0.90}
#: Study index -> the option that gives it its disease (index % n == n - 1).
DISEASED = {0: {"large_primary_every": 1}, 1: {"consolidation_every": 2}, 2: {"effusion_every": 3}}
#: conf/base/parameters_preprocess.yml groundtruth.quality, the figures derive_labels scores.
QUALITY = {"hull_margin_mm": 3.0, "lung_ml": [1000.0, 9000.0], "mediastinum_ml": [500.0, 2500.0],
           "max_mediastinum_outside_hull": 0.05, "min_lung_balance": 0.3, "max_tumour_ml": 500.0,
           "min_peak_to_threshold": 1.3, "capped_is_review": True}


@pytest.fixture(scope="module")
def diseased(tmp_path_factory) -> dict[str, dict]:
    """``{disease: {"raw", "truth", "report", "result"}}`` of the three demo studies."""
    out = {}
    for index, option in DISEASED.items():
        raw = tmp_path_factory.mktemp(f"diseased{index}")
        summary = generate_study(raw, index=index, size="demo", **option)
        (kind,) = summary["disease"]
        truth = json.loads((raw / summary["truth_dir"] / "study.json").read_text())
        report = json.loads((raw / summary["report"]).read_text())
        (result,) = qa.evaluate_cohort(raw)
        out[kind] = {"raw": raw, "truth": truth, "report": report, "result": result}
    return out


def _assert_targets(result: dict) -> None:
    for name, floor in TARGETS.items():
        assert result[f"dice_{name}"] >= floor, {k: round(result[f"dice_{k}"], 3) for k in TARGETS}


@pytest.mark.slow
def test_large_primary_against_the_mediastinum_is_labelled_not_capped(diseased):
    study = diseased["large_primary"]
    primary = study["truth"]["lesions"][0]
    assert primary["kind"] == "primary" and primary["placement"] == "mediastinal"
    assert 60.0 <= primary["size_mm"] <= 130.0, primary["size_mm"]
    assert study["report"]["findings"][0]["size_mm"] == round(primary["size_mm"])
    result = study["result"]
    _assert_targets(result)
    first = result["tumours"][0]
    assert not first["capped"] and first["peak_fraction"] == pytest.approx(0.4)
    assert first["cap_radius_mm"] > 50.0  # the fixed 50 mm ball would have cut it


@pytest.mark.slow
def test_large_primary_without_a_stated_size_closes_in_a_larger_ball(diseased):
    study = diseased["large_primary"]
    raw = study["raw"]
    report = {**study["report"], "findings": [{k: v for k, v in f.items() if k != "size_mm"}
                                               for f in study["report"]["findings"]]}
    (ct_study,) = qa.find_ct_studies(raw / "dicom").values()
    ct = qa.read_ct(ct_study, raw / "dicom")
    result = qa.evaluate_study(ct, raw / "phantom_truth" / study["truth"]["pseudonym"], report)
    assert result["dice_tumour"] >= TARGETS["tumour"]
    assert not result["tumours"][0]["capped"] and result["tumours"][0]["peak_fraction"] == pytest.approx(0.4)


@pytest.mark.slow
def test_large_primary_passes_the_quality_review(diseased):
    # what preprocess quarantines on: no "needs review" reason (size cap, volume, balance, ...)
    study = diseased["large_primary"]
    raw = study["raw"]
    (ct_study,) = qa.find_ct_studies(raw / "dicom").values()
    ct = qa.read_ct(ct_study, raw / "dicom")
    truth_dir = raw / "phantom_truth" / study["truth"]["pseudonym"]
    suv = resample_to_reference(sitk.Cast(sitk.ReadImage(str(truth_dir / "suv.nii.gz")), sitk.sitkFloat32), ct)
    _, info = derive_labels(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(suv), qa.report_seeds_zyx(
        study["report"], ct), ct.GetSpacing(), quality=QUALITY,
        sizes_mm=[f.get("size_mm") for f in study["report"]["findings"]])
    assert info["review_reasons"] == []
    assert review_reasons(info["quality"], {k: v for k, v in QUALITY.items() if k != "hull_margin_mm"}) == []


@pytest.mark.slow
def test_large_primary_comes_out_of_preprocess_labelled_not_quarantined(diseased, tmp_path):
    # the production path: DICOM PET -> SUV -> CT grid, the report's size_mm through discover_studies
    from dicom_fixtures import run_preprocess_catalog

    study = diseased["large_primary"]
    run = run_preprocess_catalog(study["raw"], tmp_path / "data", workers=1)
    (row,) = run["manifest"]["studies"]
    assert row["status"] == "ok" and row["labels_source"] == "derived", row.get("reason")
    assert row["tumours_capped"] == 0
    assert row["tumour_ml"][0] > 100.0  # the whole primary, not its hot core
    assert row["dice_tumour"] >= TARGETS["tumour"]


@pytest.mark.slow
def test_consolidated_lung_is_lung_not_mediastinum(diseased):
    study = diseased["consolidation"]
    assert study["truth"]["disease"]["consolidation"]["voxels"] > 0
    result = study["result"]
    _assert_targets(result)
    # most of the airless lung is found (the rest: its bottom on the diaphragm, the seam)
    assert result["lungs"]["consolidated_voxels"] >= 0.7 * study["truth"]["disease"]["consolidation"]["voxels"]


@pytest.mark.slow
def test_pleural_effusion_is_neither_lung_nor_mediastinum(diseased):
    study = diseased["effusion"]
    assert study["truth"]["disease"]["effusion"]["voxels"] > 0
    result = study["result"]
    _assert_targets(result)
    # derived lung where the truth has none: fluid (0-20 HU) is not taken for airless lung (what the
    # airless-lung step adds here is tumour bordered by lung, which the tumour label covers)
    derived, truth = result["derived_voxels_lung"], result["truth_voxels_lung"]
    false_lung = derived - result["dice_lung"] * (derived + truth) / 2.0
    assert false_lung < 0.25 * study["truth"]["disease"]["effusion"]["voxels"], false_lung


# ---------------------------------------------------------------- the phantom's diseases
def test_disease_kinds_follow_the_study_index():
    cfg = make_config("tiny", large_primary_every=7, consolidation_every=8, effusion_every=11)
    assert disease_kinds(cfg, 6) == ("large_primary",)
    assert disease_kinds(cfg, 7) == ("consolidation",)
    assert disease_kinds(cfg, 10) == ("effusion",)
    assert disease_kinds(cfg, 55) == ("large_primary", "consolidation")
    assert disease_kinds(cfg, 0) == () and disease_kinds(make_config("tiny"), 6) == ()


def test_a_healthy_study_is_unchanged_by_the_disease_options(tmp_path):
    plain = generate_study(tmp_path / "a", index=0, seed=3, size="tiny")
    options = generate_study(tmp_path / "b", index=0, seed=3, size="tiny", large_primary_every=7,
                             consolidation_every=8, effusion_every=11)
    assert plain["pseudonym"] == options["pseudonym"] and options["disease"] == []
    for name in ("labels.nii.gz", "suv.nii.gz"):
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(root / plain["truth_dir"] / name)))
                for root in (tmp_path / "a", tmp_path / "b"))
        assert np.array_equal(a, b), name


def _tissue(seed: int = 5):
    grid = Grid((40, 128, 128), (3.9, 3.9, 6.0), (-248.0, -248.0, -300.0))
    rngs = study_streams(seed, 0)
    anat = sample_anatomy(rngs["anatomy"], -300.0, -300.0 + 39 * 6.0, 75.0, 1.75)
    return anat, grid, rasterise(anat, grid), rngs["disease"]


def test_effusion_is_posterior_pleural_fluid_labelled_background():
    anat, grid, tissue, rng = _tissue()
    lung_before = np.isin(tissue, (C.LUNG, C.LUNG_VESSEL)).sum()
    info = paint_effusion(anat, grid, tissue, rng, make_config("tiny"))
    fluid = tissue == C.EFFUSION
    assert info["voxels"] == fluid.sum() > 0
    assert np.isin(tissue, (C.LUNG, C.LUNG_VESSEL)).sum() == lung_before - info["voxels"]  # it replaced lung
    assert (labels_from_tissue(tissue)[fluid] == LABELS["background"]).all()
    z, y, _ = np.nonzero(fluid)
    assert np.median(grid.axis_mm("y")[y]) > anat.cy  # dependent: behind the body's centre (supine)
    assert grid.axis_mm("z")[z].min() < max(anat.dome_top.values())  # down at the bases


def test_consolidation_is_airless_lung_labelled_lung():
    anat, grid, tissue, rng = _tissue()
    info = paint_consolidation(anat, grid, tissue, rng, make_config("tiny"))
    airless = tissue == C.ATELECTASIS
    assert info["voxels"] == airless.sum() > 0
    assert (labels_from_tissue(tissue)[airless] == LABELS["lung"]).all()
    _, _, x = np.nonzero(airless)
    on_left = np.median(grid.axis_mm("x")[x]) > anat.cx
    assert on_left == (info["side"] == "left")
