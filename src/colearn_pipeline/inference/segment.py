"""Run a trained net over CT/SUV slices and put its labels back on the CT grid.

Each slice is resized to the net's input size (``bundle["input_hw"]``, what it was trained on)
with :func:`~colearn_pipeline.dicom.grid.resize_slices`, exactly as preprocess builds the model
input; the network input and the label resizing are the ones training uses
(:func:`~colearn_pipeline.training.inputs.network_input`, each channel standardised per slice;
:func:`~colearn_pipeline.training.inputs.resize_labels_nearest`, nearest neighbour with pixel
centres aligned, which inverts a resize of the whole field of view).
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
from colearn_pipeline.training.inputs import network_input, resize_labels_nearest


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
        x = network_input(resize_slices(ct_hu[part], input_hw, "image"), resize_slices(suv[part], input_hw, "image"))
        predicted = predict_labels(model, x, batch_size, device)
        labels[part] = resize_labels_nearest(predicted.astype(np.uint8), rows, cols)
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
    volume[idx] = resize_labels_nearest(np.asarray(labels, dtype=np.uint8), rows, cols)
    return volume


def predict_model_input(model: torch.nn.Module, study: Mapping[str, Any], device: str | torch.device = "cpu",
                        batch_size: int = 8) -> np.ndarray:
    """Label stack ``(S, H, W)`` of a net for one study's model input (the NPZ contract)."""
    return predict_labels(model, network_input(study["ct_hu"], study["suv"]), batch_size, device)


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
