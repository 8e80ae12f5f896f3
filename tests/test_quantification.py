"""Clinical quantification on hand-made volumes whose answers are known: MTV, SUVmax, SUVpeak (PERCIST), SUVmean, TLG."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from colearn_pipeline.evaluation.quantification import quantify_tumours, sphere_kernel

TUMOUR = 3
RADIUS_1ML_MM = (3000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)  # 6.2035 mm


def _sphere_offsets(spacing_xyz_mm):
    """Voxel offsets (dz, dy, dx) whose centres lie within 6.2035 mm: counted by brute force, independently."""
    sx, sy, sz = spacing_xyz_mm
    reach = range(-10, 11)
    return [(dz, dy, dx) for dz, dy, dx in itertools.product(reach, reach, reach)
            if (dz * sz) ** 2 + (dy * sy) ** 2 + (dx * sx) ** 2 <= RADIUS_1ML_MM ** 2]


def test_sphere_kernel_is_about_one_millilitre():
    for spacing in [(1.0, 1.0, 1.0), (0.98, 0.98, 3.0), (4.0, 4.0, 2.0)]:
        assert sphere_kernel(spacing).sum() == len(_sphere_offsets(spacing))
    for spacing in [(1.0, 1.0, 1.0), (0.98, 0.98, 3.0)]:  # CT grids: the voxel sphere is close to 1 mL
        assert sphere_kernel(spacing).sum() * np.prod(spacing) / 1000 == pytest.approx(1.0, rel=0.1)


def test_hot_core_gives_known_suvpeak_max_mean_volume_and_tlg():
    spacing = (1.0, 1.0, 2.0)  # x, y, z: anisotropic
    labels = np.zeros((20, 40, 40), np.uint8)
    suv = np.full(labels.shape, 0.5, np.float32)
    labels[3:17, 8:32, 8:32] = TUMOUR           # 14 x 24 x 24 voxels, 2 mm slices
    suv[3:17, 8:32, 8:32] = 2.0
    suv[9:12, 18:21, 24:27] = 10.0              # a 3x3x3 hot core centred at (10, 19, 25)
    suv[4, 9, 9] = 12.0                         # one hotter voxel near the edge: the max, not the peak
    figures = quantify_tumours(labels, suv, spacing, tumour_label=TUMOUR)
    (c,) = figures["components"]
    offsets = _sphere_offsets(spacing)
    core = {(z, y, x) for z in range(9, 12) for y in range(18, 21) for x in range(24, 27)}
    inside = [(10 + dz, 19 + dy, 25 + dx) for dz, dy, dx in offsets]
    expected_peak = sum(10.0 if v in core else 2.0 for v in inside) / len(inside)  # the sphere lies in the tumour
    assert c["suv_peak"] == pytest.approx(expected_peak, rel=1e-9)
    z, y, x = c["peak_index_zyx"]  # several centres hold the whole core (ties): any of them
    held = [(z + dz, y + dy, x + dx) for dz, dy, dx in offsets]
    assert core <= set(held) and labels[z, y, x] == TUMOUR
    assert c["suv_max"] == 12.0
    n = 14 * 24 * 24
    assert c["voxels"] == n and c["volume_ml"] == pytest.approx(n * 2.0 / 1000)
    mean = (2.0 * (n - 28) + 10.0 * 27 + 12.0) / n
    assert c["suv_mean"] == pytest.approx(mean, rel=1e-6)
    assert c["tlg_g"] == pytest.approx(n * 2.0 / 1000 * mean, rel=1e-6)


def test_peak_sphere_averages_background_at_the_tumour_edge_and_image_border():
    spacing = (1.0, 1.0, 1.0)
    labels = np.zeros((30, 30, 30), np.uint8)
    suv = np.zeros(labels.shape, np.float32)
    labels[0, 0, 0] = TUMOUR                    # a one-voxel tumour in the image corner
    suv[0, 0, 0] = 8.0
    (c,) = quantify_tumours(labels, suv, spacing, tumour_label=TUMOUR)["components"]
    in_image = [o for o in _sphere_offsets(spacing) if min(o) >= 0]  # the octant of the sphere inside the image
    assert c["suv_peak"] == pytest.approx(8.0 / len(in_image), rel=1e-9)
    assert c["suv_max"] == c["suv_mean"] == 8.0


def test_components_ranked_with_totals_and_uncertainty():
    spacing = (2.0, 2.0, 2.0)
    labels = np.zeros((12, 16, 16), np.uint8)
    suv = np.ones(labels.shape, np.float32)
    unc = np.zeros(labels.shape, np.float32)
    labels[1:3, 1:3, 1:3] = TUMOUR              # 8 voxels
    suv[1:3, 1:3, 1:3] = 4.0
    unc[1:3, 1:3, 1:3] = 0.5
    labels[6:10, 8:12, 8:12] = TUMOUR           # 64 voxels
    suv[6:10, 8:12, 8:12] = 3.0
    unc[6:10, 8:12, 8:12] = 0.1
    labels[5, 5, 5] = TUMOUR                    # an isolated single voxel
    suv[5, 5, 5] = 6.0
    out = quantify_tumours(labels, suv, spacing, tumour_label=TUMOUR, uncertainty=unc)
    sizes = [c["voxels"] for c in out["components"]]
    assert sizes == [64, 8, 1] and [c["component"] for c in out["components"]] == [1, 2, 3]
    big, small, single = out["components"]
    assert big["uncertainty_mean"] == pytest.approx(0.1) and small["uncertainty_mean"] == pytest.approx(0.5)
    t = out["totals"]
    assert t["n_components"] == 3 and t["volume_ml"] == pytest.approx(73 * 8 / 1000)
    assert t["tlg_g"] == pytest.approx(sum(c["volume_ml"] * c["suv_mean"] for c in out["components"]))
    assert t["suv_max"] == 6.0 and t["suv_peak"] == max(c["suv_peak"] for c in out["components"])
    assert t["suv_mean"] == pytest.approx((64 * 3 + 8 * 4 + 6) / 73)
    assert t["uncertainty_mean"] == pytest.approx((64 * 0.1 + 8 * 0.5 + 0) / 73)
    # 2 mm voxels: the 1 mL sphere holds 123 voxels; the 4x4x4 cube of 3.0 in 1.0 background peaks below 3
    assert 1.0 < big["suv_peak"] < 3.0 and single["suv_peak"] < single["suv_max"]
    assert "uncertainty_mean" not in quantify_tumours(labels, suv, spacing, tumour_label=TUMOUR)["components"][0]


def test_empty_study_and_mismatched_grids():
    labels = np.zeros((4, 5, 6), np.uint8)
    out = quantify_tumours(labels, np.zeros(labels.shape), (1, 1, 1), tumour_label=TUMOUR)
    assert out["components"] == [] and out["totals"]["n_components"] == 0 and out["totals"]["suv_peak"] is None
    with pytest.raises(ValueError, match="uncertainty"):
        quantify_tumours(labels, np.zeros(labels.shape), (1, 1, 1), tumour_label=TUMOUR, uncertainty=np.zeros(3))
