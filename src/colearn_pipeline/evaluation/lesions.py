"""Lesion-level and volume metrics of one study's 3D tumour masks, as the autoPET challenge scores them.

The autoPET challenges (MICCAI 2022-2024; Gatidis et al., "A whole-body FDG-PET/CT dataset with
manually annotated tumor lesions", Sci. Data 9:601, 2022; evaluation script ``val_script.py`` of
github.com/lab-midas/autoPET) score each patient on the 3D volume:

- foreground Dice ``2|P∩T| / (|P| + |T|)`` of the predicted and true tumour masks, for patients
  with a true lesion only (a tumour-free patient's prediction counts in its FPV);
- false-positive volume (FPV): the volume of the predicted connected components that do not
  overlap any true-lesion voxel;
- false-negative volume (FNV): the volume of the true connected components that no predicted
  voxel overlaps;

with connected components at 18-connectivity (face and edge neighbours, not corners) and the
volume of a voxel the product of its spacings (mm³ / 1000 = mL). The same matching gives what a
clinician reads: a true lesion is *detected* when at least one predicted voxel overlaps it,
per-lesion sensitivity = detected / true lesions, and false-positive lesions per study = the
predicted components that overlap no true lesion. Metabolic tumour volume (MTV, mL) and SUVmax
of the predicted and the true masks compare what a report would quote.

Every function is pure: masks, SUV and spacing in, numbers out (docs/train_eval.md, "Lesion-level
and volume metrics").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from colearn_pipeline.dicom.grid import resize_labels_nearest

#: Voxel neighbourhoods by connectivity: 6 (faces), 18 (faces and edges: autoPET), 26 (and corners).
CONNECTIVITY_RANK: dict[int, int] = {6: 1, 18: 2, 26: 3}
#: autoPET's connectivity.
AUTOPET_CONNECTIVITY = 18
MM3_PER_ML = 1000.0
#: Columns of :func:`lesion_metrics`, in order.
LESION_METRICS: tuple[str, ...] = (
    "dice_3d", "fpv_ml", "fnv_ml", "true_lesions", "detected_lesions", "lesion_sensitivity",
    "false_positive_lesions", "mtv_true_ml", "mtv_pred_ml", "suvmax_true", "suvmax_pred",
)


def components(mask: np.ndarray, connectivity: int = AUTOPET_CONNECTIVITY) -> tuple[np.ndarray, int]:
    """Connected components of a 3D boolean mask.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(z, y, x)`` boolean.
    connectivity : int
        6, 18 (autoPET) or 26.

    Returns
    -------
    tuple
        int32 component labels (0 outside, 1..n) and ``n``.
    """
    if connectivity not in CONNECTIVITY_RANK:
        raise ValueError(f"connectivity must be one of {sorted(CONNECTIVITY_RANK)}, got {connectivity}")
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"expected a (z, y, x) mask, got shape {m.shape}")
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY_RANK[connectivity])
    labelled, n = ndimage.label(m, structure=structure)
    return labelled.astype(np.int32, copy=False), int(n)


def _touched(labelled: np.ndarray, n: int, other: np.ndarray) -> np.ndarray:
    """bool ``(n,)``: which components 1..n share at least one voxel with ``other``."""
    hit = np.zeros(n + 1, dtype=bool)
    hit[np.unique(labelled[other & (labelled > 0)])] = True
    return hit[1:]


def _sizes(labelled: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of components 1..n."""
    return np.bincount(labelled.ravel(), minlength=n + 1)[1:]


def voxel_ml(spacing_zyx_mm: Sequence[float]) -> float:
    """Volume of one voxel in mL from its ``(z, y, x)`` spacing in mm."""
    s = np.asarray(spacing_zyx_mm, dtype=np.float64)
    if s.shape != (3,) or not np.all(s > 0):
        raise ValueError(f"spacing_zyx_mm must be 3 positive numbers, got {spacing_zyx_mm}")
    return float(np.prod(s) / MM3_PER_ML)


def lesion_matching(pred: np.ndarray, truth: np.ndarray, spacing_zyx_mm: Sequence[float],
                    connectivity: int = AUTOPET_CONNECTIVITY) -> dict[str, float]:
    """autoPET's Dice, FPV and FNV and the per-lesion detection counts of one study.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        ``(z, y, x)`` boolean tumour masks on one grid.
    spacing_zyx_mm : sequence of float
        Voxel spacing of that grid.
    connectivity : int
        Component connectivity (autoPET: 18).

    Returns
    -------
    dict
        ``dice_3d`` (NaN without a true tumour voxel: autoPET leaves Dice out of tumour-free
        patients), ``fpv_ml``, ``fnv_ml``, ``true_lesions``, ``detected_lesions``,
        ``lesion_sensitivity`` (NaN without a true lesion), ``false_positive_lesions``.
    """
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and truth {t.shape} differ")
    ml = voxel_ml(spacing_zyx_mm)
    p_lab, n_p = components(p, connectivity)
    t_lab, n_t = components(t, connectivity)
    fp_comp = ~_touched(p_lab, n_p, t)
    detected = _touched(t_lab, n_t, p)
    n_true = int(t.sum())
    return {
        "dice_3d": 2.0 * int((p & t).sum()) / (int(p.sum()) + n_true) if n_true else math.nan,
        "fpv_ml": float(_sizes(p_lab, n_p)[fp_comp].sum()) * ml,
        "fnv_ml": float(_sizes(t_lab, n_t)[~detected].sum()) * ml,
        "true_lesions": n_t,
        "detected_lesions": int(detected.sum()),
        "lesion_sensitivity": float(detected.mean()) if n_t else math.nan,
        "false_positive_lesions": int(fp_comp.sum()),
    }


def suv_max(suv: np.ndarray, mask: np.ndarray) -> float:
    """Highest SUV inside ``mask`` (any grid, same shape); NaN for an empty mask."""
    s, m = np.asarray(suv), np.asarray(mask, dtype=bool)
    if s.shape != m.shape:
        raise ValueError(f"suv {s.shape} and mask {m.shape} differ")
    return float(s[m].max()) if m.any() else math.nan


def lesion_metrics(pred: np.ndarray, truth: np.ndarray, spacing_zyx_mm: Sequence[float],
                   suv: np.ndarray | None = None, connectivity: int = AUTOPET_CONNECTIVITY) -> dict[str, float]:
    """:func:`lesion_matching` plus predicted and true MTV (mL) and SUVmax of one study.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        ``(z, y, x)`` boolean tumour masks on one grid.
    spacing_zyx_mm : sequence of float
        Voxel spacing of that grid.
    suv : numpy.ndarray, optional
        SUV on the same grid (``suvmax_*`` are NaN without it).
    connectivity : int
        Component connectivity (autoPET: 18).

    Returns
    -------
    dict
        The keys of :data:`LESION_METRICS`.
    """
    out = lesion_matching(pred, truth, spacing_zyx_mm, connectivity)
    ml = voxel_ml(spacing_zyx_mm)
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    out["mtv_true_ml"] = float(t.sum()) * ml
    out["mtv_pred_ml"] = float(p.sum()) * ml
    out["suvmax_true"] = suv_max(suv, t) if suv is not None else math.nan
    out["suvmax_pred"] = suv_max(suv, p) if suv is not None else math.nan
    return {k: out[k] for k in LESION_METRICS}


def study_volume(stack: np.ndarray, slice_index: Sequence[int], ct_shape_zyx: Sequence[int]) -> np.ndarray:
    """A study's model-grid ``(S, H, W)`` stack on its CT grid, cut to the slab of its slices.

    Each slice is resized to the CT's rows and columns by nearest neighbour (the mapping
    ``colearn-predict`` writes its label maps with, so components and volumes are those a user
    sees) and put at its CT slice; slices between kept ones that the model input lacks stay 0,
    so no component bridges them.

    Parameters
    ----------
    stack : numpy.ndarray
        ``(S, H, W)`` labels, masks or SUV of one study, any dtype.
    slice_index : sequence of int
        CT z index of each slice (distinct).
    ct_shape_zyx : sequence of int
        The CT volume's shape.

    Returns
    -------
    numpy.ndarray
        ``(max - min + 1, rows, cols)`` of the stack's dtype, slab ``min(slice_index)..max``.
    """
    a = np.asarray(stack)
    idx = np.asarray(slice_index, dtype=np.int64)
    if a.ndim != 3 or len(idx) != len(a) or not len(a):
        raise ValueError(f"expected a non-empty (S, H, W) stack with one slice index per slice, got {a.shape}")
    if len(np.unique(idx)) != len(idx):
        raise ValueError("slice_index has duplicates")
    _, rows, cols = (int(v) for v in ct_shape_zyx)
    volume = np.zeros((int(idx.max() - idx.min()) + 1, rows, cols), dtype=a.dtype)
    volume[idx - idx.min()] = resize_labels_nearest(a, rows, cols)
    return volume


def model_input_lesion_metrics(pred: np.ndarray, study: Mapping[str, Any], tumour_label: int = 3,
                               connectivity: int = AUTOPET_CONNECTIVITY) -> dict[str, float]:
    """:func:`lesion_metrics` of a net's labels for one study's model input, on the CT grid.

    Parameters
    ----------
    pred : numpy.ndarray
        ``(S, H, W)`` predicted labels of the study's model-input slices, in stored order.
    study : mapping
        The model-input NPZ arrays (docs/architecture.md): ``labels``, ``suv``, ``slice_index``,
        ``ct_shape_zyx``, ``spacing_xyz_mm``.
    tumour_label : int
        Label value of tumours.
    connectivity : int
        Component connectivity (autoPET: 18).

    Returns
    -------
    dict
        The keys of :data:`LESION_METRICS`; SUVmax from the model input's SUV.
    """
    labels = np.asarray(study["labels"])
    if np.shape(pred) != labels.shape:
        raise ValueError(f"{len(pred)} predicted slices of shape {np.shape(pred)[1:]} for a model input of "
                         f"shape {labels.shape}")
    idx, shape = study["slice_index"], study["ct_shape_zyx"]
    spacing_zyx_mm = np.asarray(study["spacing_xyz_mm"], dtype=np.float64)[::-1]
    return lesion_metrics(study_volume(np.asarray(pred) == tumour_label, idx, shape),
                          study_volume(labels == tumour_label, idx, shape), spacing_zyx_mm,
                          suv=study_volume(np.asarray(study["suv"], dtype=np.float32), idx, shape),
                          connectivity=connectivity)
