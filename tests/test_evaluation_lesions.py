"""autoPET lesion-level metrics (evaluation/lesions.py) on hand-made volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from colearn_pipeline.evaluation.lesions import (
    LESION_METRICS,
    components,
    lesion_matching,
    lesion_metrics,
    study_volume,
    voxel_ml,
)

SPACING = (3.0, 2.0, 1.5)  # z, y, x mm: a voxel is 9 mm³
VOXEL_ML = 9.0 / 1000.0


def _empty(shape=(8, 12, 12)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def _cube(mask: np.ndarray, z: int, y: int, x: int, size: int = 3) -> np.ndarray:
    mask[z:z + size, y:y + size, x:x + size] = True
    return mask


def test_a_lesion_touched_by_one_voxel_is_detected():
    truth = _cube(_empty(), 2, 2, 2)
    pred = _empty()
    pred[3, 3, 3] = True
    m = lesion_matching(pred, truth, SPACING)
    assert m["true_lesions"] == 1 and m["detected_lesions"] == 1 and m["lesion_sensitivity"] == 1.0
    assert m["fnv_ml"] == 0.0 and m["fpv_ml"] == 0.0 and m["false_positive_lesions"] == 0
    assert m["dice_3d"] == pytest.approx(2 * 1 / (27 + 1))


def test_a_prediction_touching_nothing_is_all_false_positive():
    truth = _cube(_empty(), 0, 0, 0)
    pred = _cube(_empty(), 5, 8, 8, size=2)
    m = lesion_matching(pred, truth, SPACING)
    assert m["fpv_ml"] == pytest.approx(8 * VOXEL_ML)
    assert m["false_positive_lesions"] == 1
    assert m["fnv_ml"] == pytest.approx(27 * VOXEL_ML)
    assert m["detected_lesions"] == 0 and m["lesion_sensitivity"] == 0.0 and m["dice_3d"] == 0.0


def test_only_untouched_components_count_as_fpv_and_fnv():
    truth = _cube(_cube(_empty(), 0, 0, 0), 5, 8, 8)      # two true lesions, 27 voxels each
    pred = _cube(_empty(), 1, 1, 1, size=4)                 # overlaps the first (and spills out of it)
    pred[6, 0, 10] = True                                   # a lone false positive
    m = lesion_matching(pred, truth, SPACING)
    # the overlapping prediction is a true positive component, spill included: only the lone voxel is FPV
    assert m["fpv_ml"] == pytest.approx(1 * VOXEL_ML)
    assert m["fnv_ml"] == pytest.approx(27 * VOXEL_ML)
    assert (m["true_lesions"], m["detected_lesions"], m["false_positive_lesions"]) == (2, 1, 1)
    assert m["lesion_sensitivity"] == 0.5


@pytest.mark.parametrize(
    ("offset", "separate"),
    [((0, 1, 1), {6: True, 18: False, 26: False}),     # edge neighbours
     ((1, 1, 1), {6: True, 18: True, 26: False})],     # corner neighbours
)
def test_18_connectivity_differs_from_6_and_26(offset, separate):
    truth = _empty()
    truth[3, 3, 3] = True
    pred = truth.copy()
    pred[3 + offset[0], 3 + offset[1], 3 + offset[2]] = True
    for connectivity, apart in separate.items():
        _, n = components(pred, connectivity)
        assert n == (2 if apart else 1), connectivity
        m = lesion_matching(pred, truth, SPACING, connectivity=connectivity)
        # joined to the hit voxel, the extra voxel is part of a true positive component; apart, it is FPV
        assert m["fpv_ml"] == pytest.approx(VOXEL_ML if apart else 0.0), connectivity
        assert m["false_positive_lesions"] == int(apart), connectivity
    assert lesion_matching(pred, truth, SPACING)["false_positive_lesions"] == int(separate[18])


def test_tumour_free_study_and_bad_input():
    m = lesion_matching(_empty(), _empty(), SPACING)
    assert math.isnan(m["dice_3d"]) and math.isnan(m["lesion_sensitivity"])
    assert m["fpv_ml"] == m["fnv_ml"] == 0.0 and m["true_lesions"] == 0
    # a tumour-free study: no Dice (as autoPET), its prediction is all false-positive volume
    m = lesion_matching(_cube(_empty(), 1, 1, 1, size=2), _empty(), SPACING)
    assert math.isnan(m["dice_3d"]) and m["fpv_ml"] == pytest.approx(8 * VOXEL_ML) and m["false_positive_lesions"] == 1
    with pytest.raises(ValueError, match="connectivity"):
        components(_empty(), 8)
    with pytest.raises(ValueError, match="differ"):
        lesion_matching(_empty(), _empty((8, 12, 11)), SPACING)
    with pytest.raises(ValueError, match="positive"):
        voxel_ml((3.0, 0.0, 1.0))


def test_mtv_and_suvmax_of_predicted_and_true_masks():
    truth = _cube(_empty(), 2, 2, 2)
    pred = _cube(_empty(), 2, 2, 2, size=2)
    suv = np.ones(truth.shape, dtype=np.float32)
    suv[2, 2, 2] = 7.5            # inside both
    suv[4, 4, 4] = 12.0           # inside the truth only
    suv[7, 11, 11] = 30.0         # outside both
    m = lesion_metrics(pred, truth, SPACING, suv=suv)
    assert list(m) == list(LESION_METRICS)
    assert m["mtv_true_ml"] == pytest.approx(27 * VOXEL_ML) and m["mtv_pred_ml"] == pytest.approx(8 * VOXEL_ML)
    assert m["suvmax_true"] == 12.0 and m["suvmax_pred"] == 7.5
    assert math.isnan(lesion_metrics(_empty(), truth, SPACING, suv=suv)["suvmax_pred"])


def test_study_volume_places_slices_on_the_ct_grid_and_leaves_gaps_empty():
    stack = np.zeros((3, 2, 2), dtype=np.uint8)
    stack[0, 0, 0] = 3
    stack[2, 1, 1] = 3
    vol = study_volume(stack, [10, 11, 13], (20, 4, 4))
    assert vol.shape == (4, 4, 4) and vol.dtype == np.uint8
    assert vol[0, :2, :2].all() and vol[0].sum() == 4 * 3       # one model pixel -> 2x2 CT pixels
    assert not vol[1].any() and not vol[2].any()                 # slice 12 is not in the model input
    assert vol[3, 2:, 2:].all()
    # lesions on slices 10 and 13 stay two components: the slices between are empty
    assert components(vol == 3)[1] == 2
    with pytest.raises(ValueError, match="duplicates"):
        study_volume(stack, [10, 10, 13], (20, 4, 4))
