"""Semi-automatic ground truth (paper section III-A): lungs, mediastinum, tumours, labels.

Arrays are ``(z, y, x)``; spacing is SimpleITK ``(x, y, z)`` in mm. See docs/groundtruth.md.
"""

from colearn_pipeline.groundtruth.labels import LABELS, compose_labels, dice, select_slices
from colearn_pipeline.groundtruth.lungs import find_airway, optimal_threshold_hu, segment_lungs
from colearn_pipeline.groundtruth.mediastinum import (
    below_diaphragm,
    lung_hull,
    mediastinum_envelope,
    mediastinum_seeds,
    segment_mediastinum,
)
from colearn_pipeline.groundtruth.pipeline import default_parameters, derive_labels
from colearn_pipeline.groundtruth.tumours import move_seed_to_peak, segment_tumours

__all__ = [
    "LABELS",
    "compose_labels",
    "default_parameters",
    "derive_labels",
    "dice",
    "find_airway",
    "below_diaphragm",
    "lung_hull",
    "mediastinum_envelope",
    "mediastinum_seeds",
    "move_seed_to_peak",
    "optimal_threshold_hu",
    "segment_lungs",
    "segment_mediastinum",
    "segment_tumours",
    "select_slices",
]
