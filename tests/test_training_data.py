"""Per-slice standardisation, augmentation and the data order."""

import numpy as np
import torch

from colearn_pipeline.training import assemble_slices, augment_batch, epoch_order, standardise_slices
from synthetic_studies import synthetic_study


def test_standardise_each_slice_separately():
    rng = np.random.default_rng(0)
    v = np.stack([rng.normal(100, 30, (16, 16)), rng.normal(-5, 0.1, (16, 16)), np.full((16, 16), 7.0)])
    out = standardise_slices(v)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:2].mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out[:2].std(axis=(1, 2)), 1, atol=1e-4)
    assert np.all(out[2] == 0)


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
