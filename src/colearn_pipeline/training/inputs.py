"""The one way into the nets: input stacking with per-slice standardisation, and label resizing.

Training (:func:`colearn_pipeline.training.data.assemble_slices`), evaluation and
``colearn-predict`` build the network input and bring labels between the model grid and the CT
grid through these two functions only, so the three cannot drift apart.
"""

from __future__ import annotations

import numpy as np

# defined beside resize_slices so that preprocess workers need no torch (this package imports it)
from colearn_pipeline.dicom.grid import resize_labels_nearest  # noqa: F401

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
