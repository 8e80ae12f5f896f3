"""The phantom writes studies as archives do: other syntaxes, enhanced objects, clutter; truth stays."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from colearn_pipeline.dicom import choose_series, discover, read_series
from colearn_pipeline.phantom import generate_study, make_config
from colearn_pipeline.phantom.dicomio import TRANSFER_SYNTAXES, archive_options
from colearn_pipeline.suv import suv_conversion

TINY = dict(ct_matrix=48, pet_matrix=32, n_slices=(6, 6))


def _suv(pet) -> np.ndarray:
    factors = np.asarray(suv_conversion(pet.datasets).slice_factors)
    return pet.array * factors[:, None, None]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    generate_study(out, index=0, seed=5, size="tiny", **TINY)
    study = next(iter(discover(out / "dicom").studies.values()))
    choice = choose_series(study)
    pet = read_series(choice.pet.files)
    return read_series(choice.ct.files).array, pet.array, _suv(pet)


def _read(out):
    found = discover(out / "dicom")
    (study,) = found.studies.values()
    choice = choose_series(study)
    pet = read_series(choice.pet.files)
    return found, study, choice, read_series(choice.ct.files).array, pet


@pytest.mark.parametrize("syntax", ["rle", "jpeg_ls_near", "jpeg2000"])
def test_study_stored_in_a_syntax_reads_like_the_plain_one(tmp_path, plain, syntax):
    generate_study(tmp_path, index=0, seed=5, size="tiny", archive_transfer_syntaxes=[syntax], **TINY)
    _, _, choice, ct, pet_volume = _read(tmp_path)
    pet = pet_volume.array
    ds = pydicom.dcmread(choice.ct.files[0], stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax][0]
    if TRANSFER_SYNTAXES[syntax][2]:
        assert np.array_equal(ct, plain[0]) and np.array_equal(pet, plain[1])
        assert np.array_equal(_suv(pet_volume), plain[2])
    else:
        near = TRANSFER_SYNTAXES[syntax][1]["jls_error"]
        assert np.abs(ct - plain[0]).max() <= near  # CT slope 1: NEAR HU
        assert 0 < np.abs(pet - plain[1]).max()


def test_enhanced_cluttered_study_keeps_its_truth_and_chooses_the_main_series(tmp_path, plain):
    cfg = dict(archive_enhanced_every=1, archive_clutter_every=1)
    summary = generate_study(tmp_path, index=0, seed=5, size="tiny", **cfg, **TINY)
    found, study, choice, ct, pet = _read(tmp_path)
    assert choice.ct.enhanced and choice.pet.enhanced and len(choice.ct.files) == 1
    assert np.array_equal(ct, plain[0]) and np.array_equal(pet.array, plain[1])
    assert np.allclose(_suv(pet), plain[2], rtol=1e-6)  # the frames' timing gives the same SUV
    reasons = sorted(r["reason"] for r in choice.records if not r["chosen"])
    assert any(r.startswith("ImageType LOCALIZER") for r in reasons)
    assert any(r.startswith("ImageType REFORMATTED") for r in reasons)
    assert any("CorrectedImage lacks ATTN" in r for r in reasons)
    assert any("thickness" in r for r in reasons)  # the thick second CT ranks lower
    skipped = [r for _, r in study.skipped]
    assert any("secondary capture" in r for r in skipped) and any("RT Structure Set" in r for r in skipped)
    assert (tmp_path / summary["truth_dir"] / "labels.nii.gz").is_file()
    assert summary["n_dicom_files"] == sum(1 for p in (tmp_path / summary["dicom_dir"]).rglob("*") if p.is_file())


def test_archive_options_pick_part_of_the_cohort():
    cfg = make_config("tiny", archive_transfer_syntaxes=["explicit_le", "rle"], archive_enhanced_every=3)
    options = [archive_options(cfg, i) for i in range(6)]
    assert [o["transfer_syntax"] for o in options] == ["explicit_le", "rle"] * 3
    assert [o["enhanced"] for o in options] == [False, False, True] * 2
    with pytest.raises(ValueError, match="unknown 'zip'"):
        archive_options(make_config("tiny", archive_transfer_syntaxes=["zip"]), 0)
