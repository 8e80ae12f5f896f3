"""Slice arrays from model-input studies, per-slice standardisation and augmentation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
        slice, ``slice_index`` int32 ``(N,)`` z index of each slice in its CT volume.
    """
    xs, ys, names, zidx = [], [], [], []
    for name in studies:
        if name not in model_input:
            raise KeyError(f"study {name!r} of the split is not in the model input")
        s = _resolve(model_input[name])
        ct, suv, lab = np.asarray(s["ct_hu"]), np.asarray(s["suv"]), np.asarray(s["labels"])
        if not ct.shape == suv.shape == lab.shape:
            raise ValueError(f"{name}: ct_hu {ct.shape}, suv {suv.shape}, labels {lab.shape} differ")
        if ct.shape[0] == 0:
            continue
        xs.append(np.stack([standardise_slices(ct), standardise_slices(suv)], axis=1))
        ys.append(lab.astype(np.int64))
        names.extend([name] * ct.shape[0])
        zidx.append(np.asarray(s.get("slice_index", np.arange(ct.shape[0])), dtype=np.int32))
    if not xs:
        raise ValueError("no slices in the selected studies")
    return {
        "x": np.concatenate(xs),
        "y": np.concatenate(ys),
        "study": np.asarray(names),
        "slice_index": np.concatenate(zidx),
    }


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
    random offset; then flipped left-right and up-down, each with probability 1/2.
    The same transform is applied to image and labels.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` float images.
    y : torch.Tensor
        ``(N, H, W)`` integer labels.
    generator : torch.Generator
        Source of randomness (CPU); its state makes the augmentation reproducible.
    pad : int
        Reflect padding per side; 0 disables cropping.
    flip_lr, flip_ud : bool
        Enable random left-right / up-down flips.

    Returns
    -------
    tuple of torch.Tensor
        Augmented ``x`` and ``y`` of the input shapes and dtypes.
    """
    n, _, h, w = x.shape
    draws = torch.rand((n, 4), generator=generator)
    xs, ys = [], []
    for i in range(n):
        xi, yi = x[i : i + 1], y[i : i + 1, None].to(x.dtype)
        if pad > 0:
            xi = F.pad(xi, (pad, pad, pad, pad), mode="reflect")
            yi = F.pad(yi, (pad, pad, pad, pad), mode="reflect")
            top = int(draws[i, 0] * (2 * pad + 1))
            left = int(draws[i, 1] * (2 * pad + 1))
            xi = xi[..., top : top + h, left : left + w]
            yi = yi[..., top : top + h, left : left + w]
        if flip_lr and draws[i, 2] < 0.5:
            xi, yi = xi.flip(-1), yi.flip(-1)
        if flip_ud and draws[i, 3] < 0.5:
            xi, yi = xi.flip(-2), yi.flip(-2)
        xs.append(xi)
        ys.append(yi)
    return torch.cat(xs), torch.cat(ys)[:, 0].round().to(y.dtype)


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


