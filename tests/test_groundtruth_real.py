"""Ground truth on real scanner data (tests/data): a real chest CT and three real limb PET-CT studies.

The archives are unpacked once per session into a temporary folder by ``real_data``; raw data are
never modified. Licences and sources: the README beside each archive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from real_data import IBSI_STS_STUDIES

from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.groundtruth import segment_lungs, segment_mediastinum
from colearn_pipeline.groundtruth.quality import quality_figures, review_reasons, thorax_check

# The ranges the lead merges into conf (groundtruth.quality / groundtruth.thorax); inline here.
QUALITY = {"lung_ml": [1500, 9000], "mediastinum_ml": [500, 2500], "max_mediastinum_outside_hull": 0.05,
           "min_lung_balance": 0.3}
THORAX = {"min_lung_ml": 500.0, "min_mediastinum_ml": 50.0, "min_lung_balance": 0.2,
          "thorax_body_parts": ["CHEST", "THORAX", "LUNG", "WHOLEBODY", "WHOLE BODY", "CHEST_ABDOMEN"]}
ABDOMEN_LOW_HU, ABDOMEN_HIGH_HU = 0.0, 200.0


@pytest.fixture(scope="module")
def chest_ct(lung_ct_root):
    root = lung_ct_root
    volume = read_series(sorted((root / "ct").glob("*.dcm")), "lung-dx-a0001")
    ct = volume.array
    lungs, info = segment_lungs(ct, volume.spacing_xyz_mm, return_info=True, superior_at_high_z=volume.direction[8] >= 0)
    med = segment_mediastinum(ct, lungs, volume.spacing_xyz_mm, airway_mask=info["airway_mask"])
    return ct, volume.spacing_xyz_mm, lungs, med, info["airway_mask"]


@pytest.mark.slow
def test_real_chest_ct_mediastinum_stays_between_the_lungs(chest_ct):
    ct, spacing, lungs, med, _ = chest_ct
    fig = quality_figures(lungs, med, spacing, hull_margin_mm=3.0)
    assert fig["mediastinum_outside_hull"] <= 0.05
    assert 500 <= fig["mediastinum_ml"] <= 2500  # the old method gave 3044 mL, 13 % outside the hull
    assert 1500 <= fig["lung_ml"] <= 9000
    assert review_reasons(fig, QUALITY) == []
    assert thorax_check(lungs, med, spacing, body_part_examined=None, **THORAX) is None


@pytest.mark.slow
def test_real_chest_ct_lungs_hold_no_stomach_gas_or_abdomen(chest_ct):
    ct, spacing, lungs, med, airway = chest_ct
    # Slices with no lung at all under the lung bases: their gas (stomach, bowel) is not lung.
    lung_slices = np.nonzero(lungs.any(axis=(1, 2)))[0]
    assert lungs[: lung_slices[0]].sum() == 0
    # The trachea and main bronchi are found and are not lung (they go to the mediastinum).
    voxel_ml = float(np.prod(spacing)) / 1000.0
    assert 5.0 <= airway.sum() * voxel_ml <= 150.0
    assert (airway & lungs).sum() <= 0.05 * airway.sum()
    assert (airway & ~lungs & med).sum() >= 0.5 * (airway & ~lungs).sum()
    # Lung voxels are air-like, never soft tissue of the upper abdomen.
    assert np.mean((ct[lungs] > ABDOMEN_LOW_HU) & (ct[lungs] < ABDOMEN_HIGH_HU)) < 0.02
    # The mediastinum holds no gas-filled stomach: almost none of it is air.
    assert np.mean(ct[med] < -900) < 0.02


def _limb_study(root: Path, name: str):
    volume = read_series(sorted((root / name / "CT" / "image").glob("*.dcm")), name.lower())
    return volume, str(volume.datasets[0].get("BodyPartExamined", "") or "")


@pytest.mark.parametrize("name", IBSI_STS_STUDIES)
def test_real_limb_pet_ct_is_refused_as_not_a_thorax(ibsi_sts_root, name):
    root = ibsi_sts_root
    volume, part = _limb_study(root, name)
    lungs = segment_lungs(volume.array, volume.spacing_xyz_mm)
    med = segment_mediastinum(volume.array, lungs, volume.spacing_xyz_mm)
    reason = thorax_check(lungs, med, volume.spacing_xyz_mm, body_part_examined=part, **THORAX)
    assert reason is not None and reason.startswith("not a thorax: ")
    # Even without the header, the anatomy alone refuses it.
    reason = thorax_check(lungs, med, volume.spacing_xyz_mm, body_part_examined=None, **THORAX)
    assert reason is not None and reason.startswith("not a thorax: ")
