"""read_series: geometry, rescale and the validation errors."""

from __future__ import annotations

import random

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_fixtures import write_series, write_study
from pydicom.uid import generate_uid

from colearn_pipeline.dicom import DicomSeriesError, read_series


def _series(tmp_path, shape=(6, 10, 12), **kw):
    vol = np.arange(np.prod(shape), dtype=float).reshape(shape) % 500 - 100
    kw.setdefault("spacing_xyz_mm", (0.8, 0.9, 2.5))
    files = write_series(
        tmp_path, vol, modality="CT", study_uid=generate_uid(), frame_uid=generate_uid(), intercept=-1024.0, **kw
    )
    return vol, files


def test_matches_simpleitk_reader_for_oblique_series(tmp_path):
    """Array, spacing, origin and direction agree with SimpleITK's GDCM reader on an oblique stack."""
    c, s = np.cos(0.3), np.sin(0.3)
    iop = (c, s, 0.0, 0.0, 0.0, -1.0)  # rows tilted in x-y, columns head->feet: a coronal-ish plane
    vol, files = _series(tmp_path, iop=iop, origin_xyz_mm=(10.0, -20.0, 5.0))
    shuffled = [str(f) for f in files]
    random.Random(1).shuffle(shuffled)
    volume = read_series(shuffled, study="study-test")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    ref = reader.Execute()
    np.testing.assert_allclose(volume.array, sitk.GetArrayFromImage(ref), atol=1e-4)
    np.testing.assert_allclose(volume.spacing_xyz_mm, ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(volume.origin_xyz_mm, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.direction, ref.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(volume.array, vol, atol=1e-4)
    img = volume.to_sitk()
    assert img.GetSize() == ref.GetSize()
    assert [str(f) for f in files] == volume.files


def test_per_slice_rescale_and_spacing_from_positions_not_thickness(tmp_path):
    vol = np.full((4, 5, 5), 1000.0)
    vol[2] = 20000.0

    def wrong_thickness(ds, k):
        ds.SliceThickness = 5.0  # positions say 3 mm

    files = write_series(
        tmp_path, vol, modality="PT", study_uid=generate_uid(), frame_uid=generate_uid(),
        spacing_xyz_mm=(4.0, 4.0, 3.0), slope=[1.0, 0.5, 2.0, 0.25], extra=wrong_thickness,
    )
    volume = read_series(files, study="study-x")
    assert volume.spacing_xyz_mm[2] == pytest.approx(3.0)
    np.testing.assert_allclose(volume.array, vol, rtol=1e-6)
    assert all("PixelData" not in ds for ds in volume.datasets)


def test_truncated_file(tmp_path):
    _, files = _series(tmp_path)
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 50])
    with pytest.raises(DicomSeriesError) as err:
        read_series(files, study="study-abc", root=tmp_path)
    assert err.value.study == "study-abc" and err.value.file == files[3].name
    assert "truncated" in err.value.problem
    assert "study-abc" in str(err.value) and files[3].name in str(err.value)


def test_missing_slice(tmp_path):
    _, files = _series(tmp_path)
    with pytest.raises(DicomSeriesError, match="missing slice") as err:
        read_series(files[:2] + files[3:], study="study-abc", root=tmp_path)
    assert err.value.file == files[1].name and files[3].name in err.value.problem


def test_duplicated_slice(tmp_path):
    """Issue 25: two objects at one position are one slice only when they mean the same."""
    _, files = _series(tmp_path)
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(files[2].read_bytes())
    vol = read_series(files + [copy], study="study-abc", root=tmp_path)
    assert vol.shape_zyx[0] == len(files) and "identical duplicate at one position" in vol.notes[0]
    ds = pydicom.dcmread(files[2])
    ds.RescaleSlope = f"{float(ds.RescaleSlope) * 10:g}"
    ds.save_as(copy)
    with pytest.raises(DicomSeriesError, match="duplicated slice.*differs in RescaleSlope") as err:
        read_series(files + [copy], study="study-abc", root=tmp_path)
    assert {err.value.file, "copy.dcm", files[2].name} == {"copy.dcm", files[2].name}


def test_non_uniform_spacing(tmp_path):
    def shift(ds, k):
        if k >= 3:
            ds.ImagePositionPatient = [0.0, 0.0, 2.5 * k + 1.0]

    _, files = _series(tmp_path, extra=shift)
    with pytest.raises(DicomSeriesError, match="non-uniform slice spacing") as err:
        read_series(files, study="study-abc", root=tmp_path)
    assert err.value.file == files[2].name


def test_inconsistent_orientation_and_size(tmp_path):
    def tilt(ds, k):
        if k == 4:
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.99, 0.141]

    _, files = _series(tmp_path / "a", extra=tilt)
    with pytest.raises(DicomSeriesError, match="inconsistent orientation") as err:
        read_series(files, study="study-abc", root=tmp_path / "a")
    assert err.value.file == files[4].name
    _, files_b = _series(tmp_path / "b", shape=(3, 10, 12))
    _, files_c = _series(tmp_path / "c", shape=(3, 10, 10), origin_xyz_mm=(0, 0, 7.5))
    with pytest.raises(DicomSeriesError, match="another series"):
        read_series(files_b + files_c, study="study-abc")
    series_uid = generate_uid()
    _, files_d = _series(tmp_path / "d", shape=(3, 10, 12), series_uid=series_uid)
    _, files_e = _series(tmp_path / "e", shape=(3, 10, 10), origin_xyz_mm=(0, 0, 7.5), series_uid=series_uid)
    with pytest.raises(DicomSeriesError, match=r"inconsistent size: 10x10 != 10x12"):
        read_series(files_d + files_e, study="study-abc")


def test_gantry_tilt_is_refused(tmp_path):
    def drift(ds, k):
        ds.ImagePositionPatient = [0.0, 1.5 * k, 2.5 * k]

    _, files = _series(tmp_path, extra=drift)
    with pytest.raises(DicomSeriesError, match="not along the slice normal"):
        read_series(files, study="study-abc")


def test_not_dicom_file(tmp_path):
    _, files = _series(tmp_path)
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    with pytest.raises(DicomSeriesError, match="corrupt or unreadable DICOM") as err:
        read_series(files + [junk], study="study-abc", root=tmp_path)
    assert err.value.file == "notes.txt"


def test_study_fixture_reads(tmp_path):
    study = write_study(tmp_path)
    pet = read_series(study["pet_files"], study="study-x")
    np.testing.assert_allclose(pet.array, study["pet_volume"], atol=0.5)


def test_unreadable_file_message_names_the_label_not_the_raw_path(tmp_path):
    missing = tmp_path / "Doe^Jane 1945-12-31" / "slice.dcm"
    with pytest.raises(DicomSeriesError) as err:
        read_series([missing], "study-x", file_labels={str(missing): "file-0123456789"})
    assert "Doe" not in str(err.value) and err.value.file == "file-0123456789"


def test_zero_pixel_spacing_is_refused_naming_the_tag(tmp_path):
    """Issue 11: PixelSpacing 0 would give a volume of no extent; the message names the tag and the value."""

    def zero(ds, k):
        ds.PixelSpacing = [0.0, 0.9]

    _, files = _series(tmp_path, extra=zero)
    with pytest.raises(DicomSeriesError, match=r"PixelSpacing \(0028,0030\) must be positive, got \[0.0, 0.9\]"):
        read_series(files, study="study-abc")
