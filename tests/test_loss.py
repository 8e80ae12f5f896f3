"""Tests of colearn_pipeline.models.loss against direct NumPy evaluations of Eq. 6-8."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from colearn_pipeline.models import build_model
from colearn_pipeline.models.loss import class_scale_map, class_scaled_cross_entropy, colearn_loss, l2_penalty


def _numpy_scaled_ce(logits: np.ndarray, target: np.ndarray) -> float:
    """Eq. 6 (data term), 7, 8 pixel by pixel: 1/|O| sum_o S(o) E(o), counts per image."""
    n, r, h, w = logits.shape
    total, num_pixels = 0.0, 0
    for img in range(n):
        counts = [int((target[img] == cls).sum()) for cls in range(r)]
        for y in range(h):
            for x in range(w):
                o = logits[img, :, y, x].astype(np.float64)
                p = np.exp(o) / np.exp(o).sum()  # Eq. 5
                t = int(target[img, y, x])
                e = -sum((1.0 if i == t else 0.0) * math.log(p[i]) for i in range(r))  # Eq. 8
                s = 1.0 - counts[t] / sum(counts)  # Eq. 7
                total += s * e
                num_pixels += 1
    return total / num_pixels


def _numpy_l2(model: nn.Module) -> float:
    """Half the sum of squares of every conv / transposed-conv / 3D-conv kernel, nothing else."""
    kinds = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
    kernels = [m.weight.detach().numpy().astype(np.float64) for m in model.modules() if isinstance(m, kinds)]
    return 0.5 * sum(float((k**2).sum()) for k in kernels)


def _example(seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(2, 4, 3, 5)).astype(np.float32)
    target = rng.integers(0, 4, size=(2, 3, 5))
    target[1][target[1] == 2] = 3  # class 2 absent from image 1: counts differ per image
    return logits, target


def test_scaled_ce_matches_numpy():
    logits, target = _example()
    got = class_scaled_cross_entropy(torch.from_numpy(logits), torch.from_numpy(target))
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(_numpy_scaled_ce(logits, target), rel=1e-5)


def test_scaled_ce_hand_value():
    # uniform logits: E = log 4 everywhere; image classes [0, 0, 0, 1] -> S = 1/4 (x3), 3/4 (x1)
    logits = torch.zeros(1, 4, 2, 2)
    target = torch.tensor([[[0, 0], [0, 1]]])
    expected = (3 * 0.25 + 0.75) / 4 * math.log(4)
    assert class_scaled_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(class_scale_map(target, 4), torch.tensor([[[0.25, 0.25], [0.25, 0.75]]]))


def test_counts_are_per_image_not_per_batch():
    # same image twice vs with a different second image: the first image's S must not change
    logits = torch.zeros(2, 4, 2, 2)
    a = torch.tensor([[0, 0], [0, 1]])
    b = torch.tensor([[1, 1], [1, 1]])  # a single-class image: S = 0 everywhere
    s = class_scale_map(torch.stack([a, b]), 4)
    torch.testing.assert_close(s[0], torch.tensor([[0.25, 0.25], [0.25, 0.75]]))
    torch.testing.assert_close(s[1], torch.zeros(2, 2))
    # mean over all 8 pixels: image b contributes zeros
    expected = (3 * 0.25 + 0.75) / 8 * math.log(4)
    assert class_scaled_cross_entropy(logits, torch.stack([a, b])).item() == pytest.approx(expected, rel=1e-6)


def test_l2_penalty_matches_numpy_and_skips_bias_and_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ConvTranspose2d(3, 2, 3), nn.Conv3d(2, 4, (2, 3, 3)), nn.Linear(4, 2)
    )
    with torch.no_grad():
        model[1].weight.fill_(5.0)  # batch norm scale: must not count
        model[0].bias.fill_(7.0)  # conv bias: must not count
    got = l2_penalty(model).item()
    assert got == pytest.approx(_numpy_l2(model), rel=1e-6)
    # by hand on a single known kernel: w = [1, 2, -2] -> 0.5 * 9
    one = nn.Conv2d(1, 1, (1, 3), bias=False)
    with torch.no_grad():
        one.weight.copy_(torch.tensor([1.0, 2.0, -2.0]).reshape(1, 1, 1, 3))
    assert l2_penalty(one).item() == pytest.approx(4.5)


def test_l2_covers_every_conv_of_the_colearn_net():
    torch.manual_seed(0)
    net = build_model("colearn", width=4)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d))]
    # 2 encoders x 4 blocks x 2 convs + 4 co-learning + 4 x (deconv + 2 convs) + 1x1 head
    assert len(convs) == 16 + 4 + 12 + 1
    assert l2_penalty(net).item() == pytest.approx(_numpy_l2(net), rel=1e-5)


def test_colearn_loss_total_matches_numpy():
    logits, target = _example(1)
    torch.manual_seed(0)
    net = build_model("tc", width=4)
    lam = 0.1
    got = colearn_loss(torch.from_numpy(logits), torch.from_numpy(target), net, l2_lambda=lam).item()
    expected = _numpy_scaled_ce(logits, target) + lam * _numpy_l2(net)
    assert got == pytest.approx(expected, rel=1e-5)
    assert colearn_loss(torch.from_numpy(logits), torch.from_numpy(target), net, l2_lambda=0).item() == pytest.approx(
        _numpy_scaled_ce(logits, target), rel=1e-5
    )


def test_loss_gradient_flows_and_bf16_logits_give_float32():
    logits = torch.randn(1, 4, 4, 4, requires_grad=True)
    target = torch.randint(0, 4, (1, 4, 4))
    loss = class_scaled_cross_entropy(logits.to(torch.bfloat16), target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (torch.full((1, 2, 2), 4), r"\[0, 3\]"),
        (torch.full((1, 2, 2), -1), r"\[0, 3\]"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.long), r"\(N, H, W\)"),
        (torch.zeros(1, 2, 2), "integer"),
    ],
)
def test_loss_rejects_bad_targets(target, match):
    with pytest.raises(ValueError, match=match):
        class_scaled_cross_entropy(torch.zeros(1, 4, 2, 2), target)


def test_uint8_targets_as_stored_in_model_input():
    logits, target = _example(2)
    expected = class_scaled_cross_entropy(torch.from_numpy(logits), torch.from_numpy(target))
    got = class_scaled_cross_entropy(torch.from_numpy(logits), torch.from_numpy(target.astype(np.uint8)))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
