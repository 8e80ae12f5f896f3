"""Tiny synthetic model-input studies (the NPZ contract): a test fixture, not part of the package.

Not a phantom: just an ellipse body, two lung ellipses, a mediastinum block and one hot
tumour, with CT and SUV intensities that make the classes learnable in a few epochs.
"""

from __future__ import annotations

import numpy as np


def synthetic_study(name: str, n_slices: int = 4, size: int = 32, seed: int = 0,
                    ct_shape_zyx: tuple[int, int, int] | None = None, tumour_free: int = 0) -> dict[str, np.ndarray]:
    """One study with the keys of ``data/05_model_input/<pseudonym>.npz``.

    Parameters
    ----------
    name : str
        Pseudonym stored under ``study``.
    n_slices : int
        Labelled slices.
    size : int
        Axial size H = W.
    seed : int
        Noise and tumour position.
    ct_shape_zyx : tuple of int, optional
        The CT volume shape recorded in the geometry (default ``(2 * n_slices, 2 * size, 2 * size)``).
    tumour_free : int
        The last this many slices hold lungs and mediastinum but no tumour.

    Returns
    -------
    dict
        ``ct_hu``, ``suv``, ``labels``, ``slice_index``, ``ct_shape_zyx``, ``spacing_xyz_mm``,
        ``origin_xyz_mm``, ``direction``, ``study``, ``has_tumour``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.47) ** 2 < 1
    lung_l = ((yy - 0.5) / 0.26) ** 2 + ((xx - 0.28) / 0.14) ** 2 < 1
    lung_r = ((yy - 0.5) / 0.26) ** 2 + ((xx - 0.72) / 0.14) ** 2 < 1
    medi = (np.abs(xx - 0.5) < 0.07) & (np.abs(yy - 0.5) < 0.25)
    labels = np.zeros((n_slices, size, size), np.uint8)
    ct = np.full(labels.shape, -1000.0, np.float32)
    suv = np.zeros(labels.shape, np.float32)
    for s in range(n_slices):
        lab = np.zeros((size, size), np.uint8)
        lab[lung_l | lung_r] = 1
        lab[medi] = 2
        cy, cx = rng.uniform(0.4, 0.6), rng.choice([0.27, 0.73]) + rng.uniform(-0.03, 0.03)
        tumour = ((yy - cy) ** 2 + (xx - cx) ** 2) < (0.07 + 0.01 * s) ** 2
        lab[tumour & (s < n_slices - tumour_free)] = 3
        labels[s] = lab
        ct[s] = np.where(body, 40.0, -1000.0)
        ct[s][lab == 1] = -850.0
        ct[s][lab == 3] = 30.0
        suv[s] = np.where(body, 0.8, 0.0)
        suv[s][lab == 1] = 0.3
        suv[s][lab == 2] = 1.8
        suv[s][lab == 3] = 9.0
    ct += rng.normal(0, 15, ct.shape).astype(np.float32)
    suv = np.clip(suv + rng.normal(0, 0.1, suv.shape).astype(np.float32), 0, None)
    if ct_shape_zyx is None:
        ct_shape_zyx = (2 * n_slices, 2 * size, 2 * size)
    return {
        "ct_hu": ct,
        "suv": suv,
        "labels": labels,
        "slice_index": np.arange(1, 2 * n_slices, 2, dtype=np.int32)[:n_slices],
        "ct_shape_zyx": np.asarray(ct_shape_zyx, dtype=np.int64),
        "spacing_xyz_mm": np.array([1.5, 1.5, 3.0]),
        "origin_xyz_mm": np.array([-100.0, -120.0, -50.0]),
        "direction": np.eye(3).ravel(),
        "study": np.asarray(name),
        "has_tumour": (labels == 3).any(axis=(1, 2)),
    }


def synthetic_train_set(n_studies: int, n_slices: int, size: int) -> dict:
    """``assemble_slices`` of ``n_studies`` synthetic studies named ``study-<10 hex>`` (seeds 0, 1, ...)."""
    from colearn_pipeline.training import assemble_slices

    names = [f"study-{i:010x}" for i in range(n_studies)]
    return assemble_slices({n: synthetic_study(n, n_slices=n_slices, size=size, seed=i) for i, n in enumerate(names)},
                           names)


def tiny_bundle_file(folder, epochs: int = 2):
    """``(bundle, path)``: a width-4, depth-2 co-learning net trained ``epochs`` epochs on two synthetic
    studies of 4 slices at 32x32, saved as ``folder/model.pt`` (what the predict tests load; weights barely matter)."""
    from pathlib import Path

    import torch

    from colearn_pipeline.training import assemble_slices, train_model

    names = [f"study-{i:010x}" for i in range(2)]
    data = assemble_slices({n: synthetic_study(n, n_slices=4, size=32, seed=i) for i, n in enumerate(names)}, names)
    bundle, _ = train_model("colearn", {"width": 4, "depth": 2}, data,
                            {"seed": 0, "epochs": epochs, "batch_size": 4, "learning_rate": 0.05, "l2_lambda": 0.0,
                             "progress": False})
    path = Path(folder) / "model.pt"
    torch.save(bundle, path)
    return bundle, path
