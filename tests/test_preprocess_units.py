"""Unit tests of the preprocess helpers: strict parameters, seeds, storage, model input, conf consistency."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from colearn_pipeline.groundtruth import segment_lungs, segment_mediastinum, segment_tumours
from colearn_pipeline.pipelines.preprocess.executor import StudyError
from colearn_pipeline.pipelines.preprocess.params import (
    ExecutorParams,
    GroundTruthParams,
    ModelInputParams,
    ParameterError,
    build,
    groundtruth_keywords,
)
from colearn_pipeline.pipelines.preprocess.study import build_model_input, ct_storage_array, findings_to_seeds, write_nifti
from colearn_pipeline.review import GalleryParams

CONF = Path(__file__).resolve().parents[1] / "conf"
FUNCTIONS = {"lungs": segment_lungs, "mediastinum": segment_mediastinum, "tumours": segment_tumours}


def _params(env: str = "base") -> dict:
    return yaml.safe_load((CONF / env / "parameters_preprocess.yml").read_text())["preprocess"]


def test_every_stage_block_of_conf_builds_strictly():
    """Every block of conf/base and conf/demo builds its dataclass (no key missing, none unknown)."""
    from colearn_pipeline.pipelines.preprocess import params as p

    classes = {"executor": p.ExecutorParams, "discover_studies": p.DiscoverParams, "read_series": p.ReadSeriesParams,
               "suv": p.SuvParams, "pet_to_ct": p.PetToCtParams, "phantom_qa": p.PhantomQaParams,
               "model_input": p.ModelInputParams, "manifest": p.ManifestParams, "quality": p.QualityParams,
               "thorax": p.ThoraxParams, "thorax_extent": p.ThoraxExtentParams, "labels": p.LabelsParams,
               "review": GalleryParams}
    for env in ("base", "demo"):
        conf = _params(env)
        assert set(conf) == set(classes) | set(FUNCTIONS), env
        for name, cls in classes.items():
            build(cls, conf[name], f"preprocess.{name}")
        for stage in FUNCTIONS:
            GroundTruthParams.from_conf(stage, conf[stage])


def test_unknown_or_missing_key_fails_with_its_name():
    block = _params()["model_input"]
    with pytest.raises(ParameterError, match=r"preprocess\.model_input\.model_sise"):
        build(ModelInputParams, {**block, "model_sise": [1, 1]}, "preprocess.model_input")
    short = {k: v for k, v in block.items() if k != "compress"}
    with pytest.raises(ParameterError, match=r"missing key\(s\) preprocess\.model_input\.compress"):
        build(ModelInputParams, short, "preprocess.model_input")
    with pytest.raises(ParameterError, match="kind"):
        build(ExecutorParams, {**_params()["executor"], "kind": "slurm"}, "preprocess.executor")
    params = build(ModelInputParams, block, "preprocess.model_input")
    with pytest.raises(AttributeError):
        params.compress = True  # frozen


def test_groundtruth_blocks_are_exactly_the_function_keywords():
    """A ground-truth block must hold every keyword of its science function (and no other), checked at run time."""
    conf = _params()
    for stage, func in FUNCTIONS.items():
        accepted = {n for n, p in inspect.signature(func).parameters.items() if p.kind is p.KEYWORD_ONLY}
        assert set(conf[stage]) - {"overrides"} == groundtruth_keywords(stage) <= accepted
        with pytest.raises(ParameterError, match=f"preprocess.{stage}.no_such_key"):
            GroundTruthParams.from_conf(stage, {**conf[stage], "no_such_key": 1})
        first = sorted(groundtruth_keywords(stage))[0]
        with pytest.raises(ParameterError, match=f"preprocess.{stage}.{first}"):
            GroundTruthParams.from_conf(stage, {k: v for k, v in conf[stage].items() if k != first})
    assert conf["tumours"]["peak_fraction"] == 0.4  # the paper's 40 % of peak SUV


def test_per_study_overrides_apply_to_their_study_only_and_unknown_keys_fail():
    block = {**_params()["tumours"], "overrides": {"study-a": {"peak_fraction": 0.5}}}
    params = GroundTruthParams.from_conf("tumours", block)
    assert params.for_study("study-a")["peak_fraction"] == 0.5
    assert params.for_study("study-b")["peak_fraction"] == 0.4
    assert params.for_study("study-a")["max_radius_mm"] == block["max_radius_mm"]
    block["overrides"] = {"study-c": {"peak_fractoin": 0.5}}
    with pytest.raises(ParameterError, match=r"overrides\.study-c.*peak_fractoin"):
        GroundTruthParams.from_conf("tumours", block)


#: What the demo environment changes in the preprocess parameters (everything else is repeated as in base).
DEMO_CHANGES = {"model_input": {"model_size": [128, 128]}}


def test_demo_environment_repeats_base_except_its_changes():
    base, demo = _params(), _params("demo")
    assert set(base) == set(demo)
    for block in base:
        changed = DEMO_CHANGES.get(block, {})
        assert {k: v for k, v in demo[block].items() if k not in changed} == \
            {k: v for k, v in base[block].items() if k not in changed}, block
        assert {k: demo[block][k] for k in changed} == changed


def test_groundtruth_blocks_mirror_the_function_defaults():
    """conf/base mirrors the ground-truth code's defaults: change both together.

    Site- or cohort-specific tuning goes in another environment (conf/<env>/parameters_preprocess.yml)
    or in a block's ``overrides`` per study, never silently diverges in base. ``superior_at_high_z``
    is null in conf: the lungs stage derives it from the CT direction.
    """
    conf = _params()
    drift = []
    for stage, func in FUNCTIONS.items():
        for name in groundtruth_keywords(stage) - {"superior_at_high_z"}:
            default = inspect.signature(func).parameters[name].default
            if conf[stage][name] != default:
                drift.append(f"{stage}.{name}: yml {conf[stage][name]!r} != code {default!r}")
    assert not drift, "\n".join(drift)
    assert conf["lungs"]["superior_at_high_z"] is None


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


@pytest.mark.parametrize(
    ("values_hu", "stored_dtype"),
    [
        ([-1024.0, -1.0, 0.0, 1.0, 3071.0, -32768.0, 32767.0], np.int16),  # integer HU, int16's whole range
        ([-1024.0, 0.5, 3071.0, -0.25, 12.75], np.float32),                 # fractional HU stay float
        ([-1024.0, 0.0, 32768.0, 40000.0], np.float32),                     # integers beyond int16 stay float
        ([-32769.0, 0.0, 7.0], np.float32),
    ],
)
def test_ct_storage_is_lossless(tmp_path, values_hu, stored_dtype):
    """The staged CT NIfTI gives back exactly the HU it was given, whichever type it is stored as."""
    hu = np.array(values_hu, np.float32).reshape(1, 1, -1)
    stored = ct_storage_array(hu)
    assert stored.dtype == stored_dtype
    np.testing.assert_array_equal(stored.astype(np.float64), hu.astype(np.float64))
    path = write_nifti(sitk.GetImageFromArray(stored), tmp_path / "ct_hu.nii.gz")
    back = sitk.GetArrayFromImage(sitk.ReadImage(path))
    assert back.dtype == stored_dtype
    np.testing.assert_array_equal(back.astype(np.float64), hu.astype(np.float64))


def test_model_input_keys_and_dtypes():
    ct = np.random.default_rng(0).normal(size=(5, 20, 24)).astype(np.float32)
    geometry = {"spacing_xyz_mm": (1.0, 1.0, 3.0), "origin_xyz_mm": (0.0, 0.0, 0.0), "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}
    labels = np.zeros((5, 20, 24), np.uint8)
    labels[2, 5:10, 5:10] = 3
    out = build_model_input(ct.astype(np.int16), ct * 2, labels, np.array([1, 2]), (32, 32), geometry, "study-x")
    assert out["ct_hu"].shape == out["suv"].shape == out["labels"].shape == (2, 32, 32)
    assert out["ct_hu"].dtype == out["suv"].dtype == np.float32
    assert out["labels"].dtype == np.uint8 and out["labels"][1].max() == 3
    assert out["slice_index"].dtype == np.int32 and out["ct_shape_zyx"].tolist() == [5, 20, 24]
    assert str(out["study"]) == "study-x" and out["direction"].shape == (9,)


def test_run_fails_on_a_failed_study_or_no_ok_study_and_warns_above_the_quarantined_fraction(caplog):
    from colearn_pipeline.pipelines.preprocess.manifest import PreprocessRunError, check_outcome

    block = _params()["manifest"]

    def manifest(*statuses):
        rows = [{"pseudonym": f"study-{i}", "status": s} for i, s in enumerate(statuses)]
        return {"summary": {"studies": len(rows), "ok": statuses.count("ok"),
                            "quarantined": statuses.count("quarantined")}, "studies": rows}

    check_outcome(manifest("ok", "ok", "ok", "ok", "ok"), block)
    assert "quarantined (above" not in caplog.text
    check_outcome(manifest("ok", "quarantined"), block)  # quarantined is not a failure of the run ...
    assert "1 of 2 studies quarantined (above 20 %)" in caplog.text  # ... but is loud above the fraction
    with pytest.raises(PreprocessRunError, match="1 studies failed.*study-1"):
        check_outcome(manifest("ok", "failed"), block)
    with pytest.raises(PreprocessRunError, match="no study came out ok"):
        check_outcome(manifest("quarantined", "quarantined"), block)
