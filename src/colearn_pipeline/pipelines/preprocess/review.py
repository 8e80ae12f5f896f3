"""The review gallery node: the stored stage outputs in, one static HTML page and a strip per study out.

Wiring only: slice choice, pictures and page are :mod:`colearn_pipeline.review.gallery`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk
from matplotlib.figure import Figure

from colearn_pipeline.datasets.study_partitions import StudyPartition, StudyPartitions
from colearn_pipeline.groundtruth import compose_labels
from colearn_pipeline.groundtruth.quality import quality_figures
from colearn_pipeline.pipelines.preprocess.params import build
from colearn_pipeline.pipelines.preprocess.study import AIRWAY_BIT, LUNG_BIT
from colearn_pipeline.review.gallery import GalleryParams, choose_slices, gallery_html, review_order, study_strip

#: The pictures' file suffix (the catalog's ``filename_suffix`` of ``preprocess_review_pictures``).
PICTURE_SUFFIX = ".png"


def _array(partition: StudyPartition | None) -> np.ndarray | None:
    return None if partition is None else sitk.GetArrayFromImage(partition())


def _labels(pseudonym: str, parts: Mapping[str, StudyPartitions], shape: tuple[int, ...]) -> tuple[np.ndarray, Any]:
    """The study's labels (the derived or corrected ones; else composed from the stage masks there are) and airway."""
    lungs = _array(parts["lungs"].get(pseudonym))
    airway = None if lungs is None else (lungs & AIRWAY_BIT) > 0
    labels = _array(parts["labels"].get(pseudonym))
    if labels is None:
        masks = [np.zeros(shape, bool) if m is None else m > 0 for m in (
            None if lungs is None else lungs & LUNG_BIT, _array(parts["mediastinum"].get(pseudonym)),
            _array(parts["tumours"].get(pseudonym)))]
        labels = compose_labels(*masks)
    return labels, airway


def study_picture(pseudonym: str, parts: Mapping[str, StudyPartitions], params: GalleryParams) -> Figure:
    """One study's strip from its stored CT, SUV on the CT grid and labels (or stage masks)."""
    ct = parts["series"][pseudonym]()
    ct_hu = sitk.GetArrayFromImage(ct)
    suv = sitk.GetArrayFromImage(parts["suv"][pseudonym]())
    labels, airway = _labels(pseudonym, parts, ct_hu.shape)
    slices = choose_slices(labels, superior_at_high_z=ct.GetDirection()[8] >= 0, airway_zyx=airway,
                           max_tumour_slices=params.max_tumour_slices)
    return study_strip(ct_hu, suv, labels, slices, ct.GetSpacing(), params, title=pseudonym)


def _with_mask_figures(row: Mapping[str, Any], parts: Mapping[str, StudyPartitions],
                       hull_margin_mm: float) -> dict[str, Any]:
    """``row``, with the quality figures of its stored lung and mediastinum masks where the manifest has none.

    A study set aside at the labels stage ("needs review") has no figures in the manifest, yet its
    lungs and mediastinum are stored: the reviewer sees what they measure (the labels stage's function).
    """
    out = dict(row)
    pseudonym = str(row["pseudonym"])
    if row.get("lung_ml") is not None or pseudonym not in parts["lungs"] or pseudonym not in parts["mediastinum"]:
        return out
    image = parts["lungs"][pseudonym]()
    lungs = (sitk.GetArrayFromImage(image) & LUNG_BIT) > 0
    med = _array(parts["mediastinum"][pseudonym]) > 0
    figures = quality_figures(lungs, med, image.GetSpacing(), hull_margin_mm=hull_margin_mm)
    out.update({k: figures[k] for k in ("lung_ml", "mediastinum_ml", "mediastinum_outside_hull", "lung_balance")})
    out["figures_from"] = "the stored lung and mediastinum masks (not in the manifest)"
    return out


def _empty_preview() -> Figure:
    fig = Figure(figsize=(4, 1))
    fig.text(0.5, 0.5, "no study with CT and SUV on the CT grid", ha="center", va="center")
    return fig


def build_review_gallery(series: StudyPartitions, suv: StudyPartitions, lungs: StudyPartitions,
                         mediastinum: StudyPartitions, tumours: StudyPartitions, labels: StudyPartitions,
                         manifest: Mapping[str, Any], review: Mapping[str, Any], quality: Mapping[str, Any],
                         ) -> tuple[dict[str, Callable[[], Figure]], Figure, str]:
    """The review gallery of the cohort in the manifest.

    Returns
    -------
    pictures : dict
        Pseudonym -> a callable drawing its strip (saved lazily, one study in memory at a time),
        for every study whose CT and SUV on the CT grid are stored.
    preview : matplotlib.figure.Figure
        The strip of the first study of the page (the most urgent), for kedro-viz's preview.
    page : str
        ``index.html``, linking each picture as ``<pseudonym>.png`` beside it.
    """
    params = build(GalleryParams, review, "preprocess.review")
    parts = {"series": series, "suv": suv, "lungs": lungs, "mediastinum": mediastinum, "tumours": tumours,
             "labels": labels}
    hull_margin_mm = float(quality["hull_margin_mm"])
    rows = [_with_mask_figures(r, parts, hull_margin_mm) for r in review_order(manifest["studies"])]
    drawable = [str(r["pseudonym"]) for r in rows if r["pseudonym"] in series and r["pseudonym"] in suv]
    pictures = {p: functools.partial(study_picture, p, parts, params) for p in drawable}
    preview = pictures[drawable[0]]() if drawable else _empty_preview()
    return pictures, preview, gallery_html(rows, {p: f"{p}{PICTURE_SUFFIX}" for p in drawable})
