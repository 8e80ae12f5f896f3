"""The one way into the nets: input stacking with per-slice standardisation, and label resizing.

Training (:func:`colearn_pipeline.training.data.assemble_slices`), evaluation and
``colearn-predict`` build the network input and bring labels between the model grid and the CT
grid through these two functions only, so the three cannot drift apart.
"""

from __future__ import annotations

import numpy as np

#: Standard deviations below this are treated as a constant channel (standardised to zeros).
STD_EPS = 1e-6


def standardise_slices(volume: np.ndarray) -> np.ndarray:
    """Standardise each slice of a ``(S, H, W)`` stack to zero mean and unit variance.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(S, H, W)`` stack of one modality (CT in HU or PET in SUV).

    Returns
    -------
    numpy.ndarray
        float32 ``(S, H, W)``; a constant slice becomes all zeros.
    """
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"expected (S, H, W), got shape {v.shape}")
    mean = v.mean(axis=(1, 2), keepdims=True)
    std = v.std(axis=(1, 2), keepdims=True)
    out = np.where(std > STD_EPS, (v - mean) / np.maximum(std, STD_EPS), 0.0)
    return out.astype(np.float32)


def network_input(ct_hu: np.ndarray, suv: np.ndarray) -> np.ndarray:
    """Network input of a study's model-grid slices: CT and PET stacked, each slice standardised.

    Parameters
    ----------
    ct_hu : numpy.ndarray
        ``(S, H, W)`` CT in HU on the model grid.
    suv : numpy.ndarray
        ``(S, H, W)`` PET in SUV on the same grid.

    Returns
    -------
    numpy.ndarray
        float32 ``(S, 2, H, W)``: channel 0 CT, channel 1 PET (:func:`standardise_slices`).
    """
    ct, pet = np.asarray(ct_hu), np.asarray(suv)
    if ct.shape != pet.shape:
        raise ValueError(f"ct_hu {ct.shape} and suv {pet.shape} differ")
    return np.stack([standardise_slices(ct), standardise_slices(pet)], axis=1)


def resize_labels_nearest(labels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Nearest-neighbour resize of a ``(S, H, W)`` label stack to ``(S, rows, cols)``.

    Pixel centres are aligned: output pixel ``i`` samples input ``floor((i + 0.5) * H / rows)``,
    which inverts a resize of the whole field of view (model grid 256 -> CT grid 512 and back).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(S, H, W)`` integer labels.
    rows, cols : int
        Output size.

    Returns
    -------
    numpy.ndarray
        ``(S, rows, cols)`` of the input dtype.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"expected (S, H, W) labels, got shape {lab.shape}")
    _, h, w = lab.shape
    yi = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(np.int64), h - 1)
    xi = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(np.int64), w - 1)
    return lab[:, yi[:, None], xi[None, :]]
