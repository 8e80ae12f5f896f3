"""Network inputs (stacking, standardisation, label resizing), augmentation and the data order."""

import numpy as np
import pytest
import torch

from colearn_pipeline.training import (
    assemble_slices,
    augment_batch,
    epoch_order,
    network_input,
    resize_labels_nearest,
    standardise_slices,
)
from synthetic_studies import synthetic_study


def test_standardise_each_slice_separately():
    rng = np.random.default_rng(0)
    v = np.stack([rng.normal(100, 30, (16, 16)), rng.normal(-5, 0.1, (16, 16)), np.full((16, 16), 7.0)])
    out = standardise_slices(v)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:2].mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out[:2].std(axis=(1, 2)), 1, atol=1e-4)
    assert np.all(out[2] == 0)


def test_standardise_matches_hand_values():
    # slice 0: values 1, 3 -> mean 2, population SD 1; slice 1: 0, 0, 0, 8 -> mean 2, SD sqrt(12)
    v = np.array([[[1.0, 3.0], [3.0, 1.0]], [[0.0, 0.0], [0.0, 8.0]]])
    out = standardise_slices(v)
    np.testing.assert_allclose(out[0], [[-1, 1], [1, -1]], rtol=1e-6)
    s = 1 / np.sqrt(3)  # (0 - 2) / sqrt(12) and (8 - 2) / sqrt(12) = -1/sqrt(3) and 3/sqrt(3)
    np.testing.assert_allclose(out[1], [[-s, -s], [-s, 3 * s]], rtol=1e-6)


def test_network_input_stacks_ct_then_pet():
    ct = np.array([[[-1000.0, 0.0], [0.0, -1000.0]]])  # -> -1, 1, 1, -1
    suv = np.array([[[0.0, 0.0], [0.0, 4.0]]])  # mean 1, SD sqrt(3)
    x = network_input(ct, suv)
    assert x.shape == (1, 2, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], [[-1, 1], [1, -1]], rtol=1e-6)
    np.testing.assert_allclose(x[0, 1].ravel(), np.array([-1, -1, -1, 3]) / np.sqrt(3), rtol=1e-6)
    with pytest.raises(ValueError, match="differ"):
        network_input(ct, suv[:, :1])


def test_resize_labels_nearest_hand_values():
    small = np.array([[[1, 2], [3, 0]]], dtype=np.uint8)
    big = resize_labels_nearest(small, 4, 4)
    np.testing.assert_array_equal(big[0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]])
    np.testing.assert_array_equal(resize_labels_nearest(big, 2, 2), small)  # 2 -> 4 -> 2 is exact
    np.testing.assert_array_equal(resize_labels_nearest(small, 2, 3)[0], [[1, 2, 2], [3, 0, 0]])
    assert big.dtype == np.uint8


def test_assembled_channels_are_ct_then_pet_standardised():
    s = synthetic_study("study-0000000001", n_slices=2, size=16)
    data = assemble_slices({"study-0000000001": s}, ["study-0000000001"])
    assert data["x"].shape == (2, 2, 16, 16)
    np.testing.assert_allclose(data["x"][:, 0], standardise_slices(s["ct_hu"]))
    np.testing.assert_allclose(data["x"][:, 1], standardise_slices(s["suv"]))
    np.testing.assert_array_equal(data["slice_index"], s["slice_index"])


def test_lazy_partition_loaders_are_called():
    s = synthetic_study("study-0000000002", n_slices=2, size=16)
    data = assemble_slices({"study-0000000002": lambda: s}, ["study-0000000002"])
    assert data["y"].shape == (2, 16, 16)


def _labelled_batch(n=6, size=24, seed=0):
    rng = np.random.default_rng(seed)
    y = torch.from_numpy(rng.integers(0, 4, (n, size, size)))
    x = torch.stack([y.float(), -y.float()], dim=1)
    return x, y


def test_augmentation_moves_image_and_labels_together():
    x, y = _labelled_batch()
    g = torch.Generator().manual_seed(1)
    xa, ya = augment_batch(x, y, g, pad=10)
    assert xa.shape == x.shape and ya.shape == y.shape and ya.dtype == y.dtype
    torch.testing.assert_close(xa[:, 0], ya.float())
    torch.testing.assert_close(xa[:, 1], -ya.float())
    assert not torch.equal(ya, y)  # something moved


def test_augmentation_is_reproducible_and_can_be_disabled():
    x, y = _labelled_batch()
    a = augment_batch(x, y, torch.Generator().manual_seed(5))
    b = augment_batch(x, y, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    xi, yi = augment_batch(x, y, torch.Generator().manual_seed(5), pad=0, flip_lr=False, flip_ud=False)
    assert torch.equal(xi, x) and torch.equal(yi, y)


def _numpy_reference(x, y, draws, pad, flip_lr=True, flip_ud=True):
    """The step-by-step transform of the authors' code in NumPy: pad, crop, flip, per sample."""
    n, _, h, w = x.shape
    xs, ys = [], []
    for i in range(n):
        xi = np.pad(x[i], ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        yi = np.pad(y[i], ((pad, pad), (pad, pad)), mode="reflect")
        top, left = int(draws[i, 0] * (2 * pad + 1)), int(draws[i, 1] * (2 * pad + 1))
        xi, yi = xi[:, top : top + h, left : left + w], yi[top : top + h, left : left + w]
        if flip_lr and draws[i, 2] < 0.5:
            xi, yi = xi[:, :, ::-1], yi[:, ::-1]
        if flip_ud and draws[i, 3] < 0.5:
            xi, yi = xi[:, ::-1, :], yi[::-1, :]
        xs.append(xi)
        ys.append(yi)
    return np.stack(xs), np.stack(ys)


@pytest.mark.parametrize(("pad", "flip_lr", "flip_ud"), [(10, True, True), (3, False, True), (0, True, False)])
def test_device_augmentation_equals_the_numpy_reference_for_the_same_draws(pad, flip_lr, flip_ud):
    rng = np.random.default_rng(pad)
    x = rng.normal(size=(16, 2, 24, 20)).astype(np.float32)
    y = rng.integers(0, 4, (16, 24, 20))
    draws = torch.rand((16, 4), generator=torch.Generator().manual_seed(11)).numpy()  # what augment_batch draws
    xa, ya = augment_batch(torch.from_numpy(x), torch.from_numpy(y), torch.Generator().manual_seed(11), pad,
                           flip_lr, flip_ud)
    xr, yr = _numpy_reference(x, y, draws, pad, flip_lr, flip_ud)
    np.testing.assert_array_equal(xa.numpy(), xr)  # same pixels, bit for bit
    np.testing.assert_array_equal(ya.numpy(), yr)
    assert ya.dtype == torch.int64 and xa.is_contiguous()
    assert pad == 0 or not np.array_equal(yr, y)  # the draws moved something


def test_crop_offsets_cover_the_padding():
    # a single bright pixel in the centre moves by up to +-pad pixels, never further
    x = torch.zeros(1, 2, 32, 32)
    x[0, :, 16, 16] = 1
    y = torch.zeros(1, 32, 32, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    shifts = set()
    for _ in range(200):
        xa, _ = augment_batch(x, y, g, pad=3, flip_lr=False, flip_ud=False)
        r, c = divmod(int(xa[0, 0].argmax()), 32)
        shifts.add((r - 16, c - 16))
    assert {dy for dy, _ in shifts} == set(range(-3, 4))
    assert {dx for _, dx in shifts} == set(range(-3, 4))


def test_epoch_order_is_a_permutation_and_shards_like_distributed_sampler():
    n = 11
    order = epoch_order(n, epoch=3, seed=7)
    assert sorted(order.tolist()) == list(range(n))
    assert not np.array_equal(order, epoch_order(n, epoch=4, seed=7))
    shards = [epoch_order(n, 3, 7, num_replicas=2, rank=r) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6
    assert set(np.concatenate(shards)) == set(range(n))
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=2, rank=1, shuffle=True, seed=7)
    sampler.set_epoch(3)
    assert list(sampler) == shards[1].tolist()
