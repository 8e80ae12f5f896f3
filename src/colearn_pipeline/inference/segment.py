"""Run a trained net over CT/SUV slices and put its labels back on the CT grid.

Each slice is resized to the net's input size (``bundle["input_hw"]``, what it was trained on)
with :func:`~colearn_pipeline.dicom.grid.resize_slices`, exactly as preprocess builds the model
input; each channel is standardised per slice; the argmax labels are resized back by nearest
neighbour with pixel centres aligned (:func:`resize_nearest`), which inverts a resize of the
whole field of view.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearn_pipeline.dicom.grid import resize_slices
from colearn_pipeline.evaluation.metrics import predict_labels
from colearn_pipeline.training.data import standardise_slices


def resize_nearest(labels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Nearest-neighbour resize of a ``(S, H, W)`` stack to ``(S, rows, cols)``.

    Pixel centres are aligned (output pixel ``i`` samples input ``floor((i + 0.5) * H / rows)``),
    which inverts a resize of the whole field of view.
    """
    s, h, w = labels.shape
    yi = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(np.int64), h - 1)
    xi = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(np.int64), w - 1)
    return labels[:, yi[:, None], xi[None, :]]


def segment_volume(
    model: torch.nn.Module,
    ct_hu: np.ndarray,
    suv: np.ndarray,
    slice_index: Sequence[int],
    input_hw: Sequence[int],
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    chunk_slices: int = 32,
) -> np.ndarray:
    """Labels of a net for the given slices of a CT/SUV volume, on the CT grid.

    Parameters
    ----------
    model : torch.nn.Module
        A net taking ``(N, 2, H, W)`` (CT, SUV) and returning logits ``(N, C, H, W)``.
    ct_hu, suv : numpy.ndarray
        ``(z, y, x)`` CT in HU and SUV on the same grid.
    slice_index : sequence of int
        The slices to segment; every other slice is background.
    input_hw : (int, int)
        The net's input size.
    batch_size : int
        Slices per forward pass.
    device : str or torch.device
    chunk_slices : int
        Slices resized and held at a time (bounds memory on a 512x512 CT).

    Returns
    -------
    numpy.ndarray
        uint8 ``(z, y, x)``.
    """
    if ct_hu.shape != suv.shape:
        raise ValueError(f"CT {ct_hu.shape} and SUV {suv.shape} are not on one grid")
    z, rows, cols = ct_hu.shape
    index = np.asarray(slice_index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= z):
        raise ValueError(f"slice_index outside the volume of {z} slices")
    labels = np.zeros((z, rows, cols), dtype=np.uint8)
    for start in range(0, index.size, max(1, int(chunk_slices))):
        part = index[start : start + max(1, int(chunk_slices))]
        x = np.stack(
            [
                standardise_slices(resize_slices(ct_hu[part], input_hw, "image")),
                standardise_slices(resize_slices(suv[part], input_hw, "image")),
            ],
            axis=1,
        )
        predicted = predict_labels(model, x, batch_size, device)
        labels[part] = resize_nearest(predicted.astype(np.uint8), rows, cols)
    return labels


def labels_to_ct_volume(labels: np.ndarray, study: Mapping[str, Any]) -> np.ndarray:
    """Place a model-input ``(S, H, W)`` label stack into a uint8 volume of the study's CT shape ``(z, y, x)``."""
    z, rows, cols = (int(v) for v in np.asarray(study["ct_shape_zyx"]))
    idx = np.asarray(study["slice_index"], dtype=np.int64)
    if len(idx) != len(labels):
        raise ValueError(f"{len(labels)} label slices but {len(idx)} slice indices")
    if idx.size and (idx.min() < 0 or idx.max() >= z):
        raise ValueError(f"slice_index outside the CT volume of {z} slices")
    volume = np.zeros((z, rows, cols), dtype=np.uint8)
    volume[idx] = resize_nearest(np.asarray(labels, dtype=np.uint8), rows, cols)
    return volume


def predict_model_input(model: torch.nn.Module, study: Mapping[str, Any], device: str | torch.device = "cpu",
                        batch_size: int = 8) -> np.ndarray:
    """Label stack ``(S, H, W)`` of a net for one study's model input (the NPZ contract)."""
    x = np.stack([standardise_slices(study["ct_hu"]), standardise_slices(study["suv"])], axis=1)
    return predict_labels(model, x, batch_size, device)


def write_label_nifti(volume: np.ndarray, study: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Write a ``(z, y, x)`` label volume with a geometry (``spacing_xyz_mm``, ``origin_xyz_mm``,
    ``direction`` in SimpleITK order) as NIfTI, atomically."""
    import SimpleITK as sitk

    from colearn_pipeline.datasets._atomic import atomic_write

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.uint8))
    image.SetSpacing([float(v) for v in np.asarray(study["spacing_xyz_mm"])])
    image.SetOrigin([float(v) for v in np.asarray(study["origin_xyz_mm"])])
    image.SetDirection([float(v) for v in np.asarray(study["direction"])])
    out = Path(out)
    atomic_write(out, lambda tmp: sitk.WriteImage(image, tmp, useCompression=True))
    return out
