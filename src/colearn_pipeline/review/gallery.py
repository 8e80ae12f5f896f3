"""The review gallery: one static HTML page for a preprocessed cohort, a strip of axial slices per study.

Pure functions: which slices to show (:func:`choose_slices`), one study's strip of CT and SUV with
the label outlines (:func:`study_strip`), the order of the studies (:func:`review_order`, studies
that need review first) and the page (:func:`gallery_html`). The preprocess pipeline's
``build_review_gallery`` node wires them to the stored stage outputs; nothing here reads files.
Only pseudonyms, the manifest's reasons (which name files by label) and figures reach the page.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import ndimage

from colearn_pipeline.groundtruth import LABELS

#: Manifest reasons of studies a person must look at (labels stage, "Ground-truth quality").
NEEDS_REVIEW = "needs review"
#: Quality figures shown under each strip (manifest columns), in this order.
QUALITY_FIGURES = ("lung_ml", "mediastinum_ml", "mediastinum_outside_hull", "lung_balance", "tumour_ml",
                   "tumour_peak_to_threshold", "tumour_in_aerated_lung_ml", "n_findings", "tumours_capped",
                   "tumours_empty", "dice_lung", "dice_mediastinum", "dice_tumour", "labels_source")
#: Where on the lungs' superior-inferior extent (0 apex, 1 base) the apex and base slices sit.
APEX_FRACTION, BASE_FRACTION = 0.08, 0.92
#: Without an airway mask, the carina is taken this far down the lungs' extent (adult chest CT).
CARINA_FRACTION = 0.3
#: CT above this is body (or table): the panels are cropped to it, plus :data:`CROP_MARGIN_MM`.
BODY_HU = -500.0
CROP_MARGIN_MM = 10.0
#: A panel title wider than this many characters is wrapped.
TITLE_CHARACTERS = 24
#: Without lungs (not a thorax), this many evenly spaced slices are shown.
N_EVEN_SLICES = 4


@dataclass(frozen=True)
class GalleryParams:
    """``preprocess.review``: what the gallery shows and how."""

    max_tumour_slices: int        # tumour components shown, largest first (one slice each: its largest area)
    ct_window_hu: tuple[float, float]  # grey range of the CT row
    suv_max: float                # top of the SUV row's grey scale (inverted: high uptake dark)
    panel_inches: float           # width of one slice panel
    dpi: int                      # PNG resolution


def _superior_order(z_indices: np.ndarray, superior_at_high_z: bool) -> np.ndarray:
    """``z_indices`` sorted from the most superior slice to the most inferior."""
    return np.sort(z_indices)[::-1] if superior_at_high_z else np.sort(z_indices)


def _carina(airway_zyx: np.ndarray | None, lung_slices: np.ndarray) -> int | None:
    """The highest lung slice below which the airway splits into two components (the main bronchi)."""
    if airway_zyx is None or not airway_zyx.any():
        return None
    for z in lung_slices:
        if ndimage.label(airway_zyx[z])[1] >= 2:
            return int(z)
    return None


def _tumour_slices(labels_zyx: np.ndarray, max_slices: int) -> list[tuple[str, int]]:
    """One slice per tumour component (its largest cross-section), the largest components first."""
    components, n = ndimage.label(labels_zyx == LABELS["tumour"])
    if n == 0:
        return []
    sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, n + 1))
    picked = []
    for rank, k in enumerate(np.argsort(-sizes)[:max_slices], start=1):
        area = (components == k + 1).sum(axis=(1, 2))
        picked.append((f"tumour {rank}", int(np.argmax(area))))
    return picked


def _anatomy_slices(labels_zyx: np.ndarray, lung_slices: np.ndarray,
                    airway_zyx: np.ndarray | None) -> list[tuple[str, int]]:
    """Apex, carina, heart and lung bases; ``lung_slices`` are the lung's slices from apex to base."""
    last = lung_slices.size - 1
    carina = _carina(airway_zyx, lung_slices)
    if carina is None:
        carina = int(lung_slices[round(CARINA_FRACTION * last)])
    below = lung_slices[np.nonzero(lung_slices == carina)[0][0]:]
    heart_area = (labels_zyx[below] == LABELS["mediastinum"]).sum(axis=(1, 2))
    return [("apex", int(lung_slices[round(APEX_FRACTION * last)])), ("carina", carina),
            ("heart", int(below[int(np.argmax(heart_area))])),
            ("lung bases", int(lung_slices[round(BASE_FRACTION * last)]))]


def choose_slices(labels_zyx: np.ndarray, superior_at_high_z: bool, airway_zyx: np.ndarray | None = None,
                  max_tumour_slices: int = 4) -> list[tuple[str, int]]:
    """The axial slices of a study's strip: apex, carina, heart, lung bases, then each tumour.

    Parameters
    ----------
    labels_zyx : ndarray of int, shape (z, y, x)
        Label map (values of :data:`colearn_pipeline.groundtruth.LABELS`).
    superior_at_high_z : bool
        True when a higher slice index is more superior (LPS with +z up).
    airway_zyx : ndarray of bool, optional
        The trachea and main bronchi (the lung stage's airway); the carina is where it splits.
    max_tumour_slices : int
        Tumour components shown, largest first.

    Returns
    -------
    list of (str, int)
        ``(name, slice index)``; one name per slice (a slice chosen twice is named once, e.g.
        "carina / tumour 1"), from superior to inferior, then the tumours. Where the lungs give
        fewer than :data:`N_EVEN_SLICES` distinct levels (no lungs: not a thorax), evenly spaced
        slices are added.
    """
    lung_slices = _superior_order(np.nonzero((labels_zyx == LABELS["lung"]).any(axis=(1, 2)))[0], superior_at_high_z)
    picks = [] if lung_slices.size == 0 else _anatomy_slices(labels_zyx, lung_slices, airway_zyx)
    if len({z for _, z in picks}) < N_EVEN_SLICES:  # no lungs (not a thorax), or too little to tell the levels apart
        nz = labels_zyx.shape[0]
        even = np.array([round((k + 1) * (nz - 1) / (N_EVEN_SLICES + 1)) for k in range(N_EVEN_SLICES)])
        order = _superior_order(even, superior_at_high_z)
        picks += [(f"{k + 1}/{N_EVEN_SLICES} of the scan", int(z)) for k, z in enumerate(order)]
    names: dict[int, list[str]] = {}
    for name, z in [*picks, *_tumour_slices(labels_zyx, max_tumour_slices)]:
        names.setdefault(z, []).append(name)
    return [(" / ".join(v), z) for z, v in names.items()]


def _body_box(ct_hu_zyx: np.ndarray, slices: Sequence[int], spacing_xyz_mm: Sequence[float]) -> tuple[slice, slice]:
    """(rows, columns) of the body on the chosen slices, with a margin; the whole slice when none is found."""
    body = (ct_hu_zyx[list(slices)] > BODY_HU).any(axis=0)
    if not body.any():
        return slice(None), slice(None)
    margin = [int(np.ceil(CROP_MARGIN_MM / float(spacing_xyz_mm[k]))) for k in (1, 0)]
    box = []
    for axis, pad in zip((1, 0), margin):
        hits = np.nonzero(body.any(axis=axis))[0]
        box.append(slice(max(int(hits[0]) - pad, 0), int(hits[-1]) + pad + 1))
    return box[0], box[1]


def _label_colours() -> tuple[list[str], list[str]]:
    """The evaluation figures' label colours and names (imported here: that module imports torch,
    which the preprocess workers, importing the pipeline and so this module, must not)."""
    from colearn_pipeline.evaluation.figures import LABEL_COLOURS, LABEL_NAMES

    return LABEL_COLOURS, LABEL_NAMES


def _outline(ax, labels_yx: np.ndarray, extent: Sequence[float]) -> None:
    """Each class's outline (lungs blue, mediastinum green, tumours red) over the panel."""
    colours, _ = _label_colours()
    for value in (LABELS["lung"], LABELS["mediastinum"], LABELS["tumour"]):
        mask = labels_yx == value
        if mask.any():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colours[value]], linewidths=0.8,
                       extent=extent, origin="upper")


def study_strip(ct_hu_zyx: np.ndarray, suv_zyx: np.ndarray, labels_zyx: np.ndarray, slices: Sequence[tuple[str, int]],
                spacing_xyz_mm: Sequence[float], params: GalleryParams, title: str = "") -> Figure:
    """One study's strip: a column per chosen slice, CT (top row) and SUV (bottom row), label outlines on both.

    Parameters
    ----------
    ct_hu_zyx, suv_zyx, labels_zyx : ndarray, shape (z, y, x)
        CT in HU, SUV and labels, all on the CT grid.
    slices : sequence of (str, int)
        From :func:`choose_slices`.
    spacing_xyz_mm : sequence of 3 float
        CT spacing (x, y, z), for the panels' aspect ratio.
    params : GalleryParams
    title : str
        Shown above the strip (the pseudonym; never a patient identifier).

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows_yx, cols_yx = _body_box(ct_hu_zyx, [z for _, z in slices], spacing_xyz_mm)
    ct_hu_zyx, suv_zyx, labels_zyx = (a[:, rows_yx, cols_yx] for a in (ct_hu_zyx, suv_zyx, labels_zyx))
    ny, nx = ct_hu_zyx.shape[1:]
    extent = (0.0, nx * float(spacing_xyz_mm[0]), ny * float(spacing_xyz_mm[1]), 0.0)
    cols = max(len(slices), 1)
    height = params.panel_inches * extent[2] / extent[1]
    fig = Figure(figsize=(params.panel_inches * cols, 2 * height + 0.9), dpi=params.dpi, layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    for c, (name, z) in enumerate(slices):
        rows = ((ct_hu_zyx[z], "gray", params.ct_window_hu), (suv_zyx[z], "gray_r", (0.0, params.suv_max)))
        for r, (image, cmap, (low, high)) in enumerate(rows):
            ax = axes[r, c]
            ax.imshow(image, cmap=cmap, vmin=low, vmax=high, extent=extent, interpolation="nearest")
            _outline(ax, labels_zyx[z], extent)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(textwrap.fill(f"{name} (z {z})", TITLE_CHARACTERS), fontsize=8)
    axes[0, 0].set_ylabel(f"CT {params.ct_window_hu[0]:g}..{params.ct_window_hu[1]:g} HU", fontsize=7)
    axes[1, 0].set_ylabel(f"SUV 0..{params.suv_max:g}", fontsize=7)
    colours, names = _label_colours()
    fig.legend(handles=[Patch(color=colours[v], label=names[v]) for v in (1, 2, 3)],
               loc="outside lower center", ncol=3, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def review_order(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Manifest rows: "needs review" first, then other set-aside studies, then the rest; by pseudonym within."""

    def rank(row: Mapping[str, Any]) -> int:
        if str(row.get("reason") or "").startswith(NEEDS_REVIEW):
            return 0
        return 1 if row.get("status") in ("quarantined", "failed") else 2

    return sorted(rows, key=lambda row: (rank(row), str(row["pseudonym"])))


def _figure_text(value: Any) -> str:
    if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_figure_text(v) for v in value) or "-"
    return str(value)


def _css_class(row: Mapping[str, Any]) -> str:
    """``review`` (needs review), ``aside`` (other set-aside studies) or ``ok``."""
    if str(row.get("reason") or "").startswith(NEEDS_REVIEW):
        return "review"
    return "aside" if row.get("status") in ("quarantined", "failed") else "ok"


def _study_section(row: Mapping[str, Any], picture: str | None) -> str:
    """One study's section: status, reason, the strip (or why there is none) and the quality figures."""
    name = html.escape(str(row["pseudonym"]))
    status = html.escape(str(row.get("status") or ""))
    reason = str(row.get("reason") or "")
    parts = [f'<section id="{name}" class="{_css_class(row)}">', f"<h2>{name} <small>{status}</small></h2>"]
    if reason:
        where = " / ".join(html.escape(str(row[k])) for k in ("stage", "file") if row.get(k))
        parts.append(f'<p class="reason">{html.escape(reason)}{f" ({where})" if where else ""}</p>')
    if picture:
        src = html.escape(picture)
        parts.append(f'<a href="{src}"><img src="{src}" alt="axial slices of {name}"></a>')
    else:
        parts.append('<p class="nopic">no picture: the CT or the SUV on the CT grid was not written</p>')
    cells = "".join(f"<th>{html.escape(k)}</th>" for k in QUALITY_FIGURES)
    values = "".join(f"<td>{html.escape(_figure_text(row.get(k)))}</td>" for k in QUALITY_FIGURES)
    parts.append(f"<table><tr>{cells}</tr><tr>{values}</tr></table>")
    if row.get("figures_from"):
        parts.append(f'<p class="note">lung and mediastinum figures from {html.escape(str(row["figures_from"]))}</p>')
    parts.append("</section>")
    return "\n".join(parts)


_STYLE = """body{font-family:sans-serif;margin:1em 2em;max-width:1400px}
section{border-top:1px solid #ccc;padding:.5em 0}section.review h2{color:#b00}section.aside h2{color:#a60}
p.reason{font-weight:bold}img{max-width:100%}table{border-collapse:collapse;font-size:small}
td,th{border:1px solid #ccc;padding:2px 6px}li.review{color:#b00}li.aside{color:#a60}"""


def gallery_html(rows: Sequence[Mapping[str, Any]], pictures: Mapping[str, str],
                 title: str = "Preprocess review") -> str:
    """The gallery page: a contents list, then one section per study in :func:`review_order`.

    Parameters
    ----------
    rows : sequence of mapping
        Manifest study rows (``pseudonym``, ``status``, ``reason``, ``stage``, ``file`` and the
        :data:`QUALITY_FIGURES`).
    pictures : mapping
        Pseudonym -> the strip's file name, relative to the page (a study without one has none).
    title : str

    Returns
    -------
    str
        A self-contained HTML page (no script, no server); pictures are linked relatively.
    """
    ordered = review_order(rows)
    n_review = sum(str(r.get("reason") or "").startswith(NEEDS_REVIEW) for r in ordered)
    n_aside = sum(r.get("status") in ("quarantined", "failed") for r in ordered) - n_review
    items = []
    for row in ordered:
        name = html.escape(str(row["pseudonym"]))
        reason = str(row.get("reason") or "")
        status = html.escape(str(row.get("status") or ""))
        items.append(f'<li class="{_css_class(row)}"><a href="#{name}">{name}</a> {status}'
                     f'{": " + html.escape(reason) if reason else ""}</li>')
    sections = [_study_section(row, pictures.get(str(row["pseudonym"]))) for row in ordered]
    colours, names = _label_colours()
    legend = " ".join(f'<span style="color:{colours[v]}">&#9632; {names[v]}</span>' for v in (1, 2, 3))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
        (f"<p>{len(ordered)} studies: {n_review} need review, {n_aside} other set aside, "
         f"{len(ordered) - n_review - n_aside} ok. Studies that need review come first. Outlines: {legend}. "
         "Top row CT, bottom row SUV on the CT grid.</p>"),
        f"<ol>{''.join(items)}</ol>", *sections, "</body></html>",
    ])
