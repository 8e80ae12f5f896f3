"""Series selection in cluttered studies, links, duplicates, enhanced twins, identifiers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import pet_suv_tags, write_cluttered_study, write_enhanced, write_series, write_study

from colearn_pipeline.dicom import (
    DicomStudyError,
    SelectionRules,
    choose_series,
    discover,
    file_label,
    pseudonymise,
    read_series,
)


def _archive(tmp_path: Path, pet_signals: str) -> tuple[Path, dict]:
    """The cluttered study exported twice, reached only through symbolic links (one a loop)."""
    export = tmp_path / "archive" / "export1"
    study = write_cluttered_study(export, pet_signals)
    shutil.copytree(export, tmp_path / "archive" / "export2")
    scan = tmp_path / "scan"
    scan.mkdir()
    os.symlink(tmp_path / "archive" / "export1", scan / "first", target_is_directory=True)
    os.symlink(tmp_path / "archive" / "export2", scan / "second", target_is_directory=True)
    os.symlink(tmp_path / "archive", tmp_path / "archive" / "export1" / "loop", target_is_directory=True)
    os.symlink(tmp_path / "nowhere.dcm", scan / "broken.dcm")
    return scan, study


@pytest.mark.parametrize("pet_signals", ["corrected_image", "method"])
def test_cluttered_study_behind_links_exported_twice_gives_axial_ct_and_ac_pet(tmp_path, pet_signals):
    scan, study = _archive(tmp_path, pet_signals)
    found = discover(scan)
    assert list(found.studies) == [pseudonymise(study["study_uid"])]
    info = found.studies[pseudonymise(study["study_uid"])]
    assert info.corrupt == []
    choice = choose_series(info)
    for chosen, written in ((choice.ct, study["ct_files"]), (choice.pet, study["pet_files"])):
        # one copy of each slice, from whichever export the walk met first
        assert sorted(Path(f).name for f in chosen.files) == sorted(p.name for p in written)
        assert len({Path(f).parent.name for f in chosen.files}) == 1
    assert Path(choice.ct.files[0]).parent.name == "ct" and Path(choice.pet.files[0]).parent.name == "pet"
    reasons = {r["series"]: r for r in choice.records}
    by_kind = {s.label: s for s in info.series.values()}
    coronal = next(s for s in by_kind.values() if "REFORMATTED" in s.image_type)
    enhanced = next(s for s in by_kind.values() if s.enhanced)
    nac = next(s for s in by_kind.values() if s.modality == "PT" and s is not choice.pet)
    assert reasons[coronal.label]["reason"] == "ImageType REFORMATTED"
    assert "enhanced multi-frame object beside a classic CT series" in reasons[enhanced.label]["reason"]
    assert not reasons[nac.label]["chosen"]
    expected = "not attenuation/decay corrected" if pet_signals == "corrected_image" else "correction unknown"
    assert expected in reasons[nac.label]["reason"]
    skipped = dict(found.skipped)
    assert "secondary capture" in skipped[file_label("first/misc/screen.dcm")]
    assert "RT Structure Set Storage" in skipped[file_label("first/misc/rtss.dcm")]
    assert skipped[file_label("broken.dcm")] == "broken symbolic link"
    twins = [r for r in skipped.values() if r.startswith("identical duplicate export")]
    n_files = sum(len(s.files) for s in info.series.values()) + 2  # + screenshot and RTSTRUCT
    assert len(twins) == n_files - 2
    assert any("already visited" in r for r in skipped.values())


def test_pet_without_any_correction_signal_is_refused_as_ambiguous(tmp_path):
    study = write_cluttered_study(tmp_path, "none")
    info = discover(tmp_path).studies[pseudonymise(study["study_uid"])]
    with pytest.raises(DicomStudyError, match="ambiguous PET"):
        choose_series(info)
    # ... unless conf names the series for this study
    ac = next(s for s in info.series.values() if s.modality == "PT" and s.series_number == 4)
    ct = next(s for s in info.series.values() if s.modality == "CT" and not s.enhanced and not s.image_type)
    rules = SelectionRules.from_mapping({"overrides": {info.pseudonym: {"ct": ct.label, "pet": ac.label}}})
    choice = choose_series(info, rules)
    assert choice.pet is ac and choice.ct is ct
    assert {r["reason"] for r in choice.records if r["chosen"]} == {"per-study override in conf"}


def test_coronal_only_ct_is_refused_not_fed_to_the_model(tmp_path):
    study = write_study(tmp_path / "s", with_pet=True)
    shutil.rmtree(tmp_path / "s" / "ct")
    write_series(tmp_path / "s" / "cor", np.zeros((10, 8, 8)), modality="CT", study_uid=study["study_uid"],
                 frame_uid=study["frame_uid"], iop=(1, 0, 0, 0, 0, -1))
    info = discover(tmp_path).studies[pseudonymise(study["study_uid"])]
    with pytest.raises(DicomStudyError, match=r"no axial CT volume: .*not axial: slice normal 90.0 deg"):
        choose_series(info)


def test_kernel_and_thickness_preferences_choose_between_ct_series(tmp_path):
    study = write_study(tmp_path / "s")
    uid, frame = study["study_uid"], study["frame_uid"]

    def kernel(name, number):
        def add(ds, k):
            ds.ConvolutionKernel = name
            ds.SeriesNumber = number
        return add

    write_series(tmp_path / "s" / "lung", np.zeros((12, 8, 8)), modality="CT", study_uid=uid, frame_uid=frame,
                 spacing_xyz_mm=(2, 2, 2.0), origin_xyz_mm=(-24, -24, -10), extra=kernel("B70f", 7))
    write_series(tmp_path / "s" / "soft", np.zeros((5, 8, 8)), modality="CT", study_uid=uid, frame_uid=frame,
                 spacing_xyz_mm=(2, 2, 5.0), origin_xyz_mm=(-24, -24, -10), extra=kernel("B31f", 6))
    info = discover(tmp_path).studies[pseudonymise(study["study_uid"])]
    thinnest = choose_series(info)
    assert thinnest.ct.slice_thickness_mm == 2.0
    soft = choose_series(info, {"ct_kernel_preference": ["B31"]})
    assert soft.ct.convolution_kernel == "B31F"
    assert "kernel preference 1" in next(r["reason"] for r in soft.records if r["chosen"] and r["modality"] == "CT")
    with pytest.raises(ValueError, match="unknown series-selection rule"):
        SelectionRules.from_mapping({"prefer_most_slices": True})


def test_same_uid_with_different_pixels_is_not_taken_for_a_duplicate(tmp_path):
    study = write_study(tmp_path / "a")
    twin = tmp_path / "b" / "ct_0003.dcm"
    twin.parent.mkdir()
    shutil.copy(study["ct_files"][3], twin)
    import pydicom

    ds = pydicom.dcmread(twin)
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(twin, enforce_file_format=True)
    info = discover(tmp_path).studies[pseudonymise(study["study_uid"])]
    first, second = sorted([file_label("b/ct_0003.dcm"), file_label("a/ct/ct_0003.dcm")])  # by label: order-free
    why = f"same SOPInstanceUID as {second} but pixel data differs: refused, as which of the two is right cannot be told"
    assert info.corrupt == [(first, why)]


@pytest.mark.parametrize("modality", ["CT", "PT"])
def test_enhanced_multiframe_reads_like_its_classic_twin(tmp_path, modality):
    study = write_study(tmp_path / "classic")
    files = study["ct_files" if modality == "CT" else "pet_files"]
    enhanced = write_enhanced(files, tmp_path / "enhanced" / "mf.dcm")
    classic, multi = read_series(files), read_series([enhanced])
    assert np.array_equal(classic.array, multi.array)
    assert multi.spacing_xyz_mm == pytest.approx(classic.spacing_xyz_mm)
    assert multi.origin_xyz_mm == pytest.approx(classic.origin_xyz_mm)
    if modality == "PT":  # the frame timing the SUV rules read survives the round trip
        for a, b in zip(classic.datasets, multi.datasets):
            assert float(a.RescaleSlope) == float(b.RescaleSlope)
            assert str(b.AcquisitionTime).startswith(str(a.AcquisitionTime))
    info = discover(tmp_path / "enhanced")
    (series,) = next(iter(info.studies.values())).series.values()
    assert series.enhanced and series.n_slices == classic.shape_zyx[0]


NAMES = [
    "Müller, Jürgen 1945-12-31", "Smith John 31.12.1945", "DOE^JANE", "李明", "Doe, Jane (1930-05-15)",
    "jane doe PT0009", "Ñúñez-Øster", "SMITH-JOHN-19451231",
]


def test_no_header_free_text_or_raw_name_in_what_discovery_returns(tmp_path):
    """Names in descriptions, institution, operators, comments, private tags and file/folder names."""

    def leaky(ds, k):
        ds.SpecificCharacterSet = "ISO_IR 192"
        pet_suv_tags()(ds, k)
        ds.SeriesDescription = f"PET {NAMES[k % len(NAMES)]}"
        ds.InstitutionName = NAMES[1]
        ds.OperatorsName = "Smith^John"
        ds.ImageComments = NAMES[3]
        ds.ConvolutionKernel = "B31f"
        ds.add_new(0x00091010, "LO", NAMES[0])

    folder = tmp_path / NAMES[4] / NAMES[3] / NAMES[6]
    study = write_study(folder, pet_extra=leaky, seed=3)
    (folder / f"{NAMES[5]}.txt").write_text("not dicom")
    found = discover(tmp_path)
    info = found.studies[pseudonymise(study["study_uid"])]
    choice = choose_series(info)
    exposed = repr((found.skipped, info.corrupt, info.skipped, choice.records, choice.note,
                    [s.summary() for s in info.series.values()], [s.label for s in info.series.values()],
                    list(info.file_labels.values()), info.pseudonym))
    for name in NAMES + ["Smith", "Jane", "Jürgen", "李", "1945", "PID-0001", "Doe", "doe"]:
        assert name not in exposed
    assert file_label(os.path.relpath(folder / f"{NAMES[5]}.txt", tmp_path)) in exposed


@pytest.mark.parametrize(("sop_class", "modality", "expected"), [
    ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", "Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.67", "SR", "X-Ray Radiation Dose SR Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.59", "KO", "Key Object Selection Document Storage"),
    ("1.2.840.10008.5.1.4.1.1.11.1", "PR", "Grayscale Softcopy Presentation State Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", "RT Structure Set Storage"),
    ("1.2.840.10008.5.1.4.1.1.7", "CT", "secondary capture / screenshot"),
])
def test_non_slice_objects_are_listed_and_the_study_goes_on(tmp_path, sop_class, modality, expected):
    from dicom_fixtures import write_non_image

    study = write_study(tmp_path)
    write_non_image(tmp_path / "other" / "x.dcm", study["study_uid"], sop_class, modality)
    found = discover(tmp_path)
    info = found.studies[pseudonymise(study["study_uid"])]
    assert expected in dict(found.skipped)[file_label("other/x.dcm")]
    assert info.corrupt == [] and choose_series(info).ct.n_slices == 8
