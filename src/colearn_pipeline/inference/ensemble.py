"""Soft ensembles and their uncertainty: pure functions on softmax probabilities.

An ensemble prediction averages the softmax outputs of ``K`` *samples*: every member net (K-fold or
seed models) on every test-time view of a slice (identity and, with flip TTA, its flips, each
output flipped back). All members see the same views, so the mean over samples equals the mean over
members of each member's view-average. The label map is the argmax of the mean. Two per-voxel
uncertainties come with it:

- ``entropy``: the entropy of the mean, ``-sum_c p_c ln p_c``, divided by ``ln C`` so that it lies in
  ``[0, 1]`` (0: one class certain; 1: all classes equally likely). It is large wherever the
  ensemble is unsure, whether the members agree on being unsure or disagree.
- ``disagreement``: the fraction of samples whose own argmax differs from the ensemble label,
  in ``[0, 1 - 1/K]``; exactly 0 when every sample gives the same label (e.g. identical members).

Per tumour component, :func:`component_uncertainty` gives the mean and maximum of both and a
low-confidence flag (mean entropy above a threshold, ``predict.uncertainty`` in
conf/base/parameters_predict.yml).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

#: Axis of the classes in a ``(N, C, H, W)`` probability stack.
CLASS_AXIS = 1
#: The uncertainty maps, in the order written.
UNCERTAINTY_MAPS = ("entropy", "disagreement")
#: Decimals of the per-component figures.
ROUND_DECIMALS = 4


@dataclass
class EnsembleOutput:
    """The ensemble's result for a stack of slices on the model grid.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 ``(N, H, W)``: argmax of the mean probabilities.
    probabilities : numpy.ndarray
        float32 ``(N, C, H, W)``: the mean of the samples' softmax outputs.
    entropy : numpy.ndarray
        float32 ``(N, H, W)``: :func:`normalised_entropy` of the mean.
    disagreement : numpy.ndarray
        float32 ``(N, H, W)``: :func:`disagreement_fraction`.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    entropy: np.ndarray
    disagreement: np.ndarray


def mean_probabilities(samples: np.ndarray) -> np.ndarray:
    """Mean of ``K`` softmax outputs ``(K, N, C, H, W) -> (N, C, H, W)`` float32.

    A single sample is returned unchanged (bitwise), so an ensemble of one is the single net.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 5:
        raise ValueError(f"expected samples (K, N, C, H, W), got shape {samples.shape}")
    if samples.shape[0] == 1:
        return samples[0].copy()
    return samples.mean(axis=0, dtype=np.float64).astype(np.float32)


def normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy over the class axis divided by ``ln C``: ``(N, C, H, W) -> (N, H, W)`` in ``[0, 1]``.

    ``0 ln 0`` is taken as 0.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    n_classes = p.shape[CLASS_AXIS]
    if n_classes < 2:
        return np.zeros(p.shape[:CLASS_AXIS] + p.shape[CLASS_AXIS + 1 :], np.float32)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.clip(-plogp.sum(axis=CLASS_AXIS) / np.log(n_classes), 0.0, 1.0).astype(np.float32)


def disagreement_fraction(samples: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fraction of the ``K`` samples whose argmax differs from ``labels``: ``(K, N, C, H, W) -> (N, H, W)``."""
    sample_labels = np.asarray(samples).argmax(axis=CLASS_AXIS + 1)
    return (sample_labels != np.asarray(labels)[None]).mean(axis=0, dtype=np.float64).astype(np.float32)


def combine_samples(samples: np.ndarray) -> EnsembleOutput:
    """The ensemble of ``K`` softmax outputs ``(K, N, C, H, W)``: labels, mean, entropy, disagreement."""
    mean = mean_probabilities(samples)
    labels = mean.argmax(axis=CLASS_AXIS).astype(np.uint8)
    return EnsembleOutput(labels, mean, normalised_entropy(mean), disagreement_fraction(samples, labels))


def tumour_components(labels: np.ndarray, tumour_label: int) -> tuple[np.ndarray, list[int]]:
    """26-connected components of ``labels == tumour_label`` and their ids, largest first.

    The numbering of :func:`colearn_pipeline.inference.summary.summarise_labels` (component ``k``
    of its ``tumours`` list is the ``k``-th id here; a test holds the two together).
    """
    components, n = ndi.label(np.asarray(labels) == tumour_label, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return components, []
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    return components, [int(i) + 1 for i in np.argsort(-sizes, kind="stable")]


def component_uncertainty(
    components: np.ndarray,
    component_ids: Sequence[int],
    maps: Mapping[str, np.ndarray],
    low_confidence_entropy: float,
) -> list[dict[str, Any]]:
    """Mean and maximum of each uncertainty map over each component, and a low-confidence flag.

    Parameters
    ----------
    components : numpy.ndarray
        Integer component image ``(z, y, x)`` (0 background).
    component_ids : sequence of int
        The components to summarise, in the order wanted.
    maps : mapping of str to numpy.ndarray
        ``{"entropy": ..., "disagreement": ...}`` on the grid of ``components``.
    low_confidence_entropy : float
        A component whose mean normalised entropy exceeds it is flagged ``low_confidence``.

    Returns
    -------
    list of dict
        One per id: ``<map>_mean``, ``<map>_max`` for every map, and ``low_confidence`` (bool).
    """
    if "entropy" not in maps:
        raise ValueError("component_uncertainty needs the 'entropy' map")
    ids = np.asarray(list(component_ids), dtype=np.int64)
    out: list[dict[str, Any]] = [{} for _ in ids]
    if ids.size == 0:
        return out
    inside = components > 0  # only the components' voxels: scipy's maximum sorts what it is given
    labels_inside = components[inside]
    for name, values in maps.items():
        if np.shape(values) != components.shape:
            raise ValueError(f"uncertainty map {name} {np.shape(values)} is not on the grid {components.shape}")
        values_inside = np.asarray(values)[inside]
        means = ndi.mean(values_inside, labels_inside, ids)
        maxima = ndi.maximum(values_inside, labels_inside, ids)
        for row, mean, peak in zip(out, np.atleast_1d(means), np.atleast_1d(maxima), strict=True):
            row[f"{name}_mean"] = round(float(mean), ROUND_DECIMALS)
            row[f"{name}_max"] = round(float(peak), ROUND_DECIMALS)
            if name == "entropy":
                row["low_confidence"] = bool(float(mean) > float(low_confidence_entropy))
    return out
