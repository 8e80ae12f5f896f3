"""Expert contours as ground truth in preprocess (issue 23): an RTSTRUCT beside a study's images, made on its
CT, replaces the classes it contours; the rest stay derived; the manifest names the sources, the ROI names no
rule maps, and scores the derived labels against the expert's.

Two fixture studies: one with an RTSTRUCT (lungs, GTV, an unmapped "Liver") and a second RTSTRUCT on another
frame of reference (not the study's), one without.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_fixtures import run_preprocess_catalog, thorax_volumes, tiny_phantom_ct, write_thorax_study

from colearn_pipeline.dicom import pseudonymise
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.inference.rtstruct import Algorithm, RoiMask, build_rtstruct

#: The derived labels of a tiny phantom study against its truth (docs/groundtruth.md: demo size 0.99 / 0.94 / 0.93).
MIN_DERIVED_DICE = {"lung": 0.95, "mediastinum": 0.8, "tumour": 0.75}


def _labels(out, pseudonym):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out / "03_primary" / "labels" / f"{pseudonym}.nii.gz")))


def _expert_masks():
    """The fixture's true lungs and a GTV (the tumour sphere), on the CT grid of :func:`thorax_volumes`."""
    ct, suv, _ = thorax_volumes()
    gtv = suv == 8.0
    lungs = (ct == -850.0) & ~gtv
    liver = np.zeros_like(gtv)
    liver[2:4, 30:34, 20:26] = True
    return lungs, gtv, liver


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    raw, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("out")
    studies = {}
    for key in ("expert", "plain", "separate", "no_report"):
        s = write_thorax_study(raw / "dicom" / key, reports_dir=raw / "reports", with_report=key != "no_report")
        studies[key] = {**s, "pseudonym": pseudonymise(s["study_uid"])}
    ct = read_series([str(p) for p in studies["expert"]["ct_files"]], studies["expert"]["pseudonym"])
    lungs, gtv, liver = _expert_masks()
    rois = [RoiMask("Lung_total", lungs), RoiMask("GTV_primary", gtv, "GTV"), RoiMask("Liver", liver)]
    ds = build_rtstruct(ct.datasets, rois, algorithm=Algorithm("expert", "1", "MANUAL"))
    ds.save_as(raw / "dicom" / "expert" / "rtss.dcm", enforce_file_format=True)
    other = build_rtstruct(ct.datasets, [RoiMask("GTV_other", lungs)], algorithm=Algorithm("x", "1"))
    other.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.826.0.1.3680043.99.1"
    other.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID = "1.2.826.0.1.3680043.99.2"
    for item in other.StructureSetROISequence:
        item.ReferencedFrameOfReferenceUID = "1.2.826.0.1.3680043.99.1"
    other.save_as(raw / "dicom" / "expert" / "other_scan_rtss.dcm", enforce_file_format=True)
    # a planning system that gave its structure set a StudyInstanceUID of its own: a GTV only
    ct_separate = read_series([str(p) for p in studies["separate"]["ct_files"]], studies["separate"]["pseudonym"])
    separate = build_rtstruct(ct_separate.datasets, [RoiMask("GTV", gtv, "GTV")], algorithm=Algorithm("tps", "1"))
    separate.StudyInstanceUID = "1.2.826.0.1.3680043.99.3"
    separate.save_as(raw / "dicom" / "separate" / "rtss.dcm", enforce_file_format=True)
    # no report, but the expert's GTV: labelled, so the study gets model input
    ct_no_report = read_series([str(p) for p in studies["no_report"]["ct_files"]], studies["no_report"]["pseudonym"])
    no_report = build_rtstruct(ct_no_report.datasets, [RoiMask("GTV", gtv, "GTV")], algorithm=Algorithm("tps", "1"))
    no_report.save_as(raw / "dicom" / "no_report" / "rtss.dcm", enforce_file_format=True)
    result = run_preprocess_catalog(raw, out, workers=0, manifest={"max_quarantined_fraction": 1.0})
    return {"studies": studies, "out": out, "rows": {r["pseudonym"]: r for r in result["manifest"]["studies"]},
            "summary": result["manifest"]["summary"], "masks": (lungs, gtv)}


def test_expert_classes_replace_the_derived_ones_and_the_manifest_says_so(runs):
    pseudonym = runs["studies"]["expert"]["pseudonym"]
    row = runs["rows"][pseudonym]
    assert row["status"] == "ok", row
    assert row["labels_source"] == "expert"
    assert row["expert_classes"] == ["lung", "tumour"]
    assert row["labels_from_derived"] == ["mediastinum"]
    assert row["expert_unmapped_rois"] == ["Liver"]
    assert len(row["expert_files"]) == 1 and row["expert_files"][0].startswith("file-")  # by label, not by name
    lungs, gtv = runs["masks"]
    labels = _labels(runs["out"], pseudonym)
    np.testing.assert_array_equal(labels == LABELS["tumour"], gtv)
    np.testing.assert_array_equal(labels == LABELS["lung"], lungs)
    assert (labels == LABELS["mediastinum"]).sum() > 0  # from the derived labels
    assert row["voxels_tumour"] == int(gtv.sum())


def test_derived_labels_are_scored_against_the_expert(runs):
    row = runs["rows"][runs["studies"]["expert"]["pseudonym"]]
    for name in ("lung", "tumour"):
        assert 0.5 < row[f"expert_dice_{name}"] <= 1.0, row
        assert 0.5 < row[f"expert_volume_ratio_{name}"] < 2.0, row
        assert 0.0 <= row[f"expert_msd_mm_{name}"] < 10.0, row
        assert set(row["expert_agreement"][name]) == {"dice", "volume_ratio", "mean_surface_distance_mm"}
    assert row["expert_dice_mediastinum"] is None  # the expert drew none
    assert runs["summary"]["labels_expert"] == 3
    others = [runs["rows"][runs["studies"][k]["pseudonym"]]["expert_dice_tumour"] for k in ("separate", "no_report")]
    mean = (row["expert_dice_tumour"] + sum(others)) / 3
    assert runs["summary"]["mean_expert_dice_tumour"] == pytest.approx(mean)


def test_structure_set_in_a_study_of_its_own_is_found_by_its_references(runs):
    row = runs["rows"][runs["studies"]["separate"]["pseudonym"]]
    assert row["status"] == "ok" and row["labels_source"] == "expert", row
    assert row["expert_classes"] == ["tumour"] and row["labels_from_derived"] == ["lung", "mediastinum"]
    np.testing.assert_array_equal(_labels(runs["out"], runs["studies"]["separate"]["pseudonym"]) == 3, runs["masks"][1])


def test_study_without_expert_contours_stays_derived(runs):
    row = runs["rows"][runs["studies"]["plain"]["pseudonym"]]
    assert row["status"] == "ok" and row["labels_source"] == "derived", row
    assert row["expert_classes"] is None and row["expert_dice_tumour"] is None


def test_manifest_csv_lists_the_expert_columns(runs):
    import pandas as pd

    table = pd.read_csv(runs["out"] / "08_reporting" / "preprocess_manifest.csv")
    row = table.set_index("pseudonym").loc[runs["studies"]["expert"]["pseudonym"]]
    assert row["expert_classes"] == "lung tumour" and row["expert_unmapped_rois"] == "Liver"
    assert row["labels_source"] == "expert"


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """A tiny phantom study exported with an RTSTRUCT of its truth beside its images."""
    raw = tmp_path_factory.mktemp("phantom")
    pseudonym, _, ct, truth = tiny_phantom_ct(raw)
    rois = [RoiMask("Lungs", truth == 1), RoiMask("Mediastinum", truth == 2), RoiMask("GTV", truth == 3, "GTV")]
    ds = build_rtstruct(ct.datasets, rois, algorithm=Algorithm("phantom truth", "1", "MANUAL"))
    ds.save_as(raw / "dicom" / "truth_rtss.dcm", enforce_file_format=True)
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=0)
    (row,) = result["manifest"]["studies"]
    return {"row": row, "truth": truth, "labels": _labels(out, pseudonym)}


@pytest.mark.slow
def test_phantom_truth_rtstruct_is_the_ground_truth_and_scores_the_derived_labels(phantom_run):
    row = phantom_run["row"]
    assert row["status"] == "ok" and row["labels_source"] == "expert", row
    assert row["expert_classes"] == ["lung", "mediastinum", "tumour"] and row["labels_from_derived"] == []
    np.testing.assert_array_equal(phantom_run["labels"], phantom_run["truth"])  # rasterised back exactly
    for name in ("lung", "mediastinum", "tumour"):
        assert row[f"dice_{name}"] == 1.0  # the labels used are the truth ...
        # ... and the derived labels, scored against it, are as good as the phantom QA finds them elsewhere
        assert row[f"expert_dice_{name}"] >= MIN_DERIVED_DICE[name], (name, row[f"expert_dice_{name}"])


def test_mlflow_gets_the_agreement_figures_as_metrics(runs, tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from colearn_pipeline.hooks import MlflowHooks

    class Catalog:  # what the hooks use of a Kedro catalog
        def __contains__(self, name):
            return name == "parameters"

        def load(self, name):
            return {"mlflow": {"enabled": True, "tracking_uri": None, "experiment_name": "expert",
                               "log_models": False, "fail_on_logging_error": True}}

        def get(self, name):
            return SimpleNamespace(metadata={"preprocess_manifest": {"mlflow": "manifest"}}.get(name))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    hooks = MlflowHooks()
    hooks.before_pipeline_run({"project_path": str(tmp_path), "pipeline_names": ["preprocess"]}, None, Catalog())
    manifest = json.loads((runs["out"] / "08_reporting" / "preprocess_manifest.json").read_text())
    hooks.after_dataset_saved("preprocess_manifest", manifest, None)
    run_id = hooks.parent_run_id
    hooks.after_pipeline_run({}, {}, None, None)
    metrics = MlflowClient(uri).get_run(run_id).data.metrics
    pseudonym = runs["studies"]["expert"]["pseudonym"]
    row = runs["rows"][pseudonym]
    for name in ("lung", "tumour"):
        assert metrics[f"expert_dice_{name}/{pseudonym}"] == pytest.approx(row[f"expert_dice_{name}"])
        assert metrics[f"expert_msd_mm_{name}/{pseudonym}"] == pytest.approx(row[f"expert_msd_mm_{name}"])
    assert metrics["mean_expert_dice_tumour"] == pytest.approx(runs["summary"]["mean_expert_dice_tumour"])
    assert metrics["labels_expert"] == 3.0
    assert f"expert_dice_mediastinum/{pseudonym}" not in metrics  # not contoured: no figure


def test_study_without_report_is_labelled_by_the_expert_gtv(runs):
    pseudonym = runs["studies"]["no_report"]["pseudonym"]
    row = runs["rows"][pseudonym]
    assert row["status"] == "ok" and row["has_report"] is False and row["labels_source"] == "expert", row
    gtv_slices = np.flatnonzero(runs["masks"][1].any(axis=(1, 2)))
    model_input = np.load(runs["out"] / "05_model_input" / f"{pseudonym}.npz")
    # every thorax slice is kept; those flagged as holding tumour are the expert GTV's slices
    assert set(gtv_slices.tolist()) <= set(row["slice_index"])
    assert model_input["slice_index"][model_input["has_tumour"]].tolist() == gtv_slices.tolist()


def test_per_study_rules_replace_the_cohort_s():
    from colearn_pipeline.pipelines.preprocess.params import (
        ExpertParams,
        ParameterError,
    )

    params = ExpertParams(enabled=True, slice_tolerance_fraction=0.5, roi_classes=(("GTV*", "tumour"),),
                          overrides={"study-0000000001": (("Poumon*", "lung"),)})
    assert params.rules_for("study-0000000001") == {"Poumon*": "lung"}
    assert params.rules_for("study-0000000002") == {"GTV*": "tumour"}
    with pytest.raises(ParameterError, match="preprocess.labels.expert: .*'lungs' is not one of"):
        ExpertParams(True, 0.5, (("L*", "lungs"),), {}).rules_for("study-0000000002")
