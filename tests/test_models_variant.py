"""The authors'-code variant: each of its four switches changes exactly what it says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from colearn_pipeline.models import build_model
from colearn_pipeline.models.blocks import AuthorsOutputHead, ConvNormAct, OutputHead
from colearn_pipeline.models.loss import (
    class_scaled_cross_entropy,
    colearn_loss,
    l2_penalty,
)
from colearn_pipeline.models.nets import VARIANTS

SMALL = {"width": 4, "depth": 2}
NETS = ("colearn", "tb", "tc", "fs", "tb_skips", "tb_skips_conv")


def _modules(net: nn.Module) -> dict[str, tuple]:
    """Name -> (type, slope or None) of every leaf module."""
    return {name: (type(m).__name__, getattr(m, "negative_slope", None))
            for name, m in net.named_modules() if not list(m.children())}


def _diff(a: nn.Module, b: nn.Module) -> set[str]:
    ma, mb = _modules(a), _modules(b)
    return {n for n in ma.keys() | mb.keys() if ma.get(n) != mb.get(n)}


def test_the_paper_text_is_the_default():
    net = build_model("colearn", **SMALL)
    assert _modules(net) == _modules(build_model("colearn", **SMALL, variant="paper"))
    assert isinstance(net.head, OutputHead) and net.decoder_l2_lambda is None
    assert all(u.act.negative_slope == 0.1 for u in net.colearn_units)
    block = next(m for m in net.modules() if isinstance(m, ConvNormAct))
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU]


@pytest.mark.parametrize("net_name", ["colearn", "tb_skips_conv"])
def test_fusion_slope_switch_changes_only_the_units_activation(net_name):
    paper = build_model(net_name, **SMALL)
    switched = build_model(net_name, **SMALL, fusion_negative_slope=0.2)
    changed = _diff(paper, switched)
    assert changed and all(n.endswith(".act") and "_units." in n for n in changed), changed
    assert {_modules(switched)[n][1] for n in changed} == {0.2}
    assert {_modules(paper)[n][1] for n in changed} == {0.1}


def test_head_switch_changes_only_the_head():
    for name in NETS:
        paper, switched = build_model(name, **SMALL), build_model(name, **SMALL, head="conv_act_bn")
        assert isinstance(switched.head, AuthorsOutputHead)
        assert [type(m) for m in switched.head] == [nn.Conv2d, nn.LeakyReLU, nn.BatchNorm2d]
        assert switched.head[0].kernel_size == (1, 1) and switched.head[2].num_features == 4
        assert all(n.startswith("head") for n in _diff(paper, switched)), name


def test_order_switch_changes_every_conv_block_and_nothing_else():
    for name in NETS:
        paper, switched = build_model(name, **SMALL), build_model(name, **SMALL, act_before_norm=True)
        blocks = [m for m in switched.modules() if isinstance(m, ConvNormAct)]
        assert blocks and all([type(m) for m in b] == [nn.Conv2d, nn.LeakyReLU, nn.BatchNorm2d] for b in blocks)
        # same modules, same parameter shapes: only the order inside each ConvNormAct moved
        assert sorted(_modules(paper).values(), key=str) == sorted(_modules(switched).values(), key=str)
        assert [p.shape for p in paper.parameters()] == [p.shape for p in switched.parameters()]
        assert not isinstance(switched.head, AuthorsOutputHead)


def test_decoder_l2_switch_changes_only_the_loss_on_reconstruction_convs():
    torch.manual_seed(0)
    paper = build_model("colearn", **SMALL)
    switched = build_model("colearn", **SMALL, decoder_l2_lambda=2e-4)
    switched.load_state_dict(paper.state_dict())
    assert not _diff(paper, switched)
    x, y = torch.randn(2, 2, 16, 16), torch.randint(0, 4, (2, 16, 16))
    logits = paper(x)
    decoder = 0.5 * sum(float(m.weight.pow(2).sum()) for name, m in paper.named_modules()
                        if isinstance(m, nn.Conv2d) and name.startswith("reconstruction.") and ".convs." in name)
    ce, total = float(class_scaled_cross_entropy(logits, y)), float(l2_penalty(paper))
    assert 0 < decoder < total
    assert float(colearn_loss(logits, y, paper, 0.1)) == pytest.approx(ce + 0.1 * total, rel=1e-6)
    assert float(colearn_loss(logits, y, switched, 0.1)) == pytest.approx(
        ce + 0.1 * (total - decoder) + 2e-4 * decoder, rel=1e-6)


def test_authors_code_preset_sets_all_four_and_a_switch_can_override_it():
    v = VARIANTS["authors_code"]
    assert (v.fusion_negative_slope, v.head, v.act_before_norm, v.decoder_l2_lambda) == (0.2, "conv_act_bn", True, 2e-4)
    net = build_model("colearn", **SMALL, variant="authors_code")
    assert isinstance(net.head, AuthorsOutputHead) and net.decoder_l2_lambda == 2e-4
    assert all(u.act.negative_slope == 0.2 for u in net.colearn_units)
    assert [type(m) for m in net.ct_encoder.blocks[0][0][0]] == [nn.Conv2d, nn.LeakyReLU, nn.BatchNorm2d]
    assert build_model("colearn", **SMALL, variant="authors_code", head="conv").head.__class__ is OutputHead
    out = net(torch.randn(2, 2, 16, 16))
    assert out.shape == (2, 4, 16, 16)
    with pytest.raises(ValueError, match="variant"):
        build_model("colearn", **SMALL, variant="tensorflow")
    with pytest.raises(ValueError, match="head"):
        build_model("colearn", **SMALL, head="softmax")
