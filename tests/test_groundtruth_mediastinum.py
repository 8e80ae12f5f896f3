"""The pieces of the mediastinum envelope on small synthetic volumes (issue 12).

The diaphragm fitted to the lung bases, the vertebral body with its marrow, and the cut of thin
branches; the whole method is scored against phantom truth in test_groundtruth_phantom.py and on
real CT in test_groundtruth_real.py.
"""

from __future__ import annotations

import numpy as np

from colearn_pipeline.groundtruth.mediastinum import (
    _without_thin_branches,
    below_fitted_diaphragm,
    compute_vertebra_mask,
)

SPACING = (2.0, 2.0, 2.0)  # x, y, z mm


def _domed_lungs(shape=(60, 40, 60), heart=True):
    """Two lungs resting on a paraboloid dome (height in mm), the left one also over a 'heart' block."""
    nz, ny, nx = shape
    z = np.arange(nz)[:, None, None] * 2.0
    y = np.arange(ny)[None, :, None] * 2.0
    x = np.arange(nx)[None, None, :] * 2.0
    dome = 40.0 - 0.004 * ((x - 60.0) ** 2 + (y - 40.0) ** 2)
    right = (z >= dome) & (x < 50.0) & (z < 100.0)
    left = (z >= dome) & (x > 70.0) & (z < 100.0)
    heart_block = (x > 70.0) & (x < 90.0) & (y > 20.0) & (y < 60.0) & (z >= dome) & (z < 70.0)
    if heart:
        left &= ~heart_block  # the left lung lies on the heart there: its base is 30 mm above the dome
    return right, left, np.broadcast_to(dome, shape), heart_block


def test_fitted_diaphragm_follows_the_dome_and_spares_what_lies_on_it():
    right, left, dome, heart_block = _domed_lungs()
    z = np.arange(right.shape[0])[:, None, None] * 2.0
    below = below_fitted_diaphragm(right, left, SPACING, trim_mm=10.0, margin_mm=4.0, iterations=5)
    surely_below = (z < dome - 8.0)
    assert below[surely_below].mean() > 0.97  # the liver and stomach under the domes
    assert not below[heart_block].any()  # the heart resting on the dome stays above it
    assert not below[z > dome + 2.0].any()


def test_fitted_diaphragm_is_not_claimed_from_a_bowl():
    nz, ny, nx = 40, 30, 30
    z = np.arange(nz)[:, None, None] * 2.0
    y = np.arange(ny)[None, :, None] * 2.0
    x = np.arange(nx)[None, None, :] * 2.0
    bowl = 10.0 + 0.01 * ((x - 30.0) ** 2 + (y - 30.0) ** 2)  # bases rising away from the centre
    lungs = z >= bowl
    # an upward-opening fit is no diaphragm: extrapolated it would rise over the whole slice
    assert not below_fitted_diaphragm(lungs & (x < 28.0), lungs & (x > 32.0), SPACING).any()


def test_vertebra_mask_holds_the_marrow_and_bridges_a_disc():
    ct = np.zeros((7, 40, 40), np.float32)
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 20)
    for k in range(7):
        ct[k][r <= 10] = 180.0  # cancellous marrow, below a bone threshold of 250 HU
        ct[k][(r > 8) & (r <= 10)] = 400.0  # cortex
    ct[3][r <= 10] = 80.0  # an intervertebral disc: softer than the marrow
    mask = compute_vertebra_mask(ct, SPACING, vertebra_hu=120.0, closing_radius_mm=3.0, disc_bridge_mm=8.0)
    assert mask[:, 20, 20].all()  # marrow and disc inside
    assert not mask[:, 2, 2].any()
    no_bridge = compute_vertebra_mask(ct, SPACING, vertebra_hu=120.0, closing_radius_mm=3.0, disc_bridge_mm=0.0)
    assert not no_bridge[3, 20, 20]


def test_thin_branches_and_what_hangs_on_them_are_cut_off():
    grown = np.zeros((3, 60, 60), dtype=bool)
    grown[:, 10:40, 10:40] = True  # the mediastinum
    grown[:, 24:26, 40:50] = True  # a 4 mm wide vessel into the lung
    grown[:, 20:30, 50:58] = True  # a nodule on it
    out = _without_thin_branches(grown, [(1, 25, 25)], SPACING, radius_mm=4.0)
    assert out[:, 10:40, 10:40].all()
    assert not out[:, 20:30, 50:58].any()
    assert not out[:, 24:26, 46:50].any()
    # seeds on thin parts only: nothing is removed
    assert np.array_equal(_without_thin_branches(grown, [(1, 25, 45)], SPACING, radius_mm=4.0), grown)
