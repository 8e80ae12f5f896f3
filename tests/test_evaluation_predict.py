"""predict: nearest-neighbour resize and placement of label slices on the CT grid."""

import numpy as np
import pytest

from colearn_pipeline.inference.segment import labels_to_ct_volume, write_label_nifti
from colearn_pipeline.training.inputs import resize_labels_nearest as resize_nearest
from synthetic_studies import synthetic_study


def test_resize_nearest_inverts_an_integer_downsampling():
    big = np.kron(np.arange(16).reshape(1, 4, 4), np.ones((1, 3, 3))).astype(np.uint8)  # (1, 12, 12)
    small = np.arange(16).reshape(1, 4, 4).astype(np.uint8)
    np.testing.assert_array_equal(resize_nearest(small, 12, 12), big)
    assert resize_nearest(small, 5, 7).shape == (1, 5, 7)


def test_labels_land_at_slice_index():
    s = synthetic_study("study-0000000009", n_slices=3, size=8, ct_shape_zyx=(10, 16, 24))
    s["slice_index"] = np.array([2, 5, 9], np.int32)
    labels = np.stack([np.full((8, 8), k, np.uint8) for k in (1, 2, 3)])
    vol = labels_to_ct_volume(labels, s)
    assert vol.shape == (10, 16, 24) and vol.dtype == np.uint8
    assert [int(vol[z].max()) for z in (2, 5, 9)] == [1, 2, 3]
    assert vol[[0, 1, 3, 4, 6, 7, 8]].max() == 0
    s["slice_index"] = np.array([2, 5, 10], np.int32)
    with pytest.raises(ValueError):
        labels_to_ct_volume(labels, s)


def test_nifti_keeps_geometry(tmp_path):
    import SimpleITK as sitk  # a core dependency: an import error is a failure, never a skip
    s = synthetic_study("study-000000000a", n_slices=2, size=8, ct_shape_zyx=(4, 8, 8))
    s["direction"] = np.array([1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0])
    vol = np.zeros((4, 8, 8), np.uint8)
    vol[1, 2, 3] = 3
    out = write_label_nifti(vol, s, tmp_path / "p.nii.gz")
    img = sitk.ReadImage(str(out))
    np.testing.assert_allclose(img.GetDirection(), s["direction"])
    np.testing.assert_allclose(img.GetSpacing(), s["spacing_xyz_mm"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol)
