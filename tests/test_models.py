"""Tests of colearn_pipeline.models: shapes, size checks, gradients, co-learning fusion, wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from colearn_pipeline.models import (
    DEFAULTS,
    MODEL_NAMES,
    CoLearningUnit,
    CoLearnNet,
    ConvSettings,
    PixelIntermix,
    build_model,
    colearn_loss,
    count_parameters,
    predict_proba,
    standardise_per_slice,
)

NARROW = 4  # width used by the tests to stay quick on CPU


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, **{"width": NARROW, **kwargs})


# --------------------------------------------------------------------------- shapes and sizes


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shape_256(name):
    net = _net(name)
    out = net(torch.randn(1, 2, 256, 256))
    assert out.shape == (1, 4, 256, 256)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size", [(16, 16), (32, 48), (80, 64)])
def test_shape_other_sizes_divisible_by_16(name, size):
    h, w = size
    out = _net(name, num_classes=3)(torch.randn(2, 2, h, w))
    assert out.shape == (2, 3, h, w)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_depth_changes_divisor(name):
    net = _net(name, depth=3)
    assert net(torch.randn(1, 2, 24, 40)).shape == (1, 4, 24, 40)  # divisible by 8, not 16
    with pytest.raises(ValueError, match=r"height 20 is not divisible by 2\*\*depth = 8"):
        net(torch.randn(1, 2, 20, 40))


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(("h", "w", "axis", "bad"), [(250, 256, "height", 250), (256, 72, "width", 72)])
def test_refuses_sizes_not_divisible(name, h, w, axis, bad):
    with pytest.raises(ValueError, match=rf"{axis} {bad} is not divisible by 2\*\*depth = 16"):
        _net(name)(torch.zeros(1, 2, h, w))


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (1, 3, 32, 32), (2, 32, 32)])
def test_refuses_wrong_channels_or_rank(name, shape):
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        _net(name)(torch.zeros(shape))


def test_fusion_maps_shapes():
    net = _net("colearn")
    logits, maps = net(torch.randn(2, 2, 64, 32), return_fusion_maps=True)
    assert logits.shape == (2, 4, 64, 32)
    assert [tuple(m.shape) for m in maps] == [(2, 2 * NARROW, 64 // 2**k, 32 // 2**k) for k in range(1, 5)]
    assert isinstance(net(torch.randn(1, 2, 16, 16)), torch.Tensor)


def test_predict_proba_is_softmax():
    net = _net("tc").eval()
    x = torch.randn(2, 2, 32, 32)
    p = predict_proba(net, x)
    assert p.shape == (2, 4, 32, 32)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, 32, 32))
    torch.testing.assert_close(p, torch.softmax(net(x), dim=1))


# --------------------------------------------------------------------------- gradients


def _grad_norm(module: nn.Module, kind=(nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)) -> list[float]:
    return [float(m.weight.grad.abs().sum()) for m in module.modules() if isinstance(m, kind)]


def _backward(net: nn.Module, size: int = 32) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 2, size, size)
    target = torch.randint(0, 4, (2, size, size))
    colearn_loss(net(x), target, net, l2_lambda=0.0).backward()


def test_gradients_reach_both_encoders_and_colearning_units():
    net = _net("colearn")
    _backward(net)
    for part in (net.ct_encoder, net.pet_encoder, net.colearn_units, net.reconstruction):
        norms = _grad_norm(part)
        assert norms and all(n > 0 for n in norms), (part.__class__.__name__, norms)
    # every co-learning unit's 3D kernel and bias gets a gradient
    for unit in net.colearn_units:
        assert unit.conv.weight.grad.abs().sum() > 0 and unit.conv.bias.grad.abs().sum() > 0
    # the CT and PET halves of each 3D kernel are both trained
    for unit in net.colearn_units:
        g = unit.conv.weight.grad  # (2c, c, 2, k, k)
        assert g[:, :, 0].abs().sum() > 0 and g[:, :, 1].abs().sum() > 0


@pytest.mark.parametrize("name", ["tb", "tc", "fs"])
def test_gradients_reach_baseline_encoders(name):
    net = _net(name)
    _backward(net)
    encoders = [net.ct_encoder, net.pet_encoder] if name == "tb" else [net.encoder]
    for enc in encoders + [net.reconstruction, net.head]:
        norms = _grad_norm(enc)
        assert norms and all(n > 0 for n in norms)
    if name == "tc":  # the first conv sees both modalities: both input-channel slices are trained
        g = net.encoder.blocks[0][0][0][0].weight.grad  # (c, 2, k, k)
        assert g[:, 0].abs().sum() > 0 and g[:, 1].abs().sum() > 0


# --------------------------------------------------------------------------- co-learning unit, by hand


def _hand_unit() -> CoLearningUnit:
    """c = 1, 3x3x2 kernel set by hand.

    Output channel 0 (weights CT): CT centre tap 1, PET centre tap 1, bias 0 -> ct + pet.
    Output channel 1 (weights PET): PET centre tap 2, PET right-neighbour tap 1, bias -1
    -> 2 pet(y, x) + pet(y, x + 1) - 1 (zero padding beyond the edge).
    """
    unit = CoLearningUnit(channels=1, conv=ConvSettings(kernel_size=3, negative_slope=0.1))
    with torch.no_grad():
        unit.conv.weight.zero_()  # (out 2, in 1, modality 2, 3, 3)
        unit.conv.weight[0, 0, 0, 1, 1] = 1.0
        unit.conv.weight[0, 0, 1, 1, 1] = 1.0
        unit.conv.weight[1, 0, 1, 1, 1] = 2.0
        unit.conv.weight[1, 0, 1, 1, 2] = 1.0
        unit.conv.bias.copy_(torch.tensor([0.0, -1.0]))
    return unit


def test_colearning_unit_and_fusion_by_hand():
    unit = _hand_unit()
    ct = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    pet = torch.tensor([[0.0, 1.0], [-1.0, 2.0]]).reshape(1, 1, 2, 2)
    fusion = unit(ct, pet)
    # channel 0: ct + pet = [[1, 3], [2, 6]]
    # channel 1: 2*pet + right(pet) - 1 = [[0+1-1, 2+0-1], [-2+2-1, 4+0-1]] = [[0, 1], [-1, 3]],
    #            Leaky ReLU(0.1) -> [[0, 1], [-0.1, 3]]
    expected_fusion = torch.tensor([[[1.0, 3.0], [2.0, 6.0]], [[0.0, 1.0], [-0.1, 3.0]]]).unsqueeze(0)
    torch.testing.assert_close(fusion, expected_fusion)
    fused = unit.fuse(fusion, ct, pet)
    # Eq. 4: channel 0 = fusion0 * ct, channel 1 = fusion1 * pet
    expected_fused = torch.tensor([[[1.0, 6.0], [6.0, 24.0]], [[0.0, 1.0], [0.1, 6.0]]]).unsqueeze(0)
    torch.testing.assert_close(fused, expected_fused)


def test_colearning_unit_matches_eq2_direct_sum():
    """Eq. 2 evaluated by explicit loops over (i, j, l) against the Conv3d, random weights, c = 3."""
    torch.manual_seed(3)
    c, k, h, w = 3, 3, 5, 4
    unit = CoLearningUnit(channels=c, conv=ConvSettings(kernel_size=k, negative_slope=0.1))
    ct, pet = torch.randn(1, c, h, w), torch.randn(1, c, h, w)
    got = unit(ct, pet)[0].detach().numpy()
    wts = unit.conv.weight.detach().numpy()  # (2c, c, 2, k, k)
    bias = unit.conv.bias.detach().numpy()
    x = np.stack([ct[0].numpy(), pet[0].numpy()], axis=1)  # (c, 2, h, w)
    pad = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    expected = np.empty((2 * c, h, w))
    for o in range(2 * c):
        for y in range(h):
            for xx in range(w):
                s = bias[o]
                for ci in range(c):
                    for mod in range(2):
                        for i in range(k):
                            for j in range(k):
                                s += wts[o, ci, mod, i, j] * xp[ci, mod, y + i, xx + j]
                expected[o, y, xx] = s if s > 0 else 0.1 * s
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_net_feeds_reconstruction_with_fusion_map_times_stacked_features():
    """Inside the net: reconstruction inputs == fusion map * cat([CT, PET]) at every scale."""
    net = _net("colearn").eval()
    captured: dict[str, list[torch.Tensor]] = {"ct": [], "pet": [], "recon": []}
    hooks = [blk.register_forward_hook(lambda m, i, o: captured["ct"].append(o)) for blk in net.ct_encoder.blocks]
    hooks += [blk.register_forward_hook(lambda m, i, o: captured["pet"].append(o)) for blk in net.pet_encoder.blocks]
    hooks += [
        blk.register_forward_pre_hook(lambda m, i: captured["recon"].append(i[0])) for blk in net.reconstruction.blocks
    ]
    with torch.no_grad():
        _, maps = net(torch.randn(1, 2, 32, 32), return_fusion_maps=True)
    for hook in hooks:
        hook.remove()
    fused = [f * torch.cat([c, p], dim=1) for f, c, p in zip(maps, captured["ct"], captured["pet"], strict=True)]
    recon_in = captured["recon"]
    torch.testing.assert_close(recon_in[0], fused[-1])  # deepest block: deepest fused map only
    for block_index in range(1, len(recon_in)):  # later blocks: [fused of its scale, previous output]
        scale = len(fused) - 1 - block_index
        torch.testing.assert_close(recon_in[block_index][:, : 2 * NARROW], fused[scale])


def test_fusion_maps_depend_on_both_modalities():
    net = _net("colearn").eval()
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        _, base = net(x, return_fusion_maps=True)
        x_pet = x.clone()
        x_pet[:, 1] += 1.0 * torch.randn(32, 32)
        _, changed = net(x_pet, return_fusion_maps=True)
    assert not torch.allclose(base[0], changed[0])


# --------------------------------------------------------------------------- FS intermixing


def test_pixel_intermix_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 2, 8, 8)).astype(np.float32) * np.array([3.0, 0.5], np.float32)[None, :, None, None]
    x += np.array([100.0, 2.0], np.float32)[None, :, None, None]
    w = 0.3

    def std(a):
        return (a - a.mean()) / a.std()

    expected = np.stack([std(w * std(x[n, 0]) + (1 - w) * std(x[n, 1])) for n in range(2)])[:, None]
    got = PixelIntermix(w)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert got.shape == (2, 1, 8, 8)


def test_pixel_intermix_weight_one_is_ct_and_half_is_authors_sum():
    x = torch.randn(3, 2, 16, 16) * 4 + 7
    torch.testing.assert_close(PixelIntermix(1.0)(x), standardise_per_slice(x[:, 0:1]), rtol=1e-5, atol=1e-5)
    s = standardise_per_slice(x)
    authors = standardise_per_slice(s[:, 0:1] + s[:, 1:2])
    torch.testing.assert_close(PixelIntermix(0.5)(x), authors, rtol=1e-5, atol=1e-5)


def test_standardise_constant_slice_is_zero_not_nan():
    out = standardise_per_slice(torch.full((1, 1, 4, 4), 5.0))
    assert torch.equal(out, torch.zeros_like(out))


def test_fs_blend_weight_is_used_and_checked():
    x = torch.randn(1, 2, 32, 32)
    torch.manual_seed(0)
    a = build_model("fs", width=NARROW, fs_blend_weight=0.5).eval()
    torch.manual_seed(0)
    b = build_model("fs", width=NARROW, fs_blend_weight=0.9).eval()
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
    with pytest.raises(ValueError, match="fs_blend_weight"):
        build_model("fs", fs_blend_weight=1.5)


# --------------------------------------------------------------------------- build_model, determinism


def test_build_model_names_and_kwargs():
    assert MODEL_NAMES == ("colearn", "tb", "tc", "fs")
    with pytest.raises(ValueError, match="unknown model name 'unet'"):
        build_model("unet")
    with pytest.raises(TypeError, match="widht"):
        build_model("colearn", widht=8)
    # every contract keyword is accepted by every net (unused ones ignored)
    for name in MODEL_NAMES:
        net = build_model(name, **{**DEFAULTS, "width": NARROW, "depth": 2})
        assert net.width == NARROW and net.depth == 2
    assert isinstance(build_model("COLEARN", width=NARROW), CoLearnNet)


def test_kwargs_take_effect():
    net = build_model("colearn", width=NARROW, kernel_size=5, fusion_kernel_size=1, negative_slope=0.2, num_classes=6)
    assert net.ct_encoder.blocks[0][0][0][0].kernel_size == (5, 5)
    assert net.colearn_units[0].conv.kernel_size == (2, 1, 1)
    assert net.colearn_units[0].act.negative_slope == 0.2
    assert net.head.out_channels == 6


def test_conv_settings_reach_every_block():
    """One ConvSettings bundle sets kernel, slope and batch-norm settings of every ConvNormAct."""
    from colearn_pipeline.models import ConvNormAct, Encoder, Reconstruction

    conv = ConvSettings(kernel_size=5, negative_slope=0.3, bn_eps=1e-5, bn_momentum=0.25)
    encoder = Encoder(1, NARROW, 2, conv)
    reconstruction = Reconstruction(NARROW, NARROW, NARROW, 2, conv)
    layers = [m for part in (encoder, reconstruction) for m in part.modules() if isinstance(m, ConvNormAct)]
    assert len(layers) == 8
    for conv_layer, norm, act in layers:
        assert conv_layer.kernel_size == (5, 5)
        assert (norm.eps, norm.momentum, act.negative_slope) == (1e-5, 0.25, 0.3)
    assert all(block.deconv.kernel_size == (5, 5) for block in reconstruction.blocks)
    with pytest.raises(ValueError, match="odd"):
        ConvNormAct(1, 1, ConvSettings(kernel_size=4))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_deterministic_given_seed(name):
    x = torch.randn(2, 2, 32, 32)
    outs, states = [], []
    for _ in range(2):
        net = _net(name)
        states.append(net.state_dict())
        outs.append(net(x))
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    assert torch.equal(outs[0], outs[1])


def test_he_init_zero_bias():
    torch.manual_seed(0)
    net = build_model("colearn", width=64, depth=1)
    unit = net.colearn_units[0].conv
    assert torch.equal(unit.bias, torch.zeros_like(unit.bias))
    fan_in = 64 * 2 * 3 * 3
    expected_std = np.sqrt(2.0 / (1 + 0.1**2) / fan_in)
    assert unit.weight.std().item() == pytest.approx(expected_std, rel=0.05)


def _expected_parameters(name: str, c: int, depth: int = 4, k: int = 3, classes: int = 4, skips: bool = False) -> int:
    """Count by hand: conv kernel + bias, batch norm scale + shift; c filters everywhere."""

    def conv(cin, cout, kk=k):
        return cin * cout * kk * kk + cout

    def conv_bn(cin, cout):
        return conv(cin, cout) + 2 * cout

    def encoder(cin):
        return sum(conv_bn(cin if b == 0 else c, c) + conv_bn(c, c) for b in range(depth))

    def reconstruction(deepest, skip):
        return sum(conv(deepest if b == 0 else skip + c, c) + 2 * conv_bn(c, c) for b in range(depth))

    head = conv(c, classes, 1)
    if name == "colearn":
        units = depth * (c * 2 * c * 2 * 3 * 3 + 2 * c)
        return 2 * encoder(1) + units + reconstruction(2 * c, 2 * c) + head
    if name == "tb":
        return 2 * encoder(1) + reconstruction(2 * c, 2 * c if skips else 0) + head
    if name == "tc":
        return encoder(2) + reconstruction(c, c if skips else 0) + head
    return encoder(1) + reconstruction(c, c if skips else 0) + head


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("skips", [False, True])
def test_parameter_count_matches_hand_count(name, skips):
    assert count_parameters(build_model(name, width=8, baseline_skips=skips)) == _expected_parameters(
        name, 8, skips=skips
    )


def test_parameter_counts_default_width():
    counts = {name: count_parameters(build_model(name)) for name in MODEL_NAMES}
    assert counts == {name: _expected_parameters(name, 64) for name in MODEL_NAMES}
    assert counts["colearn"] > counts["tb"] > counts["tc"] > counts["fs"]


def test_baseline_skips_feed_per_scale_features():
    torch.manual_seed(0)
    net = build_model("tb", width=NARROW, baseline_skips=True).eval()
    inputs: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda m, i: inputs.append(i[0])) for b in net.reconstruction.blocks]
    with torch.no_grad():
        net(torch.randn(1, 2, 32, 32))
    for h in hooks:
        h.remove()
    assert [t.shape[1] for t in inputs] == [2 * NARROW] + [3 * NARROW] * 3


def test_to_channels_last_keeps_outputs():
    from colearn_pipeline.models import to_channels_last

    torch.manual_seed(0)
    net = build_model("colearn", width=NARROW).eval()
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        expected = net(x)
        to_channels_last(net)
        assert net.colearn_units[0].conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert net.ct_encoder.blocks[1][0][0][0].weight.is_contiguous(memory_format=torch.channels_last)
        got = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)


def test_parameter_table_cli(capsys):
    from colearn_pipeline.models.cli import main

    main(["--width", "8"])
    out = capsys.readouterr().out
    for name in MODEL_NAMES:
        assert f"| {name} |" in out
    assert f"{_expected_parameters('colearn', 8):,}" in out


def test_conv_layer_order_is_batchnorm_then_activation():
    """Paper order (Sec. III-C): conv -> BN -> Leaky ReLU, so in training mode every channel's
    output has a positive mean (the code's ReLU -> BN order would give zero means)."""
    from colearn_pipeline.models import ConvNormAct

    torch.manual_seed(0)
    layer = ConvNormAct(3, 8, ConvSettings(kernel_size=3, negative_slope=0.1)).train()
    assert [type(m) for m in layer] == [nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU]
    out = layer(torch.randn(4, 3, 16, 16))
    assert (out.mean(dim=(0, 2, 3)) > 0.2).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_come_straight_from_the_1x1_conv(name):
    """No activation or batch norm after the 1x1 conv (the paper's o of Eq. 5)."""
    net = _net(name).eval()
    feats: list[torch.Tensor] = []
    hook = net.head.register_forward_hook(lambda m, i, o: feats.append(o))
    with torch.no_grad():
        logits = net(torch.randn(1, 2, 32, 32))
    hook.remove()
    assert net.head.kernel_size == (1, 1)
    assert torch.equal(feats[0], logits)
