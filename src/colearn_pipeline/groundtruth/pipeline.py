"""All of section III-A in one call: CT + SUV + report seeds -> label volume."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np

from colearn_pipeline.groundtruth.labels import LABELS, compose_labels, select_slices
from colearn_pipeline.groundtruth.lungs import segment_lungs
from colearn_pipeline.groundtruth.mediastinum import segment_mediastinum
from colearn_pipeline.groundtruth.quality import quality_figures, review_reasons, thorax_check
from colearn_pipeline.groundtruth.thorax import lungs_in_thorax, restrict_to_slab, seeds_to_follow
from colearn_pipeline.groundtruth.tumours import segment_tumours


def derive_labels(
    ct_hu,
    suv,
    seeds_zyx,
    spacing_xyz_mm,
    *,
    lungs: Mapping | None = None,
    mediastinum: Mapping | None = None,
    tumours: Mapping | None = None,
    quality: Mapping | None = None,
    thorax: Mapping | None = None,
    body_part_examined: str | None = None,
    extent: Mapping | None = None,
    sizes_mm=None,
) -> tuple[np.ndarray, dict]:
    """Derive the ground-truth labels of one study.

    Parameters
    ----------
    ct_hu : ndarray, shape (z, y, x)
        CT in HU.
    suv : ndarray, shape (z, y, x)
        SUV resampled onto the CT grid.
    seeds_zyx : sequence of (z, y, x)
        Report finding positions as CT voxel indices.
    spacing_xyz_mm : sequence of 3 float
        CT spacing, SimpleITK order (x, y, z), mm.
    lungs, mediastinum, tumours : mapping, optional
        Keyword arguments of :func:`segment_lungs`, :func:`segment_mediastinum` and
        :func:`segment_tumours` (the ``groundtruth`` block of parameters_preprocess.yml, with a
        study's overrides merged in).
    extent : mapping, optional
        Keyword arguments of :func:`~colearn_pipeline.groundtruth.thorax.thorax_extent`
        (``preprocess.thorax_extent``): the labels are derived in the thorax slab only (a
        whole-body scan), and findings outside it are not followed.
    sizes_mm : sequence of (float or None), optional
        Per seed, the longest diameter (mm) the report states (the tumour's size cap follows it).

    Returns
    -------
    labels : ndarray of uint8, shape (z, y, x)
    info : dict
        ``lungs`` (thresholds), ``mediastinum`` (seeds), ``tumours`` (per followed finding),
        ``voxels`` per class name; with ``extent``: ``thorax_extent`` (first, last slice, or None)
        and ``findings_not_followed`` (``{"finding": index, "reason": "seed_outside_thorax"}``);
        with ``quality``: ``quality`` (:func:`quality_figures`) and ``review_reasons`` (a list, empty when plausible); with ``thorax``: ``not_thorax`` (a
        reason or None).
    """
    slab, not_followed = None, []
    if extent is None:
        lung_mask, lung_info = segment_lungs(ct_hu, spacing_xyz_mm, return_info=True, **dict(lungs or {}))
    else:
        lung_mask, lung_info, slab = lungs_in_thorax(ct_hu, spacing_xyz_mm, extent=extent, **dict(lungs or {}))
        seeds_zyx, not_followed = seeds_to_follow(seeds_zyx, slab)
        if sizes_mm is not None:
            left_out = {n["finding"] for n in not_followed}
            sizes_mm = [s for i, s in enumerate(sizes_mm) if i not in left_out]
    airway = lung_info.pop("airway_mask")
    med_params = dict(mediastinum or {})
    if lungs and "superior_at_high_z" in lungs:
        med_params.setdefault("superior_at_high_z", lungs["superior_at_high_z"])
    med_mask, med_info = segment_mediastinum(ct_hu, lung_mask, spacing_xyz_mm, airway_mask=airway, return_info=True, **med_params)
    tum_mask, tum_info = segment_tumours(suv, seeds_zyx, spacing_xyz_mm, sizes_mm=sizes_mm, **dict(tumours or {}))
    if extent is not None:
        med_mask, tum_mask = restrict_to_slab(med_mask, slab), restrict_to_slab(tum_mask, slab)
    labels = compose_labels(lung_mask, med_mask, tum_mask)
    counts = np.bincount(labels.ravel(), minlength=len(LABELS))
    info = {
        "lungs": lung_info,
        "mediastinum": med_info,
        "tumours": tum_info,
        "voxels": {name: int(counts[value]) for name, value in LABELS.items()},
    }
    if extent is not None:
        info["thorax_extent"] = slab
        info["findings_not_followed"] = not_followed
    if thorax is not None:
        info["not_thorax"] = thorax_check(lung_mask, med_mask, spacing_xyz_mm, body_part_examined=body_part_examined, **dict(thorax))
    if quality is not None:
        ranges = dict(quality)
        figures = quality_figures(lung_mask, med_mask, spacing_xyz_mm, tum_info, hull_margin_mm=float(ranges.pop("hull_margin_mm")))
        info["quality"] = figures
        info["review_reasons"] = review_reasons(figures, ranges)
    return labels, info


_NOT_PARAMETERS = {"return_info", "seeds_zyx", "allowed_mask", "airway_mask", "superior_at_high_z", "sizes_mm"}


def default_parameters() -> dict:
    """The tunable keyword arguments and their defaults, grouped as :func:`derive_labels` takes them.

    Returns
    -------
    dict
        ``{"lungs": {...}, "mediastinum": {...}, "tumours": {...}, "select_slices": {...}}``;
        ``select_slices`` holds ``classes`` (label names) and ``min_voxels``. This is what
        ``conf/base/parameters_preprocess.yml`` mirrors.
    """

    def kwargs_of(func):
        return {
            name: p.default
            for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty and name not in _NOT_PARAMETERS
        }

    select = kwargs_of(select_slices)
    inverse = {v: k for k, v in LABELS.items()}
    select["classes"] = [inverse[c] for c in select["classes"]]
    return {
        "lungs": kwargs_of(segment_lungs),
        "mediastinum": kwargs_of(segment_mediastinum),
        "tumours": kwargs_of(segment_tumours),
        "select_slices": select,
    }
