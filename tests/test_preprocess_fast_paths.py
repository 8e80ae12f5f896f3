"""The preprocess fast paths give exactly what the general code gives (issue 9: speed without changing outputs).

- uncompressed pixels read straight from the bytes == ``ds.pixel_array`` (unused high bits included);
  every other transfer syntax is left to pydicom;
- the float32 rescale of integer slope/intercept == the float64 one, bit for bit;
- the QA lung hull from row ends on mediastinum slices == :func:`lung_hull` on every slice;
- the grown hull's polygon from the row-end pixels == the one from every pixel, vertex for vertex,
  and the hull tested only at the pixels of a mask == the whole hull cut to that mask;
- ``.nii.gz`` bytes depend on the image only (no time stamp), and read back exactly;
- an uncompressed ``.nii`` read straight from the file == SimpleITK's read, whole or a slab.
"""

from __future__ import annotations

import gzip

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from scipy.spatial import ConvexHull
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from colearn_pipeline.dicom import series
from colearn_pipeline.groundtruth.mediastinum import _grown_hull, grown_hull_polygon, lung_hull
from colearn_pipeline.groundtruth.quality import _count_outside_lung_hull, _row_ends, quality_figures
from colearn_pipeline.pipelines.preprocess.study import nifti_voxels, write_nifti


def _image(stored: np.ndarray, bits_stored: int, syntax=ExplicitVRLittleEndian, **tags) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = stored.dtype.itemsize * 8, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(stored.dtype.kind == "i")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(
    ("dtype", "bits_stored"), [(np.int16, 16), (np.uint16, 16), (np.int16, 12), (np.uint16, 12), (np.uint8, 8), (np.int32, 32)]
)
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_native_pixels_equal_pydicoms_pixel_array(dtype, bits_stored, syntax):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(bits_stored)
    stored = rng.integers(info.min, info.max, size=(7, 9), endpoint=True).astype(dtype)  # garbage in unused bits too
    ds = _image(stored, bits_stored, syntax)
    fast = series.native_pixels(ds)
    assert fast is not None
    np.testing.assert_array_equal(fast, ds.pixel_array)
    assert fast.dtype == ds.pixel_array.dtype


def test_native_pixels_leave_other_syntaxes_and_short_buffers_to_pydicom():
    stored = np.arange(12, dtype=np.int16).reshape(3, 4)
    assert series.native_pixels(_image(stored, 16, ExplicitVRBigEndian)) is None
    assert series.native_pixels(_image(stored, 16, RLELossless)) is None
    short = _image(stored, 16)
    short.PixelData = short.PixelData[:-2]
    assert series.native_pixels(short) is None
    two_frames = _image(stored, 16, NumberOfFrames=2)
    assert series.native_pixels(two_frames) is None
    for tag in ("BitsStored", "SamplesPerPixel", "PixelRepresentation", "PhotometricInterpretation"):
        incomplete = _image(stored, 16)
        delattr(incomplete, tag)  # pydicom decides (and names the problem)
        assert series.native_pixels(incomplete) is None, tag


@pytest.mark.parametrize(
    ("dtype", "slope", "intercept", "padding"),
    [(np.uint16, 1.0, -1024.0, None), (np.int16, 1.0, 0.0, -2000), (np.int16, 2.0, -1024.0, None),
     (np.uint16, 0.37, 0.0, None), (np.int16, 1.0, 0.5, None), (np.uint16, 300.0, 1.0, None)],
)
def test_float32_rescale_is_bit_identical_to_float64(dtype, slope, intercept, padding):
    info = np.iinfo(dtype)
    stored = np.random.default_rng(1).integers(info.min, info.max, size=(16, 16), endpoint=True).astype(dtype)
    tags = {"RescaleSlope": slope, "RescaleIntercept": intercept}
    if padding is not None:
        stored[0, :4] = padding
        tags["PixelPaddingValue"] = padding
    ds = _image(stored, 16, **tags)
    fast = series._to_real(ds, stored, "study-x", "file-x", -1000.0)
    exact = series._exact_in_float32(stored, float(ds.RescaleSlope), float(ds.RescaleIntercept))
    assert exact == (float(slope).is_integer() and float(intercept).is_integer() and slope * 65535 + 1024 <= 2**24)
    general = stored.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if padding is not None:
        general[stored == padding] = -1000.0
    assert fast.dtype == np.float32
    assert fast.tobytes() == general.astype(np.float32).tobytes()


def test_read_series_of_files_equals_the_pydicom_decoder_path(tmp_path, monkeypatch):
    from dicom_fixtures import write_series
    from pydicom.uid import generate_uid

    volume = np.random.default_rng(2).integers(-1024, 2000, size=(4, 12, 10)).astype(np.float32)
    files = write_series(tmp_path / "ct", volume, modality="CT", study_uid=generate_uid(), frame_uid=generate_uid(),
                         intercept=-1024.0)
    fast = series.read_series(files, "study-x")
    monkeypatch.setattr(series, "native_pixels", lambda ds: None)
    monkeypatch.setattr(series, "_exact_in_float32", lambda *a: False)
    general = series.read_series(files, "study-x")
    assert fast.array.tobytes() == general.array.tobytes()
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID in series.NATIVE_LITTLE_ENDIAN


def _lung_slices(shape=(6, 40, 48)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    lungs = np.zeros(shape, bool)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    for z in range(1, shape[0]):
        for cx in (14, 34):
            lungs[z] |= ((yy - 20) / (9 + z)) ** 2 + ((xx - cx) / 7) ** 2 < 1
        lungs[z] &= rng.random(shape[1:]) > 0.2  # holes and ragged rows
    lungs[2] = False
    lungs[2, 10, 5:30] = True     # a single row: two row ends only
    lungs[3, 10:12, 20] = True    # two pixels
    med = np.zeros(shape, bool)
    med[:, 15:25, 20:28] = True
    med[:, 0:3, 0:3] = True       # far outside any hull
    med[0] = False
    return lungs, med


@pytest.mark.parametrize("margin_mm", [0.0, 3.0, 10.0])
def test_hull_from_row_ends_equals_lung_hull(margin_mm):
    lungs, med = _lung_slices()
    spacing = (0.8, 0.9, 3.0)
    full = lung_hull(lungs, spacing, margin_mm)
    np.testing.assert_array_equal(lung_hull(_row_ends(lungs), spacing, margin_mm) | lungs, full)
    assert _count_outside_lung_hull(med, lungs, spacing, margin_mm) == np.count_nonzero(med & ~full)
    fig = quality_figures(lungs, med, spacing, hull_margin_mm=margin_mm)
    assert fig["mediastinum_outside_hull"] == np.count_nonzero(med & ~full) / np.count_nonzero(med)


def _polygon_of_every_pixel(mask: np.ndarray, radius_px) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grown hull's polygon as it was computed before the row ends: from the corners of every pixel."""
    corners = (np.argwhere(mask).astype(float)[:, None, :] + np.array([[-.5, -.5], [-.5, .5], [.5, -.5], [.5, .5]])).reshape(-1, 2)
    verts = corners[ConvexHull(corners).vertices]
    if radius_px[0] > 0 or radius_px[1] > 0:
        angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
        verts = (verts[:, None, :] + np.stack([radius_px[0] * np.sin(angles), radius_px[1] * np.cos(angles)], 1)).reshape(-1, 2)
        verts = verts[ConvexHull(verts).vertices]
    lo = np.maximum(np.floor(verts.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(verts.max(axis=0)).astype(int) + 1, mask.shape)
    return verts - lo, lo, hi


@pytest.mark.parametrize("radius_px", [(0.0, 0.0), (2.5, 3.3)])
def test_grown_hull_polygon_from_row_ends_equals_every_pixel(radius_px):
    lungs, _ = _lung_slices()
    for z in range(1, lungs.shape[0]):
        fast, reference = grown_hull_polygon(lungs[z], radius_px), _polygon_of_every_pixel(lungs[z], radius_px)
        for ours, theirs in zip(fast, reference):
            np.testing.assert_array_equal(ours, theirs)
    assert grown_hull_polygon(lungs[0], radius_px) is None  # no pixel: the hull is the mask


@pytest.mark.parametrize("radius_px", [(0.0, 0.0), (2.5, 3.3)])
def test_grown_hull_within_a_mask_equals_the_hull_cut_to_it(radius_px):
    lungs, _ = _lung_slices()
    within = np.random.default_rng(5).random(lungs.shape[1:]) > 0.3
    for z in range(lungs.shape[0]):
        np.testing.assert_array_equal(_grown_hull(lungs[z], radius_px, within), _grown_hull(lungs[z], radius_px) & within)


def test_nifti_gz_bytes_depend_on_the_image_only(tmp_path):
    array = np.zeros((3, 20, 30), np.int16)
    array[1, 5:9, 3:25] = 700
    image = sitk.GetImageFromArray(array)
    first = write_nifti(image, tmp_path / "a" / "x.nii.gz")
    second = write_nifti(image, tmp_path / "b" / "x.nii.gz")
    data = open(first, "rb").read()
    assert data == open(second, "rb").read()
    assert gzip.decompress(data)[:4] == (348).to_bytes(4, "little")  # a NIfTI-1 header
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(first)), array)


@pytest.mark.parametrize("name", ["ct_hu.nii.gz", "suv.nii"])
def test_model_input_from_the_kept_slices_range_equals_from_whole_volumes(tmp_path, name):
    from colearn_pipeline.datasets.study_partitions import StudyPartition
    from colearn_pipeline.pipelines.preprocess.study import _array_slices, build_model_input

    rng = np.random.default_rng(4)
    volume = rng.normal(size=(9, 24, 20)).astype(np.float32) * 100
    path = write_nifti(sitk.GetImageFromArray(volume), tmp_path / name)
    partition = StudyPartition("study-x", {"member": path}, {})
    np.testing.assert_array_equal(_array_slices(partition, 3, 7), volume[3:7])
    with pytest.raises(ValueError, match="empty slice range"):
        _array_slices(partition, 4, 4)
    labels = np.zeros(volume.shape, np.uint8)
    labels[[3, 4, 6]] = 3
    index = np.array([3, 4, 6])
    geometry = {"spacing_xyz_mm": (1.0, 1.0, 3.0), "origin_xyz_mm": (0.0, 0.0, 0.0), "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}
    whole = build_model_input(volume, volume * 2, labels, index, (16, 16), geometry, "study-x")
    near = build_model_input(_array_slices(partition, 3, 7), volume[3:7] * 2, labels, index, (16, 16), geometry,
                             "study-x", z_offset=3)
    assert whole.keys() == near.keys()
    for key in whole:
        assert whole[key].tobytes() == near[key].tobytes(), key


def test_preprocess_workers_start_without_torch():
    """The modules a local worker preloads import no torch (~250 MB of every worker's memory, seconds to import)."""
    import subprocess
    import sys

    from colearn_pipeline.pipelines.preprocess.executor import WORKER_PRELOAD

    code = f"import sys; [__import__(m) for m in {WORKER_PRELOAD!r}]; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, np.int32])
def test_nifti_voxels_equal_simpleitk(tmp_path, dtype):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((5, 7, 9)) * 100).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 0.8, 3.0))
    image.SetOrigin((-200.0, -180.0, 50.0))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    path = write_nifti(image, tmp_path / "v.nii")
    ours = nifti_voxels(path)
    assert ours.dtype == sitk.GetArrayFromImage(sitk.ReadImage(path)).dtype
    assert ours.tobytes() == sitk.GetArrayFromImage(sitk.ReadImage(path)).tobytes()
    assert nifti_voxels(path, 1, 4).tobytes() == array[1:4].tobytes()
    assert nifti_voxels(path, 2, 9) is None  # beyond the volume: SimpleITK reads (and refuses) it
    assert nifti_voxels(write_nifti(image, tmp_path / "v.nii.gz")) is None  # compressed: SimpleITK's


def test_nifti_voxels_leave_scaled_files_to_simpleitk(tmp_path):
    path = tmp_path / "scaled.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4), np.int16)), str(path))
    header = bytearray(path.read_bytes())
    header[112:116] = np.float32(2.0).tobytes()  # scl_slope
    path.write_bytes(bytes(header))
    assert nifti_voxels(path) is None
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).max() == 2  # what a direct read would have missed
