"""Ablation nets: tb_skips is the co-learning net with fusion maps fixed to 1; tb_skips_conv
has the co-learning net's parameter count (within 5 %) at every width."""

import pytest
import torch

from colearn_pipeline.models import ABLATION_NAMES, build_model, count_parameters


@pytest.mark.parametrize("width", [4, 8, 64])
def test_capacity_matched_control_within_five_percent(width):
    colearn = count_parameters(build_model("colearn", width=width))
    control = count_parameters(build_model("tb_skips_conv", width=width))
    assert abs(control - colearn) / colearn <= 0.05
    assert count_parameters(build_model("tb_skips", width=width)) < 0.8 * colearn  # the gap it closes


def test_tb_skips_is_colearn_with_unit_fusion_maps():
    torch.manual_seed(0)
    colearn = build_model("colearn", width=4, depth=2).eval()
    tb_skips = build_model("tb_skips", width=4, depth=2).eval()
    missing, unexpected = tb_skips.load_state_dict(colearn.state_dict(), strict=False)
    assert not missing and all(k.startswith("colearn_units") for k in unexpected)
    for unit in colearn.colearn_units:
        unit.forward = lambda ct, pet: torch.ones_like(torch.cat([ct, pet], dim=1))
    x = torch.randn(2, 2, 16, 16)
    torch.testing.assert_close(tb_skips(x), colearn(x))


@pytest.mark.parametrize("name", ABLATION_NAMES)
def test_ablation_nets_build_by_name_and_map_shapes(name):
    net = build_model(name, width=4, depth=2, baseline_skips=False, fs_blend_weight=0.5)
    assert net(torch.randn(1, 2, 16, 16)).shape == (1, 4, 16, 16)
