"""Pixel-data decoding: every transfer syntax of a PET-CT archive, public files, phantom twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_fixtures import write_study
from pydicom.data import get_testdata_file
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import JPEGLSLossless

from colearn_pipeline.dicom import DicomSeriesError, read_series
from colearn_pipeline.dicom.series import read_image
from colearn_pipeline.phantom.dicomio import TRANSFER_SYNTAXES, encode

#: Real public slices shipped inside pydicom (MIT licence; provenance in pydicom's
#: data/test_files/README.txt: NEMA WG04 samples, dclunie's compressed images, GDCM/DCMTK output).
#: (file, transfer syntax, largest |pydicom - SimpleITK| in stored values).
PUBLIC_FILES = [
    ("MR_small_implicit.dcm", "1.2.840.10008.1.2", 0),
    ("CT_small.dcm", "1.2.840.10008.1.2.1", 0),
    ("image_dfl.dcm", "1.2.840.10008.1.2.1.99", 0),
    ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5", 0),
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50", 0),
    # 12-bit JPEG Extended (NEMA NM1_JPLY, fixed): lossy DCT, libjpeg and GDCM's IJG round the IDCT differently
    ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51", 1),
    ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70", 0),
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80", 0),
    ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81", 0),
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90", 0),
    ("J2K_pixelrep_mismatch.dcm", "1.2.840.10008.1.2.4.90", 0),
    ("693_J2KI.dcm", "1.2.840.10008.1.2.4.91", 0),
    ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91", 0),
    # Scanner slices from pylibjpeg-data (MIT; tests/data/public_dicom/README.md): JPEG Lossless Process 14
    # without SV1 (Philips MR), JPEG-LS near-lossless (GE CT, NEMA WG04), JPEG 2000 lossy (Philips CT)
    ("JPEGLossless_1s_1f_u_16_12.dcm", "1.2.840.10008.1.2.4.57", 0),
    ("CT1_JLSN.dcm", "1.2.840.10008.1.2.4.81", 0),
    ("MAROTECH_CT_JP2Lossy.dcm", "1.2.840.10008.1.2.4.91", 0),
]

#: Public slices that pydicom does not ship, kept in the repository with their source and licence.
PUBLIC_DICOM_DIR = Path(__file__).parent / "data" / "public_dicom"


def _public_file(name: str) -> str | None:
    local = PUBLIC_DICOM_DIR / name
    return str(local) if local.is_file() else get_testdata_file(name)


@pytest.mark.parametrize(("name", "syntax", "tolerance"), PUBLIC_FILES)
def test_public_slices_decode_like_simpleitk(name, syntax, tolerance):
    path = _public_file(name)
    assert path is not None, f"{name} is neither in {PUBLIC_DICOM_DIR} nor shipped with pydicom"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    reference = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(path))).astype(np.float64)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        decoded = ds.pixel_array.astype(np.float64)
    else:  # SimpleITK leaves PixelPaddingValue pixels as they are: give them their own rescaled value
        pad = ds.get("PixelPaddingValue")
        rescaled_pad = None if pad is None else pad * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        (_, decoded), = read_image(path, padding_value=rescaled_pad)
    assert decoded.shape == reference.shape
    # Our reader returns float32 for a non-integer slope: allow its rounding, nothing more.
    allowed = tolerance * float(ds.get("RescaleSlope", 1) or 1) + 2 * np.finfo(np.float32).eps * np.abs(reference)
    assert np.all(np.abs(decoded - reference) <= allowed), np.abs(decoded - reference).max()


def _twin(tmp_path, syntax):
    study = write_study(tmp_path / "plain", ct_shape_zyx=(4, 32, 32), pet_shape_zyx=(3, 32, 32))
    coded = {}
    for kind in ("ct_files", "pet_files"):
        coded[kind] = []
        for path in study[kind]:
            ds = pydicom.dcmread(path)
            encode(ds, syntax)
            out = tmp_path / syntax / path.parent.name / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(out, enforce_file_format=True)
            coded[kind].append(out)
    return study, coded


@pytest.mark.parametrize("syntax", sorted(TRANSFER_SYNTAXES))
def test_phantom_study_in_each_syntax_matches_its_uncompressed_twin(tmp_path, syntax):
    uid, options, lossless = TRANSFER_SYNTAXES[syntax]
    study, coded = _twin(tmp_path, syntax)
    assert pydicom.dcmread(coded["ct_files"][0], stop_before_pixels=True).file_meta.TransferSyntaxUID == uid
    for kind in ("ct_files", "pet_files"):
        plain = read_series(study[kind])
        twin = read_series(coded[kind])
        slopes = np.array([float(ds.RescaleSlope) for ds in plain.datasets])
        error = np.abs(twin.array.astype(np.float64) - plain.array)
        if lossless:
            assert np.array_equal(twin.array, plain.array)
        elif "jls_error" in options:  # JPEG-LS near-lossless: |error| <= NEAR stored units per pixel
            assert np.all(error.max(axis=(1, 2)) <= options["jls_error"] * slopes + 1e-3)
        else:  # JPEG 2000 lossy (no codec bound): RMS error within 1 % of each frame's range
            rms = np.sqrt((error**2).mean(axis=(1, 2)))
            value_range = np.ptp(plain.array, axis=(1, 2))
            assert np.all(rms <= 0.01 * value_range + slopes)
            assert not np.array_equal(twin.array, plain.array)  # it really is lossy


def test_missing_decoder_plugin_is_named_not_called_corrupt(tmp_path, monkeypatch):
    study, coded = _twin(tmp_path, "jpeg_ls")
    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pyjpegls": ("pyjpegls",)})
    with pytest.raises(DicomSeriesError) as err:
        read_series(coded["ct_files"], "study-x", root=tmp_path)
    problem = err.value.problem
    assert "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)" in problem
    assert "no decoder plugin installed" in problem and "pyjpegls" in problem
    assert "corrupt" not in problem


def test_syntax_without_any_decoder_is_named(tmp_path):
    study, coded = _twin(tmp_path, "jpeg2000")
    path = coded["ct_files"][0]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2 multi-component
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomSeriesError, match=r"JPEG 2000 Part 2 .*1\.2\.840\.10008\.1\.2\.4\.92.*no pixel-data decoder"):
        read_series([path], "study-x")


@pytest.mark.parametrize("slope", ["0", "-2", "NaN", "inf", "1e38"])
def test_implausible_rescale_slope_is_refused_with_tag_and_value(tmp_path, slope):
    def bad(ds, k):
        if k == 1:
            ds.RescaleSlope = slope

    study = write_study(tmp_path, pet_extra=None)
    from dicom_fixtures import pet_suv_tags, write_series

    files = write_series(
        tmp_path / "bad", np.full((3, 4, 4), 100.0), modality="PT", study_uid=study["study_uid"],
        frame_uid=study["frame_uid"], extra=lambda ds, k: (pet_suv_tags()(ds, k), bad(ds, k)),
    )
    with pytest.raises(DicomSeriesError, match=r"RescaleSlope \(0028,1053\)") as err:
        read_series(files, "study-x", root=tmp_path)
    assert err.value.file == "bad/pt_0001.dcm"
    assert str(float(slope)) in err.value.problem or slope in err.value.problem


@pytest.mark.parametrize(("padding_value", "expected"), [(None, -1000.0), (-1024.0, -1024.0)])
def test_pixel_padding_becomes_air_not_minus_3024(tmp_path, padding_value, expected):
    from dicom_fixtures import write_series

    hu = np.full((3, 6, 6), 40.0)
    hu[:, :, :2] = -3024.0  # outside the reconstruction circle

    def padded(ds, k):
        ds.PixelPaddingValue = -2000  # stored value of -3024 HU with intercept -1024

    files = write_series(tmp_path, hu, modality="CT", study_uid="1.2.3", frame_uid="1.2.4", intercept=-1024.0, extra=padded)
    volume = read_series(files, padding_value=padding_value)
    assert np.all(volume.array[:, :, :2] == expected) and np.all(volume.array[:, :, 2:] == 40.0)
