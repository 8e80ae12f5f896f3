"""Figures: Fig. 5-style segmentation panels, Fig. 6-style fusion maps, training curves.

Every function returns a :class:`matplotlib.figure.Figure` built with the object API (no pyplot
state), so it works headless and Kedro's ``MatplotlibDataset`` can save it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from colearn_pipeline.evaluation.tables import NET_LABELS

#: Label colours: background transparent/black, lungs blue, mediastinum green, tumours red.
LABEL_COLOURS = ["#000000", "#3b7dd8", "#3cb44b", "#e6194b"]
LABEL_NAMES = ["background", "lungs", "mediastinum", "tumours"]


def select_slices(labels: np.ndarray, n: int = 3, tumour_label: int = 3) -> list[int]:
    """Pick ``n`` slices for display: those with the most tumour pixels, ties by lung area.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N, H, W)`` ground truth.
    n : int
        How many.
    tumour_label : int
        Label value of tumours.

    Returns
    -------
    list of int
        Slice indices, sorted.
    """
    tumour = (labels == tumour_label).sum((1, 2))
    lung = (labels == 1).sum((1, 2))
    order = np.lexsort((-lung, -tumour))
    return sorted(int(i) for i in order[: min(n, len(order))])


def _fused_rgb(ct: np.ndarray, pet: np.ndarray, cmap: str, alpha: float) -> np.ndarray:
    """Grey CT with a colour lookup table applied to PET, alpha-blended where PET is high."""
    from matplotlib import colormaps

    def norm(a, lo_q, hi_q):
        lo, hi = np.percentile(a, [lo_q, hi_q])
        return np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)

    grey = np.repeat(norm(ct, 1, 99)[..., None], 3, axis=-1)
    p = norm(pet, 1, 99.5)
    colour = colormaps[cmap](p)[..., :3]
    a = alpha * p[..., None]
    return (1 - a) * grey + a * colour


def segmentation_panels(
    x: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    slices: Sequence[int],
    pet_cmap: str = "hot",
    pet_alpha: float = 0.8,
    titles: Sequence[str] | None = None,
) -> Figure:
    """Fig. 5: per row one slice; columns fused PET-CT, GT, then each net's prediction.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, 2, H, W)`` slices (CT, PET; standardised is fine, the display rescales).
    truth : numpy.ndarray
        ``(N, H, W)`` ground truth.
    predictions : mapping
        ``{net: (N, H, W) labels}``; shown in the paper's order (TB, TC, FS, ours).
    slices : sequence of int
        Which slices (rows).
    pet_cmap, pet_alpha : str, float
        Colour lookup table and maximum opacity of PET over the grey CT.
    titles : sequence of str, optional
        Row labels (e.g. pseudonym and slice index).

    Returns
    -------
    matplotlib.figure.Figure
    """
    nets = [n for n in NET_LABELS if n in predictions] + [n for n in predictions if n not in NET_LABELS]
    cols = 2 + len(nets)
    rows = max(len(slices), 1)
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    lut = ListedColormap(LABEL_COLOURS)
    for r, i in enumerate(slices):
        panels = [("fused PET-CT", None), ("GT", truth[i])] + [
            (NET_LABELS.get(n, n), predictions[n][i]) for n in nets
        ]
        for c, (name, lab) in enumerate(panels):
            ax = axes[r, c]
            if lab is None:
                ax.imshow(_fused_rgb(x[i, 0], x[i, 1], pet_cmap, pet_alpha))
            else:
                ax.imshow(lab, cmap=lut, vmin=0, vmax=len(LABEL_COLOURS) - 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
        if titles is not None:
            axes[r, 0].set_ylabel(titles[r], fontsize=7)
    fig.legend(
        handles=[Patch(color=c, label=n) for c, n in zip(LABEL_COLOURS[1:], LABEL_NAMES[1:])],
        loc="outside lower center", ncol=3, fontsize=8,
    )
    return fig


@torch.no_grad()
def first_fusion_map(model: torch.nn.Module, x_slice: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Fusion map of the co-learning net's first (finest) co-learning unit for one slice.

    Parameters
    ----------
    model : torch.nn.Module
        A co-learning net (``forward(x, return_fusion_maps=True)``).
    x_slice : numpy.ndarray
        ``(2, H, W)`` standardised slice.

    Returns
    -------
    numpy.ndarray
        float32 ``(2c, h, w)``: the first ``c`` channels weight CT features, the rest PET.
    """
    model = model.to(device).eval()
    xb = torch.from_numpy(np.ascontiguousarray(x_slice[None], dtype=np.float32)).to(device)
    _, maps = model(xb, return_fusion_maps=True)
    return maps[0][0].float().cpu().numpy()


def fusion_map_grid(fusion_map: np.ndarray, columns: int = 8, cmap: str = "gray", title: str | None = None) -> Figure:
    """Fig. 6: every channel of a fusion map, each normalised to [0, 1] independently.

    Parameters
    ----------
    fusion_map : numpy.ndarray
        ``(2c, h, w)``; channels ``0..c-1`` are labelled CT 1..c and ``c..2c-1`` PET 1..c.
    columns : int
        Panels per row.
    cmap : str
        Colour map.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    k = fusion_map.shape[0]
    half = k // 2
    rows = -(-k // columns)
    fig = Figure(figsize=(1.3 * columns, 1.4 * rows + 0.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, columns, squeeze=False))
    for j, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if j >= k:
            ax.axis("off")
            continue
        ch = fusion_map[j].astype(np.float64)
        lo, hi = ch.min(), ch.max()
        ax.imshow((ch - lo) / (hi - lo) if hi > lo else np.zeros_like(ch), cmap=cmap, vmin=0, vmax=1)
        label = f"CT {j + 1}" if j < half else f"PET {j - half + 1}"
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def training_curves(histories: Mapping[str, pd.DataFrame], title: str | None = None) -> Figure:
    """Loss and pixel accuracy per epoch (training, and validation where present) per net.

    Parameters
    ----------
    histories : mapping
        ``{label: history table}`` with ``epoch``, ``train_loss``, ``train_accuracy`` and
        optionally ``val_loss``, ``val_accuracy``.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (label, h) in enumerate(histories.items()):
        colour = f"C{i}"
        ax_loss.plot(h["epoch"], h["train_loss"], color=colour, label=f"{label} train")
        ax_acc.plot(h["epoch"], h["train_accuracy"], color=colour, label=f"{label} train")
        if "val_loss" in h and h["val_loss"].notna().any():
            ax_loss.plot(h["epoch"], h["val_loss"], color=colour, ls="--", label=f"{label} validation")
            ax_acc.plot(h["epoch"], h["val_accuracy"], color=colour, ls="--", label=f"{label} validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="pixel accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
