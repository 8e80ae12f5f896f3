"""Apply a trained net to one study's model input and write the labels on the CT grid as NIfTI.

``colearn-predict --model data/06_models/colearn/model.pt --study data/05_model_input/<p>.npz
--out pred.nii.gz`` (or ``python -m colearn_pipeline.predict ...``).

Each ``(H, W)`` label slice is resized by nearest neighbour to the CT's ``(rows, columns)``
and placed at its ``slice_index`` in a zero (background) volume of the CT's shape; the NIfTI
gets the CT geometry stored in the NPZ (spacing, origin, direction, SimpleITK order), so it
overlays the study's CT in a viewer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearn_pipeline.evaluation.metrics import predict_labels
from colearn_pipeline.training.data import standardise_slices
from colearn_pipeline.training.loop import load_model, resolve_device


def resize_nearest(labels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Nearest-neighbour resize of a ``(S, H, W)`` stack to ``(S, rows, cols)``.

    Pixel centres are aligned (output pixel ``i`` samples input ``floor((i + 0.5) * H / rows)``),
    which inverts a resize of the whole field of view.
    """
    s, h, w = labels.shape
    yi = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(np.int64), h - 1)
    xi = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(np.int64), w - 1)
    return labels[:, yi[:, None], xi[None, :]]


def labels_to_ct_volume(labels: np.ndarray, study: Mapping[str, Any]) -> np.ndarray:
    """Place a ``(S, H, W)`` label stack into a uint8 volume of the study's CT shape ``(z, y, x)``."""
    z, rows, cols = (int(v) for v in np.asarray(study["ct_shape_zyx"]))
    idx = np.asarray(study["slice_index"], dtype=np.int64)
    if len(idx) != len(labels):
        raise ValueError(f"{len(labels)} label slices but {len(idx)} slice indices")
    if idx.size and (idx.min() < 0 or idx.max() >= z):
        raise ValueError(f"slice_index outside the CT volume of {z} slices")
    volume = np.zeros((z, rows, cols), dtype=np.uint8)
    volume[idx] = resize_nearest(np.asarray(labels, dtype=np.uint8), rows, cols)
    return volume


def predict_study(bundle: Mapping[str, Any], study: Mapping[str, Any], device: str = "auto",
                  batch_size: int = 8) -> np.ndarray:
    """Label stack ``(S, H, W)`` predicted by a model bundle for one study's model input."""
    x = np.stack([standardise_slices(study["ct_hu"]), standardise_slices(study["suv"])], axis=1)
    dev = resolve_device(device)
    return predict_labels(load_model(bundle, dev), x, batch_size, dev)


def write_label_nifti(volume: np.ndarray, study: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Write a ``(z, y, x)`` label volume with the study's CT geometry (SimpleITK), atomically."""
    import SimpleITK as sitk

    from colearn_pipeline.datasets._atomic import atomic_write

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.uint8))
    image.SetSpacing([float(v) for v in np.asarray(study["spacing_xyz_mm"])])
    image.SetOrigin([float(v) for v in np.asarray(study["origin_xyz_mm"])])
    image.SetDirection([float(v) for v in np.asarray(study["direction"])])
    out = Path(out)
    atomic_write(out, lambda tmp: sitk.WriteImage(image, tmp, useCompression=True))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``colearn-predict``)."""
    parser = argparse.ArgumentParser(prog="colearn-predict", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model bundle, e.g. data/06_models/colearn/model.pt")
    parser.add_argument("--study", required=True, help="model input, data/05_model_input/<pseudonym>.npz")
    parser.add_argument("--out", required=True, help="output NIfTI (.nii.gz)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0, ...")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    bundle = torch.load(args.model, map_location="cpu", weights_only=True)
    with np.load(args.study, allow_pickle=False) as npz:
        study = {k: npz[k] for k in npz.files}
    labels = predict_study(bundle, study, args.device, args.batch_size)
    out = write_label_nifti(labels_to_ct_volume(labels, study), study, args.out)
    counts = np.bincount(labels.ravel(), minlength=4)
    print(f"{out}: {bundle['net']} labels on the CT grid {tuple(int(v) for v in study['ct_shape_zyx'])};"
          f" predicted pixels per class {counts.tolist()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
