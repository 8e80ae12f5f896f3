"""Label composition, slice selection and overlap."""

from __future__ import annotations

import numpy as np

LABELS = {"background": 0, "lung": 1, "mediastinum": 2, "tumour": 3}

#: Slice selection default: the axial slices that contain tumour (the paper's ROI slices).
DEFAULT_SELECT_CLASSES = (LABELS["tumour"],)
DEFAULT_MIN_VOXELS = 1


def compose_labels(lung_mask, mediastinum_mask, tumour_mask) -> np.ndarray:
    """Combine the class masks into one uint8 label volume.

    Later classes win: lung (1), then mediastinum (2), then tumour (3), so tumour wins
    wherever it meets another class.

    Parameters
    ----------
    lung_mask, mediastinum_mask, tumour_mask : ndarray of bool, same shape

    Returns
    -------
    ndarray of uint8
        Values in ``LABELS``.
    """
    masks = [np.asarray(m, dtype=bool) for m in (lung_mask, mediastinum_mask, tumour_mask)]
    shape = masks[0].shape
    if any(m.shape != shape for m in masks):
        raise ValueError(f"mask shapes differ: {[m.shape for m in masks]}")
    labels = np.zeros(shape, dtype=np.uint8)
    for name, mask in zip(("lung", "mediastinum", "tumour"), masks):
        labels[mask] = LABELS[name]
    return labels


def select_slices(labels, classes=DEFAULT_SELECT_CLASSES, *, min_voxels: int = DEFAULT_MIN_VOXELS) -> np.ndarray:
    """Indices (along z) of the axial slices that contain any of ``classes``.

    Parameters
    ----------
    labels : ndarray, shape (z, y, x)
    classes : sequence of int or str
        Label values or names from ``LABELS``; default tumour only.
    min_voxels : int
        A slice counts when it has at least this many voxels of the classes.

    Returns
    -------
    ndarray of int, sorted
    """
    labels = np.asarray(labels)
    values = [LABELS[c] if isinstance(c, str) else int(c) for c in classes]
    counts = np.isin(labels, values).sum(axis=tuple(range(1, labels.ndim)))
    return np.nonzero(counts >= min_voxels)[0].astype(int)


def dice(a, b) -> float:
    """Dice overlap ``2|A∩B| / (|A| + |B|)`` of two boolean masks; 1.0 when both are empty."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    total = np.count_nonzero(a) + np.count_nonzero(b)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(a & b) / total
