"""One grid: physical-space resampling, slice resizing, point -> index mapping."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from colearn_pipeline.dicom.grid import inside, physical_to_index_zyx, resample_to_reference, resize_slices


def _image(shape_zyx, spacing, origin, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), fill=None):
    img = sitk.GetImageFromArray(np.zeros(shape_zyx, np.float32) if fill is None else fill.astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _physical_grid(img):
    size = img.GetSize()
    z, y, x = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    idx = np.stack([x, y, z], -1).reshape(-1, 3).astype(float)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    pts = np.asarray(img.GetOrigin()) + (idx * np.asarray(img.GetSpacing())) @ d.T
    return pts.reshape(*size[::-1], 3)


def test_linear_resampling_in_physical_space_reproduces_a_linear_field():
    """A field linear in patient coordinates is exact after linear resampling, whatever the grids."""
    c, s = np.cos(0.25), np.sin(0.25)
    pet = _image((10, 20, 22), (4.0, 4.0, 3.0), (-40.0, -35.0, -12.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    field = lambda p: 2.0 + 0.03 * p[..., 0] - 0.02 * p[..., 1] + 0.05 * p[..., 2]  # noqa: E731
    pet = _image((10, 20, 22), pet.GetSpacing(), pet.GetOrigin(), pet.GetDirection(), field(_physical_grid(pet)))
    ct = _image((8, 30, 30), (1.5, 1.5, 2.5), (-20.0, -20.0, -5.0))
    out = sitk.GetArrayFromImage(resample_to_reference(pet, ct))
    truth = field(_physical_grid(ct))
    assert out.shape == truth.shape
    pts = _physical_grid(ct).reshape(-1, 3)
    idx = np.array([pet.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in pts])
    interior = np.all((idx >= 0) & (idx <= np.asarray(pet.GetSize()) - 1), axis=1).reshape(out.shape)
    assert interior.mean() > 0.9
    np.testing.assert_allclose(out[interior], truth[interior], atol=1e-3)


def test_outside_the_field_of_view_gets_the_default():
    pet = _image((4, 4, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), fill=np.ones((4, 4, 4)))
    ct = _image((4, 4, 4), (2.0, 2.0, 2.0), (100.0, 0.0, 0.0))
    assert np.all(sitk.GetArrayFromImage(resample_to_reference(pet, ct, default_value=-7.0)) == -7.0)
    with pytest.raises(ValueError, match="interpolator"):
        resample_to_reference(pet, ct, interpolator="cubic")


def test_resize_images_and_labels():
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 3
    big = resize_slices(labels, (16, 16), "label")
    assert big.dtype == np.uint8 and set(np.unique(big)) == {0, 3} and big.shape == (3, 16, 16)
    assert (big == 3).sum() == 3 * 64
    img = np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.float32)
    small = resize_slices(img, (32, 32), "image")
    assert small.dtype == np.float32 and small.shape == (2, 32, 32)
    # anti-aliased: the noise is averaged (a plain subsample would keep std ~1)
    assert small.std() < 0.7
    const = resize_slices(np.full((1, 10, 10), 5.0), (7, 13), "image")
    np.testing.assert_allclose(const, 5.0, rtol=1e-6)


def test_physical_to_index_and_inside():
    img = _image((5, 6, 7), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0))
    idx = physical_to_index_zyx([[10.0, 20.0, 30.0], [14.0, 26.0, 46.0], [0.0, 20.0, 30.0]], img)
    np.testing.assert_allclose(idx, [[0, 0, 0], [4, 2, 2], [0, 0, -5]])
    assert inside(idx, (5, 6, 7)).tolist() == [True, True, False]
