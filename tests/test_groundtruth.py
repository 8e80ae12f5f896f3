"""Unit tests of colearn_pipeline.groundtruth on a small synthetic thorax (tests/_groundtruth_torso.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from _groundtruth_torso import SPACING_XYZ_MM, make_torso
from colearn_pipeline.groundtruth import (
    LABELS,
    compose_labels,
    derive_labels,
    dice,
    move_seed_to_peak,
    optimal_threshold_hu,
    segment_lungs,
    segment_mediastinum,
    segment_tumours,
    select_slices,
)
from colearn_pipeline.groundtruth.lungs import consolidated_lung
from colearn_pipeline.groundtruth.quality import review_reasons
from colearn_pipeline.groundtruth.tumours import compactness


@pytest.fixture(scope="module")
def torso():
    return make_torso(seed=3)


@pytest.fixture(scope="module")
def lungs(torso):
    ct, _, _ = torso
    return segment_lungs(ct, SPACING_XYZ_MM, return_info=True)


# ---------------------------------------------------------------- optimal threshold
def test_optimal_threshold_is_midpoint_of_two_classes():
    values = np.concatenate([np.full(3000, -900.0), np.full(1000, 0.0)])
    assert optimal_threshold_hu(values) == pytest.approx(-450.0, abs=1.0)


def test_optimal_threshold_does_not_depend_on_start_and_clips_padding():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-850, 30, 5000), rng.normal(40, 30, 8000), np.full(4000, -3024.0)])
    t1 = optimal_threshold_hu(values, initial_hu=-500)
    t2 = optimal_threshold_hu(values, initial_hu=-100)
    assert t1 == pytest.approx(t2, abs=1.0)
    # Padding is clipped to -1024, so the non-body mean is about (5000*-850 + 4000*-1024) / 9000.
    expected = 0.5 * ((5000 * -850 + 4000 * -1024) / 9000 + 40)
    assert t1 == pytest.approx(expected, abs=5.0)


def test_optimal_threshold_rejects_one_sided_data():
    with pytest.raises(ValueError):
        optimal_threshold_hu(np.full(100, 50.0))


# ---------------------------------------------------------------- lungs
def test_lungs_match_truth(torso, lungs):
    _, _, truth = torso
    mask, info = lungs
    assert mask.dtype == bool
    assert info["n_components"] == 2
    assert -700 < info["threshold_hu"] < -200
    assert dice(mask, truth["lungs"]) >= 0.97


def test_lungs_exclude_outside_air_table_and_trachea(torso, lungs):
    _, _, truth = torso
    mask, info = lungs
    assert info["airway_threshold_hu"] is not None
    assert not (mask & truth["table"]).any()
    # The trachea (above the carina, z >= 23) is not lung.
    assert not (mask[23:] & truth["airway"][23:]).any()
    # Vessels are filled: the lungs have no holes in any slice.
    assert np.array_equal(mask, ndi.binary_fill_holes(mask, structure=np.array([[[0] * 3] * 3, [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0] * 3] * 3])))


def test_lungs_keep_trachea_when_airway_removal_is_off(torso):
    ct, _, truth = torso
    mask = segment_lungs(ct, SPACING_XYZ_MM, remove_airway=False, max_components=1)
    # Trachea and lungs form one component, so the trachea is kept with them.
    assert (mask[23:] & truth["airway"][23:]).sum() > 0.5 * truth["airway"][23:].sum()


def test_lungs_fixed_threshold_is_used(torso):
    ct, _, _ = torso
    _, info = segment_lungs(ct, SPACING_XYZ_MM, threshold_hu=-600.0, return_info=True)
    assert info["threshold_hu"] == -600.0


def test_lungs_reject_2d_input():
    with pytest.raises(ValueError):
        segment_lungs(np.zeros((8, 8)), SPACING_XYZ_MM)


# ---------------------------------------------------------------- mediastinum
def test_mediastinum_matches_truth_and_avoids_lungs_and_spine(torso, lungs):
    ct, _, truth = torso
    mask, info = segment_mediastinum(ct, lungs[0], SPACING_XYZ_MM, return_info=True)
    assert info["n_seeds"] > 10
    assert not (mask & lungs[0]).any()
    assert not (mask & truth["spine"]).any()
    assert not (mask & truth["table"]).any()
    assert dice(mask, truth["mediastinum"]) >= 0.85


def test_mediastinum_window_matters(torso, lungs):
    ct, _, _ = torso
    # A window that excludes fat and soft tissue grows nothing from the automatic seeds.
    mask = segment_mediastinum(ct, lungs[0], SPACING_XYZ_MM, lower_hu=400.0, upper_hu=500.0)
    assert not mask.any()


def _slab_with_abdomen():
    """Two lungs over the domes: on z 1..3 the lung bases are rings round the liver and the spleen.

    Returns ct, lungs, spacing; superior is at high z. Between the lungs (columns 20..39) lies
    soft tissue on every slice, and a fat band runs along the chest wall lateral of each lung.
    """
    spacing = (2.0, 2.0, 5.0)
    ct = np.full((12, 40, 60), 40.0, dtype=np.float32)
    lungs = np.zeros(ct.shape, bool)
    lungs[1:, 5:35, 5:20] = True
    lungs[1:, 5:35, 40:55] = True
    lungs[1:4, 10:30, 9:18] = False  # lung bases: rings round the domes
    lungs[1:4, 10:30, 42:51] = False
    ct[lungs] = -850.0
    ct[:, 5:35, 2:5] = -100.0  # extrapleural fat lateral of the lungs
    ct[:, 5:35, 55:58] = -100.0
    ct[:4][~lungs[:4]] = 60.0  # liver and spleen under the domes
    ct[:, :, :2] = ct[:, :, 58:] = 40.0
    return ct, lungs, spacing


def test_mediastinum_stays_between_the_lungs_and_above_the_diaphragm():
    ct, lungs, spacing = _slab_with_abdomen()
    kwargs = dict(closing_radius_mm=0.0, smoothing_sigma_mm=0.0)
    mask, info = segment_mediastinum(ct, lungs, spacing, return_info=True, superior_at_high_z=True, **kwargs)
    assert info["n_seeds"] >= 6
    assert mask[6:, 10:30, 24:36].all()  # the soft tissue between the lungs
    assert not mask[:, :, :5].any() and not mask[:, :, 55:].any()  # never lateral of a lung
    assert not mask[:4, 10:30, 9:18].any() and not mask[:4, 10:30, 42:51].any()  # not in the organs under the domes
    assert not (mask & lungs).any()
    # The same volume stored feet-last gives the same mask, flipped.
    flipped = segment_mediastinum(ct[::-1], lungs[::-1], spacing, superior_at_high_z=False, **kwargs)
    assert np.array_equal(flipped[::-1], mask)


def test_below_diaphragm_marks_what_lies_under_the_lung_bases():
    from colearn_pipeline.groundtruth import below_diaphragm

    _, lungs, spacing = _slab_with_abdomen()
    below_all, under_dome = below_diaphragm(lungs, spacing)
    assert under_dome[1:3, 10:30, 9:18].all()  # liver under the right dome (lung directly above)
    assert not (below_all | under_dome)[5:, 10:30, 25:35].any()  # between the lungs, above their bases
    assert below_all[0].all()  # under every lung base


def test_heart_under_lung_lying_over_it_is_not_cut_by_the_floor():
    # A heart between lungs 100 mm apart, with lung lying over it (z >= 9): the floor "below every
    # lung base within 30 mm" cuts a column out of its centre; the heart surrounds that column.
    spacing = (2.0, 2.0, 5.0)
    ct = np.full((14, 50, 100), 40.0, dtype=np.float32)
    lungs = np.zeros(ct.shape, bool)
    lungs[1:, 5:45, 5:25] = lungs[1:, 5:45, 75:95] = True
    lungs[9:, 20:30, 25:75] = True
    ct[lungs] = -850.0
    kwargs = dict(superior_at_high_z=True, closing_radius_mm=0.0, smoothing_sigma_mm=0.0)
    cut = segment_mediastinum(ct, lungs, spacing, floor_enclosed_fraction=2.0, **kwargs)  # give-back off
    kept = segment_mediastinum(ct, lungs, spacing, **kwargs)
    assert not cut[1:9, 10:40, 45:55].any()
    assert kept[1:9, 10:40, 45:55].all()
    # Never lateral of a lung's medial edge by more than the lung margin given back (2 mm).
    assert not (kept & lungs).any() and not kept[:, :, :23].any() and not kept[:, :, 77:].any()


def test_floor_gives_back_a_column_cut_out_of_the_heart_but_not_the_abdomen():
    from colearn_pipeline.groundtruth.mediastinum import enclosed_by_growth

    grown = np.zeros((2, 20, 30), bool)
    candidate = np.zeros_like(grown)
    lungs = np.zeros_like(grown)
    lungs[:, :, :3] = lungs[:, :, 27:] = True
    # Slice 0: a column cut out of the heart's centre, the heart all round it.
    grown[0, 4:16, 8:22] = True
    grown[0, 8:12, 13:17] = False
    candidate[0, 8:12, 13:17] = True
    # Slice 1: the liver under the heart, bordered by the grown heart on one side only.
    grown[1, 2:6, 8:22] = True
    candidate[1, 6:18, 3:27] = True
    given_back = enclosed_by_growth(grown, candidate, lungs, 0.6)
    assert given_back[0, 8:12, 13:17].all() and given_back[0].sum() == 16
    assert not given_back[1].any()
    # Lungs do not count against the rim: a cut bordered by lung and heart alone comes back.
    grown[1] = False
    grown[1, 4:16, 3:15] = True
    candidate[1] = False
    candidate[1, 8:12, 3:10] = True
    assert enclosed_by_growth(grown, candidate, lungs, 0.6)[1, 8:12, 3:10].all()


def test_superior_end_is_found_from_the_airway_or_the_lung_profile(torso, lungs):
    from colearn_pipeline.groundtruth.mediastinum import superior_is_high_z

    mask, info = lungs
    assert superior_is_high_z(mask, info["airway_mask"]) and not superior_is_high_z(mask[::-1], info["airway_mask"][::-1])
    # The phantom-like torso: lungs widest nearer their base.
    profile = np.zeros((10, 4, 4), bool)
    for z, width in enumerate([4, 4, 4, 4, 3, 3, 2, 2, 1, 1]):
        profile[z, :width, :width] = True
    assert superior_is_high_z(profile) and not superior_is_high_z(profile[::-1])


def test_lungs_that_touch_are_split_at_their_junction():
    from colearn_pipeline.groundtruth.mediastinum import _two_lungs

    lung = np.zeros((40, 60), bool)
    lung[5:35, 5:28] = True
    lung[5:35, 32:55] = True
    lung[5:8, 28:32] = True  # anterior junction line
    right, left = _two_lungs(lung, 10.0)
    assert not right[:, 32:].any() and not left[:, :28].any()
    assert right.sum() + left.sum() == lung.sum()


def test_mediastinum_manual_seeds(torso, lungs):
    ct, _, truth = torso
    fat = np.argwhere(truth["mediastinum"] & (ct < -60))
    z, y, x = (int(v) for v in fat[len(fat) // 2])  # a mediastinal fat voxel
    mask, info = segment_mediastinum(ct, lungs[0], SPACING_XYZ_MM, seeds_zyx=[(z, y, x)], return_info=True)
    assert info["seeds_zyx"] == [(z, y, x)]
    assert mask[z, y, x]


# ---------------------------------------------------------------- tumours
def test_tumour_40_percent_of_peak(torso):
    _, suv, truth = torso
    mask, info = segment_tumours(suv, [truth["seed_zyx"]], SPACING_XYZ_MM)
    assert dice(mask, truth["tumour"]) >= 0.8
    (entry,) = info
    assert entry["peak_zyx"] != tuple(int(v) for v in truth["seed_zyx"])  # the seed moved
    assert truth["tumour"][entry["peak_zyx"]]
    assert entry["threshold_suv"] == pytest.approx(0.4 * entry["peak_suv"])
    assert entry["voxels"] == int(mask.sum())
    assert not entry["capped"]
    assert np.all(suv[mask] >= entry["threshold_suv"])


def test_tumour_fraction_changes_size(torso):
    _, suv, truth = torso
    small, _ = segment_tumours(suv, [truth["seed_zyx"]], SPACING_XYZ_MM, peak_fraction=0.7)
    large, _ = segment_tumours(suv, [truth["seed_zyx"]], SPACING_XYZ_MM, peak_fraction=0.2)
    assert small.sum() < large.sum()
    assert np.all(large[small])


def test_tumour_cap_stops_leak():
    spacing = (2.0, 2.0, 2.0)
    suv = np.ones((30, 30, 30), dtype=np.float32)  # a uniform plateau leaks everywhere at 40%
    mask, info = segment_tumours(suv, [(15, 15, 15)], spacing, max_radius_mm=10.0)
    assert info[0]["peak_fraction"] == pytest.approx(0.7)  # raised as far as allowed, still leaking
    assert info[0]["capped"]
    zz, yy, xx = np.nonzero(mask)
    assert np.max(np.sqrt(((zz - 15) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2))) * 2.0 <= 10.0 + 1e-6


def test_tumour_union_and_empty_finding():
    spacing = (1.0, 1.0, 1.0)
    suv = np.zeros((20, 20, 40), dtype=np.float32)
    suv[10, 10, 8] = 5.0
    suv[10, 10, 30] = 5.0
    mask, info = segment_tumours(suv, [(10, 10, 9), (10, 11, 29), (2, 2, 20)], spacing, seed_search_radius_mm=3.0)
    assert mask.sum() == 2
    assert [e["voxels"] for e in info] == [1, 1, 0]


def test_move_seed_to_peak_respects_radius():
    suv = np.zeros((10, 10, 10))
    suv[5, 5, 9] = 10.0
    suv[5, 5, 6] = 3.0
    assert move_seed_to_peak(suv, (5, 5, 5), (1.0, 1.0, 1.0), radius_mm=2.0) == (5, 5, 6)
    # A seed on a plateau (no uptake around it) takes the ball's maximum.
    assert move_seed_to_peak(suv, (5, 5, 2), (1.0, 1.0, 1.0), radius_mm=2.0) == (5, 5, 2)
    assert move_seed_to_peak(suv, (2, 5, 9), (1.0, 1.0, 1.0), radius_mm=4.0) == (5, 5, 9)


def test_move_seed_to_peak_keeps_a_node_beside_a_hotter_lesion():
    # A faint node (peak 4 at x=3) 6 voxels from a hot primary (peak 20 at x=9), blurred together.
    x = np.arange(14.0)
    profile = 4.0 * np.exp(-((x - 3) ** 2) / 4.0) + 20.0 * np.exp(-((x - 9) ** 2) / 4.0)
    bump = np.exp(-((np.arange(5.0) - 2) ** 2) / 4.0)
    suv = bump[:, None, None] * bump[None, :, None] * profile[None, None, :]
    assert move_seed_to_peak(suv, (2, 2, 4), (1.0, 1.0, 1.0), radius_mm=8.0) == (2, 2, 3)
    assert move_seed_to_peak(suv, (2, 2, 7), (1.0, 1.0, 1.0), radius_mm=8.0) == (2, 2, 9)


# ---------------------------------------------------------------- labels
def test_compose_labels_tumour_wins():
    lung = np.zeros((2, 4, 4), bool)
    med = np.zeros_like(lung)
    tum = np.zeros_like(lung)
    lung[0, :2] = True
    med[0, 1:3] = True
    tum[0, 1, 1] = True
    labels = compose_labels(lung, med, tum)
    assert labels.dtype == np.uint8
    assert labels[0, 0, 0] == LABELS["lung"]
    assert labels[0, 1, 0] == LABELS["mediastinum"]
    assert labels[0, 1, 1] == LABELS["tumour"]
    assert labels[0, 3, 3] == LABELS["background"]
    assert labels[1].max() == 0


def test_select_slices_by_value_and_name():
    labels = np.zeros((5, 3, 3), np.uint8)
    labels[1, 0, 0] = 3
    labels[3, :, :] = 1
    labels[4, 0, :2] = 3
    assert select_slices(labels).tolist() == [1, 4]
    assert select_slices(labels, classes=("lung", 3)).tolist() == [1, 3, 4]
    assert select_slices(labels, min_voxels=2).tolist() == [4]


def test_dice():
    a = np.zeros(10, bool)
    b = np.zeros(10, bool)
    assert dice(a, b) == 1.0
    a[:4] = True
    b[2:6] = True
    assert dice(a, b) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        dice(a, np.zeros(9, bool))


def test_derive_labels_end_to_end(torso):
    ct, suv, truth = torso
    labels, info = derive_labels(ct, suv, [truth["seed_zyx"]], SPACING_XYZ_MM, tumours={"peak_fraction": 0.4})
    assert labels.shape == ct.shape
    assert dice(labels == LABELS["lung"], truth["lungs"]) >= 0.95
    assert dice(labels == LABELS["mediastinum"], truth["mediastinum"]) >= 0.85
    assert dice(labels == LABELS["tumour"], truth["tumour"]) >= 0.8
    assert info["voxels"]["tumour"] == int((labels == 3).sum())
    selected = select_slices(labels)
    truth_slices = np.nonzero(truth["tumour"].any(axis=(1, 2)))[0]
    assert set(selected) <= set(truth_slices)
    assert len(selected) >= len(truth_slices) - 2  # at most the two polar caps are missed


def test_tumour_fraction_is_raised_when_it_leaks_into_blood_pool():
    # A hot sphere (peak 4) touching a long warm tube (SUV 2, like the aorta): at 40% the region
    # leaks along the tube to the cap; raising the fraction above 0.5 separates them.
    spacing = (2.0, 2.0, 2.0)
    z, y, x = np.ogrid[:40, :40, :40]
    tube = np.broadcast_to((y - 20) ** 2 + (x - 26) ** 2 <= 9, (40, 40, 40))  # along z
    suv = np.where(tube, 2.0, 0.5).astype(np.float32)
    sphere = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 16
    suv[sphere] = 4.0
    fixed, info_fixed = segment_tumours(suv, [(20, 20, 20)], spacing, max_radius_mm=30.0, leak_fraction_step=0.0)
    assert info_fixed[0]["capped"]
    adaptive, info = segment_tumours(suv, [(20, 20, 20)], spacing, max_radius_mm=30.0)
    assert not info[0]["capped"]
    assert 0.5 < info[0]["peak_fraction"] <= 0.7
    assert dice(adaptive, sphere) == pytest.approx(1.0)


def test_default_parameters_are_plain_and_accepted(torso):
    from colearn_pipeline.groundtruth import default_parameters

    params = default_parameters()
    assert params["tumours"]["peak_fraction"] == 0.4
    assert params["select_slices"]["classes"] == ["tumour"]
    for group in params.values():
        for value in group.values():
            assert value is None or isinstance(value, (bool, int, float, str, list))
    ct, suv, truth = torso
    select = params.pop("select_slices")
    labels, _ = derive_labels(ct, suv, [truth["seed_zyx"]], SPACING_XYZ_MM, **params)
    assert select_slices(labels, **select).size > 0


def test_report_seed_is_reversed_to_zyx():
    import SimpleITK as sitk

    from colearn_pipeline.groundtruth.phantom_qa import report_seeds_zyx

    image = sitk.Image(40, 30, 20, sitk.sitkFloat32)  # x=40, y=30, z=20
    image.SetSpacing((2.0, 3.0, 5.0))
    image.SetOrigin((-10.0, 0.0, 100.0))
    (seed,) = report_seeds_zyx({"findings": [{"position_mm": [-10.0 + 2 * 7, 3.0 * 4, 100.0 + 5 * 11]}]}, image)
    assert seed == pytest.approx((11.0, 4.0, 7.0))


def test_envelope_excludes_bone_lungs_and_what_lies_behind_the_vertebral_body(torso, lungs):
    from colearn_pipeline.groundtruth import mediastinum_envelope

    ct, _, truth = torso
    envelope = mediastinum_envelope(ct, lungs[0], SPACING_XYZ_MM)
    assert envelope.any()
    assert not (envelope & truth["spine"]).any()
    assert not (envelope & lungs[0]).any()
    # Nothing more than vertebral_depth_mm behind the vertebral body's front (row 80 - 18 mm / 2.5 mm).
    shallow = mediastinum_envelope(ct, lungs[0], SPACING_XYZ_MM, vertebral_depth_mm=5.0)
    assert not shallow[:, 75:, :].any() and shallow.sum() < envelope.sum()


# ---------------------------------------------------------------- quality and thorax check
RANGES = {"lung_ml": [1500, 9000], "mediastinum_ml": [300, 2500], "max_mediastinum_outside_hull": 0.05,
          "min_lung_balance": 0.3, "max_tumour_ml": 500.0, "min_peak_to_threshold": 1.5, "capped_is_review": True}
THORAX = {"min_lung_ml": 500.0, "min_mediastinum_ml": 50.0, "min_lung_balance": 0.2,
          "thorax_body_parts": ["CHEST", "THORAX", "LUNG", "WHOLEBODY"]}


def test_quality_figures_and_review_reasons(torso, lungs):
    from colearn_pipeline.groundtruth.quality import quality_figures, review_reasons

    ct, _, truth = torso
    med = truth["mediastinum"]
    tumours = [{"voxels": 100, "peak_suv": 8.0, "threshold_suv": 3.2, "capped": False}]
    fig = quality_figures(truth["lungs"], med, SPACING_XYZ_MM, tumours, hull_margin_mm=3.0)
    voxel_ml = 2.5 * 2.5 * 4.0 / 1000
    assert fig["lung_ml"] == pytest.approx(truth["lungs"].sum() * voxel_ml)
    assert fig["mediastinum_outside_hull"] < 0.05
    assert fig["lung_balance"] > 0.9  # a symmetric pair
    assert fig["tumours"][0]["volume_ml"] == pytest.approx(100 * voxel_ml)
    assert fig["tumours"][0]["peak_to_threshold"] == pytest.approx(2.5)
    small = {**RANGES, "lung_ml": [0, 9000], "mediastinum_ml": [0, 2500]}
    assert review_reasons(fig, small) == []
    # A band along the chest wall lateral of the right lung is outside the lungs' hull.
    leak = med | (ndi.binary_dilation(truth["lungs"], iterations=3) & ~ndi.binary_dilation(truth["lungs"], iterations=1)
                  & (np.arange(ct.shape[2]) < 30)[None, None, :])
    bad = quality_figures(truth["lungs"], leak, SPACING_XYZ_MM,
                          [{"voxels": 0, "peak_suv": 1.0, "threshold_suv": 0.4, "capped": False},
                           {"voxels": 50, "peak_suv": 1.0, "threshold_suv": 0.9, "capped": True}], hull_margin_mm=3.0)
    reasons = review_reasons(bad, small)
    assert any(r.startswith("mediastinum_outside_hull") for r in reasons)
    assert "finding 0: no tumour region" in reasons
    assert any(r.startswith("finding 1: peak/threshold") for r in reasons)
    assert "finding 1: tumour region hits its size cap" in reasons
    empty = quality_figures(truth["lungs"], np.zeros_like(med), SPACING_XYZ_MM, hull_margin_mm=3.0)
    assert "mediastinum empty" in review_reasons(empty, small)


def test_thorax_check_names_the_reason(torso):
    from colearn_pipeline.groundtruth.quality import thorax_check

    _, _, truth = torso
    lungs, med = truth["lungs"], truth["mediastinum"]
    assert thorax_check(lungs, med, SPACING_XYZ_MM, body_part_examined="chest", **{**THORAX, "min_lung_ml": 100.0}) is None
    assert thorax_check(lungs, med, SPACING_XYZ_MM, body_part_examined="EXTREMITY", **THORAX) == "not a thorax: BodyPartExamined EXTREMITY"
    one_lung = lungs & (np.arange(lungs.shape[2]) < 64)[None, None, :]
    reason = thorax_check(one_lung, med, SPACING_XYZ_MM, **{**THORAX, "min_lung_ml": 100.0})
    assert reason.startswith("not a thorax: no pair of lungs")
    assert thorax_check(lungs, med, SPACING_XYZ_MM, **{**THORAX, "min_lung_ml": 1e6}).startswith("not a thorax: lungs")
    reason = thorax_check(lungs, np.zeros_like(med), SPACING_XYZ_MM, **{**THORAX, "min_lung_ml": 100.0})
    assert reason.startswith("not a thorax: mediastinum")


def test_derive_labels_reports_quality_and_thorax(torso):
    ct, suv, truth = torso
    quality = {"hull_margin_mm": 3.0, **RANGES, "lung_ml": [100, 9000], "mediastinum_ml": [10, 2500]}
    _, info = derive_labels(ct, suv, [truth["seed_zyx"]], SPACING_XYZ_MM, quality=quality,
                            thorax={**THORAX, "min_lung_ml": 100.0}, body_part_examined="CHEST")
    assert info["not_thorax"] is None
    assert info["quality"]["mediastinum_outside_hull"] <= 0.05
    assert info["review_reasons"] == []
    assert len(info["quality"]["tumours"]) == 1


def test_tumour_spilling_into_aerated_lung_needs_review():
    """Issue 11: a 40 % region that grows into aerated lung (a finding with little uptake) needs review;
    a soft-tissue tumour with a thin rim at lung HU does not. Volumes by hand: 2 mm voxels = 0.008 mL."""
    from colearn_pipeline.groundtruth.quality import review_reasons, tumour_in_aerated_lung_ml

    ct_hu = np.full((10, 20, 20), -850.0)  # aerated lung
    ct_hu[3:7, 5:15, 5:15] = 40.0  # a soft-tissue tumour of 4 x 10 x 10 voxels
    solid = np.zeros(ct_hu.shape, bool)
    solid[3:7, 4:16, 5:15] = True  # the tumour and a one-voxel rim at lung HU on two sides: 4 x 2 x 10 = 80 voxels
    spread = np.ones(ct_hu.shape, bool)  # the whole lung: 4000 voxels, 400 of them tumour
    spacing = (2.0, 2.0, 2.0)
    assert tumour_in_aerated_lung_ml(solid, ct_hu, spacing, aerated_lung_hu=-500.0) == pytest.approx(80 * 0.008)
    assert tumour_in_aerated_lung_ml(spread, ct_hu, spacing, aerated_lung_hu=-500.0) == pytest.approx(3600 * 0.008)
    base = {"lung_ml": 3000.0, "mediastinum_ml": 900.0, "mediastinum_outside_hull": 0.0, "lung_balance": 0.9}
    ranges = {"max_tumour_in_aerated_lung_ml": 10.0}
    assert review_reasons({**base, "tumour_in_aerated_lung_ml": 0.64}, ranges) == []
    assert review_reasons({**base, "tumour_in_aerated_lung_ml": 28.8}, ranges) == [
        "tumour spills into aerated lung: 28.8 mL > 10.0 mL"]


# ---------------------------------------------------------------- large tumours (issue 23)
def _large_tumour_beside_aorta(gap_voxels: int, tube_suv: float = 2.0):
    """A 9 cm tumour (SUV 8 at a hot spot 16 mm off its centre, about 4.4 at its far rim, 61 mm from the
    hot spot) against a warm tube along z (the aorta, ``tube_suv``) ``gap_voxels`` away, on a 2 mm grid;
    with gap 0 they touch through a neck of partial volume. Returns SUV, tumour, tube and spacing."""
    spacing = (2.0, 2.0, 2.0)
    shape = (90, 80, 110)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    d_mm = 2.0 * np.sqrt((z - 45.0) ** 2 + (y - 40.0) ** 2 + (x - 40.0) ** 2)
    tumour = d_mm <= 45.0
    suv = np.full(shape, 0.5, dtype=np.float32)
    tube_x = 40 + 23 + 6 + gap_voxels
    tube = np.broadcast_to((y - 40) ** 2 + (x - tube_x) ** 2 <= 36, shape)
    suv[tube] = tube_suv
    d_hot_mm = 2.0 * np.sqrt((z - 45.0) ** 2 + (y - 40.0) ** 2 + (x - 32.0) ** 2)
    suv[tumour] = (8.0 - 3.5 * d_hot_mm / 60.0)[tumour]
    if gap_voxels == 0:
        neck = np.broadcast_to((np.abs(y - 40) <= 3) & (x >= 80) & (x <= tube_x), shape) & (np.abs(z - 45) <= 3)
        suv[neck & ~tumour & ~tube] = tube_suv
    return suv, tumour, tube, spacing


@pytest.mark.parametrize("sizes", [[90.0], None], ids=["stated size", "no size: growth closes"])
def test_large_tumour_is_labelled_not_capped(sizes):
    # The fixed 50 mm ball cuts a 9 cm tumour: the 40 % region reaches it, the fraction is raised
    # and the tumour shrinks to its hot core (the quarantined T3 primary).
    suv, tumour, tube, spacing = _large_tumour_beside_aorta(gap_voxels=4)
    old, old_info = segment_tumours(suv, [(45, 40, 32)], spacing, max_unsized_radius_mm=50.0)
    assert old_info[0]["peak_fraction"] > 0.4 and dice(old, tumour) < 0.92
    mask, info = segment_tumours(suv, [(45, 40, 32)], spacing, sizes_mm=sizes)
    assert not info[0]["capped"] and info[0]["peak_fraction"] == pytest.approx(0.4)
    assert dice(mask, tumour) >= 0.97
    assert not (mask & tube).any()  # none of the aorta
    if sizes:
        assert info[0]["cap_radius_mm"] == pytest.approx(1.2 * 90.0 + 10.0)
        assert info[0]["max_ml"] == pytest.approx(np.pi / 6 * 118.0**3 / 1000.0)


@pytest.mark.parametrize("sizes", [[90.0], None], ids=["stated size", "no size"])
def test_large_tumour_leaking_into_the_aorta_is_still_caught(sizes):
    # A low-uptake tumour: the aorta (and a neck to it) at 45 % of its peak. The 40 % region runs
    # along the tube to every cap; the fraction is raised until it is cut off (or stays capped).
    suv, _, tube, spacing = _large_tumour_beside_aorta(gap_voxels=0, tube_suv=3.6)
    mask, info = segment_tumours(suv, [(45, 40, 32)], spacing, sizes_mm=sizes)
    leaked = int((mask & tube).sum())
    assert info[0]["capped"] or (info[0]["peak_fraction"] > 0.4 and leaked == 0)
    assert not (mask[:5] | mask[-5:]).any()  # never along the aorta to the ends of the volume


def test_compactness_of_a_ball_a_half_ball_and_a_ball_on_a_stalk():
    z, y, x = np.ogrid[:41, :41, :81]
    ball = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 15**2
    half = ball & (x <= 20)
    stalk = ball | ((np.abs(z - 20) <= 1) & (np.abs(y - 20) <= 1) & (x >= 20) & (x <= 78))
    sp = (1.0, 1.0, 1.0)
    assert compactness(ball, sp) > 0.85
    assert 0.3 < compactness(half, sp) < 0.5
    assert compactness(stalk, sp) < 0.25


def test_size_follows_the_report_and_bounds_the_volume_in_review():
    reasons = review_reasons({"lung_ml": 4000.0, "mediastinum_ml": 900.0, "mediastinum_outside_hull": 0.0,
                              "lung_balance": 0.9,
                              "tumours": [{"volume_ml": 700.0, "peak_to_threshold": 2.5, "capped": False,
                                           "max_ml": None},
                                          {"volume_ml": 700.0, "peak_to_threshold": 2.5, "capped": False,
                                           "max_ml": 1150.0}]},
                             {"max_tumour_ml": 500.0})
    assert reasons == ["finding 0: tumour_ml 700.0 > 500.0"]


# ---------------------------------------------------------------- airless lung (issue 23)
def _lungs_with_disease():
    """Two box lungs (-850 HU) in soft tissue (40 HU) on a (4, 2, 2) mm grid; in the left lung an airless
    ball (40 HU), a fluid pocket (8 HU) and, pushed in from the medial side, a heart bordered by fat."""
    ct = np.full((20, 80, 120), 40.0, dtype=np.float32)
    ct[:, 10:70, 10:50] = -850.0
    ct[:, 10:70, 70:110] = -850.0
    z, y, x = np.ogrid[:20, :80, :120]
    airless = ((z - 10) * 2.0) ** 2 + (y - 30) ** 2 + (x - 92) ** 2 <= 64
    fluid = (np.abs(z - 10) <= 3) & (y >= 52) & (y < 62) & (x >= 95) & (x < 105)
    heart = (np.abs(z - 10) <= 4) & (np.abs(y - 40) <= 10) & (x >= 70) & (x < 80)
    fat = (np.abs(z - 10) <= 5) & (np.abs(y - 40) <= 13) & (x >= 70) & (x < 83) & ~heart
    ct[airless], ct[fluid], ct[fat], ct[heart] = 40.0, 8.0, -100.0, 40.0
    return ct, airless, fluid, heart


def test_airless_lung_inside_a_lung_is_lung_fluid_and_heart_are_not():
    ct, airless, fluid, heart = _lungs_with_disease()
    spacing = (2.0, 2.0, 4.0)
    lungs = ct < -400
    added = consolidated_lung(lungs, ct, spacing)
    assert added[airless].mean() >= 0.99  # the airless ball (the opening trims its polar caps)
    assert not added[fluid].any()  # pleural fluid (median 8 HU < 20) is not lung
    assert not added[heart].any()  # bordered by fat and the hull's chord, not by lung
    assert not (added & lungs).any()
    assert not consolidated_lung(lungs, ct, spacing, min_lung_contact=1.5).any()  # disabled
