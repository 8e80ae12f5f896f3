"""The fast ground truth computes what the whole-volume definitions compute.

The lungs and the morphology helpers work on bounding boxes, label instead of propagating, and
dilate the body mask on its coarse grid; these tests hold them to the plain whole-volume scipy
definitions, to field-of-view padding, to the threshold of the whole smoothed CT, and to the
phantom's truth (benchmarks/groundtruth.py compares old and new code on paper-size studies).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from _groundtruth_torso import SPACING_XYZ_MM, make_torso
from colearn_pipeline.groundtruth import compose_labels, dice, optimal_threshold_hu, segment_lungs, segment_tumours
from colearn_pipeline.groundtruth import _morphology as morph
from colearn_pipeline.groundtruth import lungs as lungs_module


def _random_masks(n=30, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = tuple(int(v) for v in rng.integers(3, 24, 3))
        mask = ndi.gaussian_filter(rng.random(shape), 1.2) > rng.uniform(0.47, 0.53)
        if i % 6 == 0:
            mask[:, 0, :] = True  # foreground on the volume border
        if i % 10 == 0:
            mask[:] = False
        spacing = tuple(float(v) for v in rng.uniform(0.6, 3.0, 3))
        yield mask, spacing, float(rng.uniform(1.0, 5.0))


def _fill_each_slice(mask, max_hole_px=None):
    """Reference: 2D hole filling slice by slice, 4-connected background."""
    out = mask.copy()
    four = ndi.generate_binary_structure(2, 1)
    for z in range(mask.shape[0]):
        holes = ndi.binary_fill_holes(mask[z], structure=four) & ~mask[z]
        if max_hole_px is not None:
            lab, n = ndi.label(holes, structure=four)
            holes = np.isin(lab, 1 + np.nonzero(np.bincount(lab.ravel(), minlength=n + 1)[1:] <= max_hole_px)[0])
        out[z] |= holes
    return out


def test_box_restricted_morphology_equals_whole_volume_scipy():
    for mask, spacing, radius_mm in _random_masks():
        for footprint in (morph.ellipsoid_footprint(radius_mm, spacing), morph.disk_footprint(radius_mm, spacing)):
            pad = [(s // 2, s // 2) for s in footprint.shape]
            closed = ndi.binary_closing(np.pad(mask, pad), structure=footprint)
            closed = closed[tuple(slice(p, p + n) for (p, _), n in zip(pad, mask.shape))]
            assert np.array_equal(morph.closing(mask, footprint), closed if footprint.sum() > 1 else mask)
            opened = ndi.binary_opening(mask, structure=footprint) if footprint.sum() > 1 else mask
            assert np.array_equal(morph.opening(mask, footprint), opened)
            assert np.array_equal(morph.dilation(mask, footprint), ndi.binary_dilation(mask, structure=footprint))
        for max_hole_px in (None, 2, 15):
            assert np.array_equal(morph.fill_holes_per_slice(mask, max_hole_px), _fill_each_slice(mask, max_hole_px))


def test_fill_holes_is_per_slice():
    """A hole is filled in the slice where it is enclosed, not in the next one where a cut opens it."""
    mask = np.zeros((2, 9, 9), dtype=bool)
    mask[:, 1:8, 1:8] = True
    mask[:, 3:6, 3:6] = False
    mask[1, 0:4, 4] = False  # slice 1: a cut from the slice border into the hole
    filled = morph.fill_holes_per_slice(mask)
    assert filled[0, 3:6, 3:6].all()
    assert not filled[1, 3:6, 3:6].any() and not filled[1, 0:4, 4].any()
    assert np.array_equal(filled, _fill_each_slice(mask))


def test_coarse_dilation_is_the_fine_dilation_of_the_upsampled_body():
    rng = np.random.default_rng(1)
    for step in (2, 3):
        for shape in ((3, 11, 7), (2, 8, 12)):
            coarse = rng.random(shape) > 0.7
            fine_shape = (shape[0], shape[1] * step - 1, shape[2] * step - step + 1)  # not multiples of step
            up = lungs_module._upsampled(coarse, step, fine_shape)
            box = np.ones((1, 2 * step + 1, 2 * step + 1), dtype=bool)
            near = ndi.binary_dilation(coarse, structure=np.ones((1, 3, 3), dtype=bool))
            assert np.array_equal(lungs_module._upsampled(near, step, fine_shape), ndi.binary_dilation(up, structure=box))


def test_histogram_threshold_does_not_depend_on_chunking(monkeypatch):
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(-850, 40, 3000), rng.normal(30, 40, 5000), np.full(500, -2000.0)])
    whole = optimal_threshold_hu(values.astype(np.float32))
    monkeypatch.setattr(lungs_module, "_HISTOGRAM_CHUNK", 97)
    assert optimal_threshold_hu(values.astype(np.float32)) == pytest.approx(whole, abs=1e-6)


def _smoothed_threshold(ct, spacing_xyz_mm, sigma_mm=lungs_module.SMOOTHING_SIGMA_MM):
    """Reference: the optimal threshold of the whole clipped and smoothed CT."""
    sp = np.asarray(spacing_xyz_mm, dtype=float)[::-1]
    smooth = ndi.gaussian_filter(np.maximum(ct, lungs_module.AIR_FLOOR_HU), sigma=sigma_mm / sp, mode="nearest")
    return optimal_threshold_hu(smooth)


def _pad_with_air(ct, px, seed=0):
    rng = np.random.default_rng(seed)
    shape = (ct.shape[0], ct.shape[1] + 2 * px, ct.shape[2] + 2 * px)
    padded = (-1000.0 + rng.normal(0.0, 10.0, size=shape)).astype(np.float32)
    padded[:, px:-px, px:-px] = ct
    return padded


@pytest.mark.parametrize("spacing_xyz_mm", [SPACING_XYZ_MM, (0.9, 0.9, 4.0)])
def test_lungs_threshold_and_mask_do_not_depend_on_the_field_of_view(spacing_xyz_mm):
    """Air added around the scan: same lungs at a fixed threshold; the adaptive one counts it all.

    At 0.9 mm the body mask works on a grid of two voxels; the padding (even) keeps that grid.
    """
    ct, _, _ = make_torso(seed=5)
    padded = _pad_with_air(ct, 20)
    lungs, info = segment_lungs(padded, spacing_xyz_mm, return_info=True)
    assert info["threshold_hu"] == pytest.approx(_smoothed_threshold(padded, spacing_xyz_mm), abs=0.01)
    assert info["n_components"] >= 1  # at 0.9 mm the torso is small: its lungs may touch
    assert not lungs[:, :20].any() and not lungs[:, :, -20:].any()
    fixed = segment_lungs(ct, spacing_xyz_mm, threshold_hu=info["threshold_hu"], return_info=True)
    fixed_padded = segment_lungs(padded, spacing_xyz_mm, threshold_hu=info["threshold_hu"], return_info=True)
    assert np.array_equal(fixed_padded[0][:, 20:-20, 20:-20], fixed[0])
    assert np.array_equal(fixed_padded[1]["airway_mask"][:, 20:-20, 20:-20], fixed[1]["airway_mask"])
    assert np.array_equal(fixed_padded[0], lungs)


@pytest.mark.parametrize("spacing_xyz_mm", [SPACING_XYZ_MM, (0.9, 0.9, 4.0), (0.6, 0.6, 4.0)])
def test_body_and_outside_air_on_the_box_equal_those_of_the_whole_volume(spacing_xyz_mm):
    ct, _, _ = make_torso(seed=6)
    padded = _pad_with_air(ct, 21)
    sp = lungs_module.spacing_zyx(spacing_xyz_mm)
    box, smooth, threshold = lungs_module._smoothed_and_threshold(padded, sp, None, 1.0, -500.0, 0.5, 100, -1024.0)
    assert smooth.shape[1] < padded.shape[1] and smooth.shape[2] < padded.shape[2]
    whole = ndi.gaussian_filter(np.maximum(padded, -1024.0), sigma=1.0 / sp, mode="nearest")
    dark, dark_box = whole < threshold, smooth < threshold
    assert np.array_equal(dark[box], dark_box) and dark.sum() - dark[box].sum() == dark.size - dark[box].size
    body = lungs_module.body_mask(dark, spacing_xyz_mm)
    assert np.array_equal(body[box], lungs_module.body_mask(dark_box, spacing_xyz_mm))
    assert body[box].sum() == body.sum()
    assert np.array_equal(lungs_module._outside_air(dark)[box], lungs_module._outside_air(dark_box))


def test_threshold_below_the_crop_level_falls_back_to_the_whole_volume():
    """The iteration can end below the level that bounds the body box (here: air, much faint
    material at -740 HU and a little at -500 HU converge to about -870 HU): then the box cannot be
    trusted to hold every non-dark voxel, and the whole volume is used."""
    sp = lungs_module.spacing_zyx((1.0, 1.0, 3.0))
    ct = np.full((4, 80, 80), -1024.0, dtype=np.float32)
    ct[:, 28:52, 28:52] = -740.0
    ct[:, 54:62, 54:62] = -500.0
    level = 0.5 * (lungs_module.AIR_FLOOR_HU - 500.0)
    box, smooth, threshold = lungs_module._smoothed_and_threshold(ct, sp, None, 0.0, -500.0, 0.5, 100, -1024.0)
    assert threshold < level
    assert smooth.shape == ct.shape
    assert threshold == pytest.approx(optimal_threshold_hu(ct), abs=1e-6)
    # A dense body: the box is used, and the threshold still counts the air outside it.
    ct[:, 28:52, 28:52] = 40.0
    box, smooth, threshold = lungs_module._smoothed_and_threshold(ct, sp, None, 1.0, -500.0, 0.5, 100, -1024.0)
    assert smooth.shape[1] < ct.shape[1] and smooth.shape[2] < ct.shape[2]
    assert threshold == pytest.approx(_smoothed_threshold(ct, (1.0, 1.0, 3.0)), abs=0.01)


@pytest.fixture(scope="module")
def tiny_phantom_study(tmp_path_factory):
    """CT, SUV on the CT grid, report seeds and truth labels of one tiny phantom study."""
    import json

    import SimpleITK as sitk

    from colearn_pipeline.dicom import resample_to_reference
    from colearn_pipeline.groundtruth.phantom_qa import (
        find_ct_studies, read_ct, report_seeds_zyx, truth_folders,
    )
    from colearn_pipeline.phantom import generate_cohort

    raw = tmp_path_factory.mktemp("phantom")
    generate_cohort(raw, n_studies=1, size="tiny", seed=7)
    (uid, study), = find_ct_studies(raw / "dicom").items()
    report = json.loads(next((raw / "reports").glob("*.json")).read_text())
    ct = read_ct(study, raw / "dicom")
    truth_dir = truth_folders(raw)[uid]
    truth = resample_to_reference(sitk.ReadImage(str(truth_dir / "labels.nii.gz")), ct, "nearest")
    suv = resample_to_reference(sitk.Cast(sitk.ReadImage(str(truth_dir / "suv.nii.gz")), sitk.sitkFloat32), ct)
    return (sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(suv), report_seeds_zyx(report, ct),
            ct.GetSpacing(), sitk.GetArrayFromImage(truth).astype(np.uint8))


def test_phantom_lungs_and_tumours_against_truth_and_invariants(tiny_phantom_study):
    from colearn_pipeline.groundtruth.labels import LABELS

    ct, suv, seeds, spacing, truth = tiny_phantom_study
    lungs, info = segment_lungs(ct, spacing, return_info=True)
    tumours, tumour_info = segment_tumours(suv, seeds, spacing)
    labels = compose_labels(lungs, np.zeros_like(lungs), tumours)
    # The code before the speed-up (e2589bd) gives Dice 0.994 (lung) and 0.840 (tumour) here.
    assert dice(labels == LABELS["lung"], truth == LABELS["lung"]) >= 0.99
    assert dice(labels == LABELS["tumour"], truth == LABELS["tumour"]) >= 0.83
    assert info["threshold_hu"] == pytest.approx(_smoothed_threshold(ct, spacing), abs=0.01)
    assert info["n_components"] == 2 and info["airway_threshold_hu"] is not None
    assert info["airway_mask"].any() and not (info["airway_mask"] & lungs).any()
    assert all(t["voxels"] > 0 and tumours[t["peak_zyx"]] for t in tumour_info)
    # The scan's own padding value outside the reconstruction circle: more of it changes nothing.
    padded = np.pad(ct, ((0, 0), (16, 16), (16, 16)), constant_values=-1024.0)
    fixed = segment_lungs(ct, spacing, threshold_hu=info["threshold_hu"])
    assert np.array_equal(fixed, lungs)
    assert np.array_equal(segment_lungs(padded, spacing, threshold_hu=info["threshold_hu"])[:, 16:-16, 16:-16], lungs)


@pytest.mark.parametrize("factor", [2, 3])
def test_block_reduce_equals_the_reduction_of_the_block_view(factor):
    """The mediastinum's working-grid masks counted over strided slices == the majority / any of the
    ``(z, y, f, x, f)`` block view (the CT's block mean is that view's)."""
    from colearn_pipeline.groundtruth.mediastinum import _block_reduce

    rng = np.random.default_rng(factor)
    for _ in range(10):
        shape = tuple(int(v) for v in rng.integers(2, 30, 3))
        ct = (rng.standard_normal(shape) * 10 ** rng.uniform(0, 3.5)).astype(np.float32)
        mask = rng.random(shape) > rng.uniform(0.2, 0.8)
        pad = ((0, 0), (0, -shape[1] % factor), (0, -shape[2] % factor))

        def blocks(volume):
            padded = np.pad(volume, pad, mode="edge")
            return padded.reshape(shape[0], padded.shape[1] // factor, factor, padded.shape[2] // factor, factor)

        assert _block_reduce(ct, factor, "mean").tobytes() == blocks(ct).mean(axis=(2, 4), dtype=np.float32).tobytes()
        np.testing.assert_array_equal(_block_reduce(mask, factor, "major"),
                                      blocks(mask).mean(axis=(2, 4), dtype=np.float32) >= 0.5)
        np.testing.assert_array_equal(_block_reduce(mask, factor, "any"), blocks(mask).any(axis=(2, 4)))
