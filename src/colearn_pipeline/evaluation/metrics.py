"""Per-slice, per-ROI pixel-overlap metrics (one-vs-rest) and net inference on slices.

Conventions (docs/train_eval.md, "Evaluation"):

- For each test slice and each ROI ``k`` (background 0, lungs 1, mediastinum 2, tumours 3) the
  pixels are counted one-vs-rest: ``tp`` (predicted k, truth k), ``fp``, ``fn``, ``tn``.
- precision ``tp/(tp+fp)``, sensitivity ``tp/(tp+fn)``, specificity ``tn/(tn+fp)``,
  accuracy ``(tp+tn)/pixels``, Dice ``2tp/(2tp+fp+fn)``.
- A ratio whose denominator is zero is NaN and left out of means, SDs and t-tests. In
  particular a slice with no pixel of ROI k in the ground truth *and* none predicted has NaN
  precision, sensitivity and Dice for k (nothing to find, nothing found); specificity and
  accuracy are still defined (1.0 there).
- Exception: a slice that has ROI k in the ground truth but where the net predicts no pixel of
  k gets precision 0 (not NaN), so missing an ROI is not rewarded by dropping the slice.
- The "overall" value of a slice is the mean over the three foreground ROIs (lungs,
  mediastinum, tumours) of that slice's values (NaN ROIs skipped), as the paper's Table II
  computes its overall accuracy and specificity (checked against its published rows in
  tests/test_evaluation_paper_table.py); ``overall_includes_background=True`` adds background.
  Its mean and SD are then taken over slices, as for each ROI.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

#: ROI names by label value, in the paper's Table II row order (background last there).
ROI_NAMES: dict[int, str] = {1: "lungs", 2: "mediastinum", 3: "tumours", 0: "background"}
#: The ROI that the "overall" row leaves out unless asked to include it.
BACKGROUND: str = "background"
METRICS: tuple[str, ...] = ("precision", "sensitivity", "specificity", "accuracy", "dice")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_counts(pred: np.ndarray, truth: np.ndarray, label: int) -> dict[str, np.ndarray]:
    """One-vs-rest pixel counts per slice.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        ``(N, H, W)`` integer label maps.
    label : int
        The ROI's label value.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``tn`` as int64 ``(N,)``.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} must both be (N, H, W)")
    p, t = pred == label, truth == label
    axes = (1, 2)
    tp = (p & t).sum(axes, dtype=np.int64)
    fp = (p & ~t).sum(axes, dtype=np.int64)
    fn = (~p & t).sum(axes, dtype=np.int64)
    tn = (~p & ~t).sum(axes, dtype=np.int64)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def metrics_from_counts(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """The five metrics from one-vs-rest counts, with the NaN rules of this module."""
    tp, fp, fn, tn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn, tn))
    precision = _ratio(tp, tp + fp)
    precision = np.where((tp + fp == 0) & (tp + fn > 0), 0.0, precision)
    return {
        "precision": precision,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def slice_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    studies: Sequence[str] | None = None,
    slice_index: Sequence[int] | None = None,
    labels: Mapping[int, str] = ROI_NAMES,
    overall_includes_background: bool = False,
) -> pd.DataFrame:
    """Long table of metrics per slice and ROI, plus the per-slice "overall" rows.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        ``(N, H, W)`` predicted and true labels.
    studies, slice_index : sequence, optional
        Pseudonym and CT z index of each slice (kept as identifying columns).
    labels : mapping
        ``{label value: ROI name}``.
    overall_includes_background : bool
        Average the "overall" row over every ROI instead of the foreground ROIs only.

    Returns
    -------
    pandas.DataFrame
        Columns ``slice`` (0..N-1), ``study``, ``slice_index``, ``roi``, the metrics of
        :data:`METRICS`, and ``tp``, ``fp``, ``fn``, ``tn`` (NaN on "overall" rows).
    """
    n = len(pred)
    studies = list(studies) if studies is not None else [""] * n
    zidx = list(slice_index) if slice_index is not None else list(range(n))
    frames = []
    per_roi = {}
    for value, name in labels.items():
        c = confusion_counts(pred, truth, value)
        m = metrics_from_counts(**c)
        df = pd.DataFrame({"slice": np.arange(n), "study": studies, "slice_index": zidx, "roi": name, **m, **c})
        frames.append(df)
        per_roi[name] = np.stack([m[k] for k in METRICS], axis=1)
    overall = overall_from_rois(per_roi, overall_includes_background)
    frames.append(
        pd.DataFrame(
            {"slice": np.arange(n), "study": studies, "slice_index": zidx, "roi": "overall",
             **{k: overall[:, j] for j, k in enumerate(METRICS)}}
        )
    )
    return pd.concat(frames, ignore_index=True)


def scored_slice_mask(labels: np.ndarray, mode: str, lung_label: int = 1, tumour_label: int = 3,
                      has_tumour: np.ndarray | None = None) -> np.ndarray:
    """Which slices are scored: ``"all_thorax"`` (every thorax slice, so false-positive tumours on
    tumour-free slices count: what a user sees) or ``"tumour"`` (the paper: slices with tumour).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N, H, W)`` ground truth.
    mode : str
        ``"all_thorax"`` or ``"tumour"``.
    lung_label, tumour_label : int
        Label values.
    has_tumour : numpy.ndarray, optional
        bool ``(N,)``: the model input's flag (the ground truth on the CT grid holds tumour); the
        tumour slices are these when given, else the slices whose ``labels`` hold tumour.

    Returns
    -------
    numpy.ndarray
        bool ``(N,)``: ``"all_thorax"`` keeps slices with lung or tumour (the model input holds
        the thorax slices only).
    """
    y = np.asarray(labels)
    tumour = (y == tumour_label).any(axis=(1, 2))
    if has_tumour is not None:
        flags = np.asarray(has_tumour, dtype=bool)
        if flags.shape != tumour.shape:
            raise ValueError(f"has_tumour {flags.shape} does not match {len(y)} slices")
        tumour = flags
    if mode == "tumour":
        return tumour
    if mode == "all_thorax":
        return tumour | (y == lung_label).any(axis=(1, 2))
    raise ValueError(f"unknown test slice mode {mode!r}; expected 'tumour' or 'all_thorax'")


def overall_from_rois(values_by_roi: Mapping[str, np.ndarray], include_background: bool = False) -> np.ndarray:
    """The "overall" value: mean over the ROIs (foreground only unless asked), NaN skipped.

    Parameters
    ----------
    values_by_roi : mapping
        ``{roi name: array}``, arrays of one shape (e.g. ``(N, metrics)`` per slice, or ROI means).
    include_background : bool
        Also average the ``"background"`` entry.

    Returns
    -------
    numpy.ndarray
        Element-wise mean over the chosen ROIs; NaN where all of them are NaN.
    """
    chosen = [np.asarray(v, dtype=np.float64) for k, v in values_by_roi.items()
              if include_background or k != BACKGROUND]
    if not chosen:
        raise ValueError("no ROI to average for the overall row")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN entries stay NaN
        return np.nanmean(np.stack(chosen), axis=0)


@torch.no_grad()
def predict_labels(
    model: torch.nn.Module,
    x: np.ndarray,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Argmax label maps of a net on standardised slices.

    Parameters
    ----------
    model : torch.nn.Module
        A trained net (put in eval mode here).
    x : numpy.ndarray
        float32 ``(N, 2, H, W)`` standardised CT/PET slices.
    batch_size : int
        Slices per forward pass.
    device : str or torch.device
        Where to run.

    Returns
    -------
    numpy.ndarray
        uint8 ``(N, H, W)``.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).to(device)
        out.append(model(xb).argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *np.shape(x)[2:]), np.uint8)
