"""Unit tests of the preprocess helpers: parameters, seeds, storage, model input, manifest order."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from colearn_pipeline.dicom.series import SeriesVolume
from colearn_pipeline.groundtruth import segment_lungs, segment_mediastinum, segment_tumours
from colearn_pipeline.pipelines.preprocess.study import (
    StudyError,
    build_model_input,
    ct_storage_array,
    findings_to_seeds,
    groundtruth_params,
    merge_params,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def _params(env: str = "base") -> dict:
    return yaml.safe_load((CONF / env / "parameters_preprocess.yml").read_text())["preprocess"]


def test_groundtruth_parameters_are_keywords_of_the_functions():
    """Every key of the groundtruth sections reaches a real keyword (a typo would be silently ignored otherwise)."""
    gt = _params()["groundtruth"]
    for section, func in (("lungs", segment_lungs), ("mediastinum", segment_mediastinum), ("tumours", segment_tumours)):
        accepted = set(inspect.signature(func).parameters)
        assert set(gt[section]) <= accepted, (section, set(gt[section]) - accepted)
    assert gt["tumours"]["peak_fraction"] == 0.4  # the paper's 40 % of peak SUV


def test_per_study_overrides_merge_and_unknown_sections_fail():
    params = {"groundtruth": {"tumours": {"peak_fraction": 0.4, "max_radius_mm": 50.0},
                              "overrides": {"study-a": {"tumours": {"peak_fraction": 0.5}}}}}
    assert groundtruth_params(params, "study-a")["tumours"] == {"peak_fraction": 0.5, "max_radius_mm": 50.0}
    assert groundtruth_params(params, "study-b")["tumours"]["peak_fraction"] == 0.4
    params["groundtruth"]["overrides"]["study-c"] = {"tumour": {"peak_fraction": 0.5}}
    with pytest.raises(StudyError, match="unknown groundtruth override sections"):
        groundtruth_params(params, "study-c")
    assert merge_params({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


#: What the demo environment changes in the preprocess parameters (everything else is repeated as in base).
DEMO_CHANGES = {"model_size": [128, 128]}


def test_demo_environment_repeats_base_except_its_changes():
    base, demo = _params(), _params("demo")
    assert {k: v for k, v in demo.items() if k not in DEMO_CHANGES} == {k: v for k, v in base.items() if k not in DEMO_CHANGES}
    assert {k: demo[k] for k in DEMO_CHANGES} == DEMO_CHANGES


def test_findings_to_seeds_uses_the_ct_geometry():
    img = sitk.Image(40, 30, 10, sitk.sitkFloat32)
    img.SetSpacing((0.5, 0.5, 3.0))
    img.SetOrigin((-10.0, 20.0, -100.0))
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))  # x axis runs towards patient right
    seeds = findings_to_seeds([{"position_mm": [-12.0, 21.0, -91.0]}], img, "study-x")
    np.testing.assert_allclose(seeds, [[3.0, 2.0, 4.0]])
    with pytest.raises(StudyError, match="outside the CT volume"):
        findings_to_seeds([{"kind": "node", "position_mm": [0.0, 0.0, 0.0]}], img, "study-x")
    with pytest.raises(StudyError, match="no valid position_mm"):
        findings_to_seeds([{"position_mm": [1.0, 2.0]}], img, "study-x")


def test_ct_storage_is_lossless():
    hu = np.array([[[-1024.0, 0.0, 3071.0]]], np.float32)
    assert ct_storage_array(hu).dtype == np.int16
    frac = hu + 0.5
    assert ct_storage_array(frac).dtype == np.float32


def test_model_input_keys_and_dtypes():
    ct = SeriesVolume(
        array=np.random.default_rng(0).normal(size=(5, 20, 24)).astype(np.float32), datasets=[], files=[],
        spacing_xyz_mm=(1.0, 1.0, 3.0), origin_xyz_mm=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
        study="study-x",
    )
    labels = np.zeros((5, 20, 24), np.uint8)
    labels[2, 5:10, 5:10] = 3
    out = build_model_input(ct, ct.array * 2, labels, np.array([1, 2]), (32, 32))
    assert out["ct_hu"].shape == out["suv"].shape == out["labels"].shape == (2, 32, 32)
    assert out["labels"].dtype == np.uint8 and out["labels"][1].max() == 3
    assert out["slice_index"].dtype == np.int32 and out["ct_shape_zyx"].tolist() == [5, 20, 24]
    assert str(out["study"]) == "study-x" and out["direction"].shape == (9,)


def test_groundtruth_section_mirrors_the_function_defaults():
    """conf/base mirrors the ground-truth code's defaults: change both together.

    Site- or cohort-specific tuning goes in another environment (conf/<env>/parameters_preprocess.yml)
    or in ``groundtruth.overrides`` per study, never silently diverges in base.
    """
    skip = {"return_info", "seeds_zyx", "airway_mask", "allowed_mask", "threshold_hu", "superior_at_high_z"}
    gt = _params()["groundtruth"]
    drift = []
    for section, func in (("lungs", segment_lungs), ("mediastinum", segment_mediastinum), ("tumours", segment_tumours)):
        for name, p in inspect.signature(func).parameters.items():
            if p.default is inspect.Parameter.empty or name in skip:
                continue
            if gt[section].get(name, "<missing>") != p.default:
                drift.append(f"{section}.{name}: yml {gt[section].get(name, '<missing>')!r} != code {p.default!r}")
    assert not drift, "\n".join(drift)


def test_unexpected_failure_quarantines_and_missing_report_can_be_allowed(tmp_path):
    """In-process run (workers 0): a bad override fails its study only; allow_missing_report works."""
    from dicom_fixtures import write_thorax_study

    from colearn_pipeline.dicom import pseudonymise
    from colearn_pipeline.pipelines.preprocess.cohort import run_cohort

    bad = write_thorax_study(tmp_path / "dicom" / "a", reports_dir=tmp_path / "reports")
    unreported = write_thorax_study(tmp_path / "dicom" / "b", with_report=False)
    params = _params()
    params.update(
        raw_dicom_dir=str(tmp_path / "dicom"), reports_dir=str(tmp_path / "reports"), phantom_truth_dir=None,
        workers=0, allow_missing_report=True, slice_selection={"classes": ["lung"], "min_voxels": 1},
    )
    params["groundtruth"]["overrides"] = {pseudonymise(bad["study_uid"]): {"tumours": {"no_such_setting": 1}}}
    rows, extra = run_cohort(params, str(tmp_path / "staging"))
    by = {r["pseudonym"]: r for r in rows}
    failed = by[pseudonymise(bad["study_uid"])]
    assert failed["status"] == "quarantined" and failed["reason"].startswith("unexpected TypeError")
    ok = by[pseudonymise(unreported["study_uid"])]
    assert ok["status"] == "ok" and ok["n_findings"] is None and ok["voxels_tumour"] == 0 and ok["slices_kept"] > 0
    assert set(ok["_staged"]) == {"ct_hu", "suv", "labels", "model_input"}
    assert extra["study_uids"][ok["pseudonym"]] == unreported["study_uid"]
