"""Issue 25: inconsistent series are set aside with a named reason, never come out "ok" with wrong numbers.

Tiny phantom studies (``colearn_pipeline.phantom``, all of one BQML/START convention) are edited with
pydicom here, one problem per study: a second copy of a PET slice with another RescaleSlope, a PET
missing its lower half, one PET slice scaled 10x, a wrong weight (caught by the phantom's truth),
a dynamic PET, a self-referencing link. The preprocess pipeline runs once over them with the
project's rules and once with the other rules (crop to the PET, nearest frame of a dynamic PET).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_fixtures import run_preprocess_catalog
from pydicom.uid import generate_uid

from colearn_pipeline.dicom import discover, file_label, read_series
from colearn_pipeline.dicom.grid import pet_covered_slices, slices_with_pet
from colearn_pipeline.phantom.config import CONVENTIONS
from colearn_pipeline.phantom.generate import generate_study

SEED = 25
#: Every study in one convention (Units BQML, DecayCorrection START), so RescaleSlope is the only scale.
CONVENTION = CONVENTIONS[0]
#: Seconds the second frame of the dynamic PET starts after the first.
SECOND_FRAME_DELAY_S = 30 * 60


def _study(raw: Path, index: int) -> dict:
    summary = generate_study(raw, index, seed=SEED, size="tiny", convention=CONVENTION)
    files = sorted(p for p in (raw / summary["dicom_dir"]).rglob("*") if p.is_file())
    headers = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in files}
    pet = sorted((p for p in files if headers[p].Modality == "PT"), key=lambda p: float(headers[p].ImagePositionPatient[2]))
    ct = sorted((p for p in files if headers[p].Modality == "CT"), key=lambda p: float(headers[p].ImagePositionPatient[2]))
    return {**summary, "pet": pet, "ct": ct}


def _label(raw: Path, path: Path) -> str:
    return file_label(os.path.relpath(path, raw / "dicom"))


def _slope_copy(study: dict, factor: float) -> Path:
    """A second export of a middle PET slice: same SOPInstanceUID and pixels, RescaleSlope times ``factor``."""
    original = study["pet"][len(study["pet"]) // 2]
    ds = pydicom.dcmread(original)
    ds.RescaleSlope = f"{float(ds.RescaleSlope) * factor:.10g}"
    copy = original.with_name("copy_" + original.name)
    ds.save_as(copy)
    return copy


def _drop_lower_half(study: dict) -> None:
    for path in study["pet"][: len(study["pet"]) // 2]:  # sorted by z: the inferior half
        path.unlink()


def _scale_one_slice(study: dict, factor: float) -> Path:
    path = study["pet"][len(study["pet"]) // 2 + 2]
    ds = pydicom.dcmread(path)
    ds.RescaleSlope = f"{float(ds.RescaleSlope) * factor:.10g}"
    ds.save_as(path)
    return path


def _wrong_weight(study: dict, factor: float) -> None:
    for path in study["pet"]:
        ds = pydicom.dcmread(path)
        ds.PatientWeight = f"{float(ds.PatientWeight) * factor:.4g}"
        ds.save_as(path)


def _shift_time(text: str, seconds: int) -> str:
    hh, mm, ss = int(text[0:2]), int(text[2:4]), int(text[4:6])
    total = hh * 3600 + mm * 60 + ss + seconds
    return f"{total // 3600:02d}{total % 3600 // 60:02d}{total % 60:02d}{text[6:]}"


def _make_dynamic(study: dict) -> None:
    """A second frame at every PET position, started 30 min later (other SOPInstanceUIDs, decayed counts)."""
    for path in study["pet"]:
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AcquisitionTime = _shift_time(str(ds.AcquisitionTime), SECOND_FRAME_DELAY_S)
        if ds.get("AcquisitionDateTime"):
            text = str(ds.AcquisitionDateTime)
            ds.AcquisitionDateTime = text[:8] + _shift_time(text[8:], SECOND_FRAME_DELAY_S)
        if ds.get("FrameReferenceTime") is not None:
            ds.FrameReferenceTime = float(ds.FrameReferenceTime) + SECOND_FRAME_DELAY_S * 1000.0
        ds.PixelData = (ds.pixel_array * 0.8).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(path.with_name("frame2_" + path.name))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    studies = {key: _study(raw, i) for i, key in enumerate(
        ["good", "duplicate_slope", "pet_lower_half", "slice_scale", "weight", "dynamic"])}
    studies["duplicate_slope"]["copy"] = _slope_copy(studies["duplicate_slope"], 10.0)
    _drop_lower_half(studies["pet_lower_half"])
    studies["slice_scale"]["scaled"] = _scale_one_slice(studies["slice_scale"], 10.0)
    _wrong_weight(studies["weight"], 1.25)
    _make_dynamic(studies["dynamic"])
    loop = raw / "dicom" / "loop.dcm"
    loop.symlink_to(loop.name)  # a link to itself
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=2)
    return {"raw": raw, "out": out, "studies": studies, "loop": loop, **result}


@pytest.fixture(scope="module")
def other_rules(tmp_path_factory):
    """The PET missing its lower half cut to the PET, the dynamic PET reduced to its frame nearest 60 min."""
    raw = tmp_path_factory.mktemp("raw_rules")
    studies = {"pet_lower_half": _study(raw, 2), "dynamic": _study(raw, 5)}
    _drop_lower_half(studies["pet_lower_half"])
    _make_dynamic(studies["dynamic"])
    out = tmp_path_factory.mktemp("out_rules")
    result = run_preprocess_catalog(raw, out, workers=2, thorax_extent={"outside_pet": "crop"},
                                    read_series={"dynamic_pet": "nearest_uptake_time"})
    return {"raw": raw, "out": out, "studies": studies, **result}


def _row(run: dict, key: str) -> dict:
    pseudonym = run["studies"][key]["pseudonym"]
    (row,) = [r for r in run["manifest"]["studies"] if r["pseudonym"] == pseudonym]
    return row


def _set_aside(run: dict, key: str, stage: str, *needles: str) -> dict:
    row = _row(run, key)
    assert row["status"] == "quarantined" and row["stage"] == stage, row
    text = f"{row['file']}: {row['reason']}"
    for needle in needles:
        assert needle in text, text
    assert not (run["out"] / "05_model_input" / f"{row['pseudonym']}.npz").exists()
    return row


def test_good_study_is_ok_and_its_coverage_recorded(cohort):
    row = _row(cohort, "good")
    assert row["status"] == "ok", row
    assert row["pet_covered_slices"] == [0, row["ct_shape_zyx"][0] - 1] and row["ct_slices_without_pet"] == 0


def test_two_copies_of_a_slice_with_different_rescale_slope_set_the_study_aside(cohort):
    s = cohort["studies"]["duplicate_slope"]
    original, copy = _label(cohort["raw"], s["pet"][len(s["pet"]) // 2]), _label(cohort["raw"], s["copy"])
    row = _set_aside(cohort, "duplicate_slope", "read_series", "same SOPInstanceUID", "RescaleSlope")
    assert {row["file"], copy, original} == {copy, original} and ({copy, original} - {row["file"]}).pop() in row["reason"]
    assert s["copy"].name not in row["reason"]


def test_duplicate_verdict_does_not_depend_on_file_names(tmp_path):
    """Shuffle the PET file names (four times): the same refusal, naming both files and the attribute."""
    raw = tmp_path / "raw"
    study = _study(raw, 1)
    copy = _slope_copy(study, 2.0)
    original = study["pet"][len(study["pet"]) // 2]
    folder = original.parent
    names = sorted(p.name for p in folder.iterdir())
    rng = random.Random(SEED)
    verdicts = set()
    for _ in range(4):
        contents = {p.name: p.read_bytes() for p in folder.iterdir()}
        shuffled = names[:]
        rng.shuffle(shuffled)
        renamed = dict(zip(names, shuffled))
        for old, data in contents.items():
            (folder / old).unlink()
        for old, data in contents.items():
            (folder / renamed[old]).write_bytes(data)
        names = [renamed[n] for n in names]
        original, copy = folder / renamed[original.name], folder / renamed[copy.name]
        found = discover(raw / "dicom").studies[study["pseudonym"]]
        labels = {_label(raw, original), _label(raw, copy)}
        assert len(found.corrupt) == 1, found.corrupt
        file, reason = found.corrupt[0]
        assert file == min(labels) and f"same SOPInstanceUID as {max(labels)} but RescaleSlope" in reason, reason
        slopes = reason.split("RescaleSlope ")[1].split(" differs")[0].split(" vs ")
        by_label = {_label(raw, original): 1.0, _label(raw, copy): 2.0}
        assert float(slopes[1]) / float(slopes[0]) == pytest.approx(by_label[max(labels)] / by_label[min(labels)], rel=1e-4)
        verdicts.add(reason.replace(max(labels), "<other>").split(" RescaleSlope")[0])
    assert len(verdicts) == 1


def test_identical_copies_at_one_position_are_kept_once_in_any_order(tmp_path):
    raw = tmp_path / "raw"
    study = _study(raw, 0)
    middle = study["pet"][len(study["pet"]) // 2]
    ds = pydicom.dcmread(middle)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # another object, same content
    twin = middle.with_name("twin_" + middle.name)
    ds.save_as(twin)
    plain = read_series(study["pet"], "s")
    for files in (study["pet"] + [twin], [twin, *reversed(study["pet"])]):
        vol = read_series(files, "s")
        np.testing.assert_array_equal(vol.array, plain.array)
        assert len(vol.notes) == 1 and "identical duplicate at one position" in vol.notes[0]


def test_pet_missing_its_lower_half_is_refused_for_coverage(cohort):
    row = _set_aside(cohort, "pet_lower_half", "lungs", "coverage: the PET covers CT slices",
                     "outside_pet: refuse")
    assert "size cap" not in row["reason"]
    assert row["pet_covered_slices"][0] > 0 and row["ct_slices_without_pet"] > 0


def test_pet_missing_its_lower_half_cropped_by_rule(other_rules):
    row = _row(other_rules, "pet_lower_half")
    assert row["status"] == "ok", row
    first, last = row["pet_covered_slices"]
    assert first > 0 and last == row["ct_shape_zyx"][0] - 1
    assert row["thorax_extent"][0] >= first and all(first <= z <= last for z in row["slice_index"])
    npz = np.load(other_rules["out"] / "05_model_input" / f"{row['pseudonym']}.npz")
    assert (npz["suv"].reshape(len(npz["suv"]), -1).max(axis=1) > 0).all()  # no slice of the model input without PET


def test_predict_masks_the_slices_without_pet(tmp_path, caplog):
    raw = tmp_path / "raw"
    study = _study(raw, 2)
    _drop_lower_half(study)
    ct, pet = read_series(study["ct"], "s"), read_series(study["pet"][len(study["pet"]) // 2:], "s")
    first, last = pet_covered_slices(ct, pet)
    assert first > 0 and last == ct.shape_zyx[0] - 1
    with caplog.at_level(logging.WARNING, logger="colearn_pipeline.dicom.grid"):
        kept = slices_with_pet(np.arange(ct.shape_zyx[0]), ct, pet, "s")
    assert kept.tolist() == list(range(first, last + 1))
    assert "CT slices 0, 1" in caplog.text and "outside the PET's field of view" in caplog.text
    with pytest.raises(Exception, match="coverage: the PET covers none"):
        slices_with_pet(np.arange(first), ct, pet, "s")


def test_one_pet_slice_scaled_ten_times_is_refused_naming_the_slice(cohort):
    s = cohort["studies"]["slice_scale"]
    label = _label(cohort["raw"], s["scaled"])
    row = _set_aside(cohort, "slice_scale", "suv", "SUV continuity", "by more than a factor 3")
    assert row["file"] == label and f"slice {len(s['pet']) // 2 + 2} ({label})" in row["reason"]


def test_suv_error_against_phantom_truth_beyond_tolerance_fails_the_study(cohort):
    row = _set_aside(cohort, "weight", "suv", "SUV against the phantom's truth", "phantom_qa.max_suv_rel_error")
    assert "0.25" in row["reason"] or "0.2" in row["reason"]


def test_dynamic_pet_is_named_and_refused_by_default(cohort):
    _set_aside(cohort, "dynamic", "read_series", "dynamic PET: 2 frames per position", "refused",
               "read_series.dynamic_pet: refuse")


def test_dynamic_pet_reduced_to_the_frame_nearest_the_uptake_time(other_rules):
    row = _row(other_rules, "dynamic")
    assert row["status"] == "ok", row
    assert "dynamic PET: 2 frames per position" in row["series_notes"] and "kept frame 1" in row["series_notes"]
    assert row["suv_max_rel_error"] < 0.01  # the first frame, the one the truth describes


def test_self_referencing_link_is_called_a_loop(cohort):
    skipped = {s["file"]: s["reason"] for s in cohort["manifest"]["skipped_files"]}
    reason = skipped[_label(cohort["raw"], cohort["loop"])]
    assert reason.startswith("symbolic link loop") and "broken" not in reason


@pytest.mark.slow
def test_continuity_passes_a_whole_body_neck_to_brain_and_catches_a_rescaled_slice(tmp_path):
    """The demo cohort's whole-body study 4: its partial-volume slice between neck (SUV ~0.6) and brain (~8.7)
    departs from one side only and passes; the same study with one slice 10x is refused."""
    import SimpleITK as sitk
    import yaml

    from colearn_pipeline.suv import SuvError, check_slice_continuity
    from colearn_pipeline.suv.cli import load_plausibility

    conf = Path(__file__).resolve().parents[1] / "conf"
    demo = yaml.safe_load((conf / "demo" / "parameters_phantom.yml").read_text())["phantom"]
    summary = generate_study(tmp_path, 4, seed=demo["seed"], size="demo", **demo["overrides"])
    assert summary["field_of_view"] == "wholebody"
    suv = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / summary["truth_dir"] / "suv.nii.gz"))).astype(float)
    plausibility = load_plausibility(conf / "base" / "parameters_suv.yml")
    check_slice_continuity(suv, np.ones(suv.shape[0]), plausibility)
    suv[suv.shape[0] // 2] *= 10.0
    with pytest.raises(SuvError, match=rf"slice {suv.shape[0] // 2}: body median SUV"):
        check_slice_continuity(suv, np.ones(suv.shape[0]), plausibility)
