"""Slice arrays from model-input studies, augmentation on any device, and the epoch order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from colearn_pipeline.training.inputs import network_input, standardise_slices

__all__ = ["assemble_slices", "augment_batch", "augmentation_indices", "epoch_order", "standardise_slices",
           "training_slice_mask"]

#: Label value of tumours (colearn_pipeline.groundtruth.LABELS; not imported: training needs no SimpleITK).
TUMOUR_LABEL = 3


def _resolve(study: Any) -> Mapping[str, Any]:
    """Return a study mapping, calling a PartitionedDataset's lazy loader if needed."""
    return study() if callable(study) else study


def assemble_slices(
    model_input: Mapping[str, Any],
    studies: Sequence[str],
) -> dict[str, Any]:
    """Stack the slices of some studies into network inputs and targets.

    Parameters
    ----------
    model_input : mapping
        ``{pseudonym: study}`` where a study is a mapping with the model-input NPZ keys
        (``ct_hu``, ``suv``, ``labels``, ``slice_index``, ...) or a callable returning one
        (a Kedro PartitionedDataset's lazy loader).
    studies : sequence of str
        Which studies to take, in this order.

    Returns
    -------
    dict
        ``x`` float32 ``(N, 2, H, W)`` (channel 0 CT, 1 PET, each slice standardised per
        channel), ``y`` int64 ``(N, H, W)`` labels, ``study`` ``(N,)`` str pseudonym of each
        slice, ``slice_index`` int32 ``(N,)`` z index of each slice in its CT volume,
        ``has_tumour`` bool ``(N,)`` whether the slice's ground truth holds tumour (the NPZ's flag;
        from the labels for a model input written before the flag existed).
    """
    xs, ys, names, zidx, flags = [], [], [], [], []
    for name in studies:
        if name not in model_input:
            raise KeyError(f"study {name!r} of the split is not in the model input")
        s = _resolve(model_input[name])
        ct, suv, lab = np.asarray(s["ct_hu"]), np.asarray(s["suv"]), np.asarray(s["labels"])
        if not ct.shape == suv.shape == lab.shape:
            raise ValueError(f"{name}: ct_hu {ct.shape}, suv {suv.shape}, labels {lab.shape} differ")
        if ct.shape[0] == 0:
            continue
        xs.append(network_input(ct, suv))
        ys.append(lab.astype(np.int64))
        names.extend([name] * ct.shape[0])
        zidx.append(np.asarray(s.get("slice_index", np.arange(ct.shape[0])), dtype=np.int32))
        flag = s["has_tumour"] if "has_tumour" in s else (lab == TUMOUR_LABEL).any(axis=(1, 2))
        flags.append(np.asarray(flag, dtype=bool))
    if not xs:
        raise ValueError("no slices in the selected studies")
    return {
        "x": np.concatenate(xs),
        "y": np.concatenate(ys),
        "study": np.asarray(names),
        "slice_index": np.concatenate(zidx),
        "has_tumour": np.concatenate(flags),
    }


def training_slice_mask(has_tumour: np.ndarray, tumour_free_share: float, seed: int) -> np.ndarray:
    """Which slices a net trains on: every tumour slice (the paper) plus a share of tumour-free ones.

    Parameters
    ----------
    has_tumour : numpy.ndarray
        bool ``(N,)``: the slice's ground truth holds tumour.
    tumour_free_share : float
        Tumour-free slices to add per tumour slice (0: the paper's tumour slices only; 1: as many
        tumour-free as tumour slices), drawn without replacement; all of them when fewer exist.
    seed : int
        Seed of the draw (the same slices for every training seed and for ``colearn-train``).

    Returns
    -------
    numpy.ndarray
        bool ``(N,)``.
    """
    flags = np.asarray(has_tumour, dtype=bool)
    if not np.isfinite(tumour_free_share) or tumour_free_share < 0:
        raise ValueError(f"tumour_free_share must be a number >= 0, got {tumour_free_share}")
    free = np.flatnonzero(~flags)
    n_free = min(len(free), round(float(tumour_free_share) * int(flags.sum())))
    keep = flags.copy()
    keep[np.random.default_rng(int(seed)).choice(free, size=n_free, replace=False)] = True
    return keep


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map indices in ``[-size + 1, 2 * size - 2]`` into ``[0, size)`` as reflect padding does."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def augmentation_indices(
    draws: torch.Tensor, h: int, w: int, pad: int = 10, flip_lr: bool = True, flip_ud: bool = True
) -> torch.Tensor:
    """Flat source pixel of every output pixel of the crop-and-flip augmentation.

    A sample is reflect-padded by ``pad`` pixels a side, cropped back to ``(h, w)`` at offset
    ``(floor(d0 * (2 pad + 1)), floor(d1 * (2 pad + 1)))`` and flipped left-right when
    ``d2 < 0.5`` and up-down when ``d3 < 0.5``; all of it is one index map, so padding, crop
    and flips cost one gather on any device and give exactly the pixels of the step-by-step
    transform.

    Parameters
    ----------
    draws : torch.Tensor
        ``(N, 4)`` float32 uniform draws in ``[0, 1)``: row offset, column offset, flip lr, flip ud.
    h, w : int
        Image size; ``pad`` must be smaller than both (as for reflect padding).
    pad : int
        Reflect padding per side; 0 disables cropping.
    flip_lr, flip_ud : bool
        Enable random left-right / up-down flips.

    Returns
    -------
    torch.Tensor
        int64 ``(N, h * w)`` indices into a flattened ``(h, w)`` image, on ``draws.device``.
    """
    if pad >= min(h, w):
        raise ValueError(f"augmentation pad {pad} must be smaller than the image size {h}x{w}")
    span = 2 * pad + 1
    top = (draws[:, 0] * span).long() - pad
    left = (draws[:, 1] * span).long() - pad
    rows = torch.arange(h, device=draws.device).expand(len(draws), h)
    cols = torch.arange(w, device=draws.device).expand(len(draws), w)
    if flip_ud:
        rows = torch.where((draws[:, 3] < 0.5)[:, None], rows.flip(-1), rows)
    if flip_lr:
        cols = torch.where((draws[:, 2] < 0.5)[:, None], cols.flip(-1), cols)
    rows = _reflect(rows + top[:, None], h)
    cols = _reflect(cols + left[:, None], w)
    return (rows[:, :, None] * w + cols[:, None, :]).flatten(1)


def augment_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    pad: int = 10,
    flip_lr: bool = True,
    flip_ud: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop after reflect padding, and random flips, as in the authors' code.

    Each sample is reflect-padded by ``pad`` pixels a side and cropped back to its size at a
    random offset; then flipped left-right and up-down, each with probability 1/2. The same
    transform is applied to image and labels. The random draws, ``(N, 4)`` uniforms, always
    come from the CPU ``generator`` (so a checkpointed generator state resumes the same
    augmentation on any device); the transform itself is one gather on the tensors' device
    (:func:`augmentation_indices`).

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` float images.
    y : torch.Tensor
        ``(N, H, W)`` integer labels, on ``x``'s device.
    generator : torch.Generator
        CPU source of randomness; its state makes the augmentation reproducible.
    pad : int
        Reflect padding per side; 0 disables cropping.
    flip_lr, flip_ud : bool
        Enable random left-right / up-down flips.

    Returns
    -------
    tuple of torch.Tensor
        Augmented ``x`` and ``y`` of the input shapes and dtypes, contiguous, on ``x.device``.
    """
    n, c, h, w = x.shape
    draws = torch.rand((n, 4), generator=generator)
    index = augmentation_indices(draws, h, w, pad, flip_lr, flip_ud).to(x.device, non_blocking=True)
    xa = torch.gather(x.reshape(n, c, h * w), 2, index[:, None, :].expand(n, c, h * w))
    ya = torch.gather(y.reshape(n, h * w), 1, index)
    return xa.view(n, c, h, w), ya.view(n, h, w)


def epoch_order(n: int, epoch: int, seed: int, num_replicas: int = 1, rank: int = 0) -> np.ndarray:
    """Indices of the slices one process visits in an epoch.

    Same rule as ``torch.utils.data.DistributedSampler(shuffle=True, drop_last=False)``: a
    permutation seeded by ``seed + epoch``, padded by wrapping to a multiple of
    ``num_replicas`` and strided by rank, so one process sees the plain permutation.

    Parameters
    ----------
    n : int
        Number of slices.
    epoch : int
        Epoch number (0-based).
    seed : int
        Training seed.
    num_replicas, rank : int
        Data-parallel world size and this process's rank.

    Returns
    -------
    numpy.ndarray
        int64 indices.
    """
    g = torch.Generator()
    g.manual_seed(int(seed) + int(epoch))
    perm = torch.randperm(n, generator=g).tolist()
    total = -(-n // num_replicas) * num_replicas
    perm = (perm * (-(-total // n)))[:total]
    return np.asarray(perm[rank:total:num_replicas], dtype=np.int64)


