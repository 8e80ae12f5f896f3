"""The derived ground truth against the phantom's truth labels (issue 3's Dice targets).

The cohort is written by ``colearn_pipeline.phantom`` as DICOM, read back with SimpleITK and
processed by :mod:`colearn_pipeline.groundtruth.phantom_qa`, exactly as the command
``python -m colearn_pipeline.groundtruth.phantom_qa RAW_DIR`` does.
"""

from __future__ import annotations

import numpy as np
import pytest

from colearn_pipeline.groundtruth.phantom_qa import evaluate_cohort
from colearn_pipeline.phantom import generate as phantom

#: Issue 3: mean Dice on the phantom cohort.
TARGETS = {"lung": 0.95, "mediastinum": 0.85, "tumour": 0.80}


def _check(results, n_expected):
    assert len(results) == n_expected
    means = {k: float(np.mean([r[f"dice_{k}"] for r in results])) for k in TARGETS}
    for name, target in TARGETS.items():
        assert means[name] >= target, f"mean Dice {name} {means[name]:.3f} < {target} ({[round(r[f'dice_{name}'], 3) for r in results]})"
    for r in results:
        # Every finding got a region, seeded inside its lesion.
        assert all(t["voxels"] > 0 for t in r["tumours"])
    return means


def test_dice_targets_on_tiny_phantom_cohort(tmp_path):
    phantom.generate_cohort(tmp_path, n_studies=4, size="tiny", progress=False)
    _check(evaluate_cohort(tmp_path), 4)


@pytest.mark.slow
def test_dice_targets_on_demo_phantom_cohort(tmp_path):
    phantom.generate_cohort(tmp_path, n_studies=3, size="demo", progress=False)
    _check(evaluate_cohort(tmp_path), 3)
