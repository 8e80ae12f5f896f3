"""Per-study quality figures of the derived ground truth, their plausibility, and a thorax check.

Pure functions: masks and numbers in, figures and reasons out. The ranges come from conf
(``groundtruth.quality`` in parameters_preprocess.yml); nothing here has a default range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from skimage.measure import points_in_poly

from colearn_pipeline.groundtruth._morphology import spacing_zyx
from colearn_pipeline.groundtruth.mediastinum import grown_hull_polygon


def _ml(mask: np.ndarray, voxel_ml: float) -> float:
    return float(np.count_nonzero(mask)) * voxel_ml


def lung_balance(lung_mask: np.ndarray) -> float:
    """Volume of the smaller lung over the larger (the volume split at the lungs' midline column).

    Returns 0.0 when there is no lung.
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    cols = np.nonzero(lungs.any(axis=(0, 1)))[0]
    if cols.size == 0:
        return 0.0
    per_column = lungs.sum(axis=(0, 1))
    lo, hi = cols[0] + (cols[-1] - cols[0]) // 4, cols[0] + 3 * (cols[-1] - cols[0]) // 4
    split = lo + int(np.argmin(per_column[lo : hi + 1])) if hi > lo else (cols[0] + cols[-1]) // 2
    right, left = float(per_column[:split].sum()), float(per_column[split:].sum())
    return min(right, left) / max(right, left) if max(right, left) > 0 else 0.0


def _row_ends(mask: np.ndarray) -> np.ndarray:
    """The first and last pixel of each row of each slice of ``mask``; a slice with fewer than three
    such pixels is kept whole (so that :func:`lung_hull` still takes its hull)."""
    rows = mask.any(axis=2)
    width = mask.shape[2]
    first = np.argmax(mask, axis=2)
    last = width - 1 - np.argmax(mask[:, :, ::-1], axis=2)
    z, y = np.nonzero(rows)
    ends = np.zeros_like(mask)
    ends[z, y, first[z, y]] = True
    ends[z, y, last[z, y]] = True
    few = np.count_nonzero(ends, axis=(1, 2)) < 3
    ends[few] = mask[few]
    return ends


def _count_outside_lung_hull(med: np.ndarray, lungs: np.ndarray, spacing_xyz_mm, margin_mm: float) -> int:
    """Mediastinum voxels outside :func:`lung_hull` of the lungs, slice by slice where there is mediastinum.

    The hull of the row ends of a slice's lungs is the hull of all of them, so the hull is taken
    of the row ends (far fewer points); the lungs themselves are in it, as :func:`lung_hull` keeps
    them. Only the mediastinum pixels outside the lungs are tested against the hull's polygon (the
    test :func:`lung_hull` makes on every pixel of the polygon's box).
    """
    radius_px = margin_mm / spacing_zyx(spacing_xyz_mm)[1:]
    outside = 0
    for z in np.flatnonzero(med.any(axis=(1, 2))):
        rows, cols = np.nonzero(med[z] & ~lungs[z])
        if rows.size == 0:
            continue
        polygon = grown_hull_polygon(_row_ends(lungs[z : z + 1])[0], radius_px) if lungs[z].any() else None
        if polygon is None:
            outside += int(rows.size)
            continue
        verts, lo, hi = polygon
        in_box = (rows >= lo[0]) & (rows < hi[0]) & (cols >= lo[1]) & (cols < hi[1])
        points = np.stack([rows[in_box] - lo[0], cols[in_box] - lo[1]], axis=1).astype(float)
        inside = int(np.count_nonzero(points_in_poly(points, verts))) if points.size else 0
        outside += int(rows.size) - inside
    return outside


def quality_figures(
    lung_mask: np.ndarray,
    mediastinum_mask: np.ndarray,
    spacing_xyz_mm: Sequence[float],
    tumours: Sequence[Mapping] = (),
    *,
    hull_margin_mm: float,
) -> dict:
    """Quality figures of one study's ground truth.

    Parameters
    ----------
    lung_mask, mediastinum_mask : ndarray of bool, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
    tumours : sequence of dict
        Per-finding info of :func:`segment_tumours` (``voxels``, ``peak_suv``, ``threshold_suv``,
        ``capped``, ``peak_fraction``).
    hull_margin_mm : float
        Growth (mm) of the per-slice convex hull of the lungs for ``mediastinum_outside_hull``.

    Returns
    -------
    dict
        ``lung_ml``, ``mediastinum_ml``, ``mediastinum_outside_hull`` (fraction of mediastinum
        voxels outside the lungs' hull grown by ``hull_margin_mm``), ``lung_balance`` (smaller over
        larger lung), and ``tumours``: per finding ``volume_ml``, ``peak_suv``, ``threshold_suv``,
        ``peak_to_threshold`` (peak over threshold), ``capped`` and ``max_ml`` (the volume bound of
        a finding with a stated size, else None; ``review_reasons`` allows the larger of it and
        ``max_tumour_ml``).
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    med = np.asarray(mediastinum_mask, dtype=bool)
    voxel_ml = float(np.prod(spacing_zyx(spacing_xyz_mm))) / 1000.0
    n_med = int(np.count_nonzero(med))
    outside = 0.0
    if n_med:
        outside = float(_count_outside_lung_hull(med, lungs, spacing_xyz_mm, hull_margin_mm)) / n_med
    per_finding = []
    for t in tumours:
        peak, thr = float(t.get("peak_suv", 0.0)), float(t.get("threshold_suv", 0.0))
        per_finding.append({
            "volume_ml": float(t.get("voxels", 0)) * voxel_ml,
            "peak_suv": peak,
            "threshold_suv": thr,
            "peak_to_threshold": peak / thr if thr > 0 else 0.0,
            "capped": bool(t.get("capped", False)),
            "max_ml": t.get("max_ml"),
        })
    return {
        "lung_ml": _ml(lungs, voxel_ml),
        "mediastinum_ml": n_med * voxel_ml,
        "mediastinum_outside_hull": outside,
        "lung_balance": lung_balance(lungs),
        "tumours": per_finding,
    }


def _outside(value: float, bounds) -> bool:
    lo, hi = bounds
    return (lo is not None and value < lo) or (hi is not None and value > hi)


def tumour_in_aerated_lung_ml(tumour_mask: np.ndarray, ct_hu: np.ndarray, spacing_xyz_mm, *,
                              aerated_lung_hu: float) -> float:
    """Volume (mL) of tumour voxels whose CT is aerated lung (below ``aerated_lung_hu``).

    A 40 %-of-peak region grown from a finding with little uptake spills into the lung around it;
    a real tumour is soft tissue, with only a partial-volume rim of a few mL at lung HU.
    """
    voxel_ml = float(np.prod(np.asarray(spacing_xyz_mm, dtype=float))) / 1000.0
    spill = np.asarray(tumour_mask, bool) & (np.asarray(ct_hu) < aerated_lung_hu)
    return float(np.count_nonzero(spill)) * voxel_ml


def review_reasons(figures: Mapping, ranges: Mapping) -> list[str]:
    """Reasons why a study's ground truth needs review (empty list: plausible).

    Parameters
    ----------
    figures : mapping
        From :func:`quality_figures`.
    ranges : mapping
        ``lung_ml``, ``mediastinum_ml``: ``[low, high]``; ``max_mediastinum_outside_hull``,
        ``min_lung_balance``, ``max_tumour_ml``: numbers; ``min_peak_to_threshold``: a finding
        whose peak is not this many times its threshold has no uptake above background
        (with the paper's 40 % rule the ratio is 2.5 by construction, so a raised fraction or an
        absolute floor lowers it); ``capped_is_review``: a region that still reaches its size cap;
        ``max_tumour_in_aerated_lung_ml``: tumour volume at aerated-lung HU (figure
        ``tumour_in_aerated_lung_ml``, from :func:`tumour_in_aerated_lung_ml`).
        A key (or a figure) left out is not checked.

    Returns
    -------
    list of str
        One named reason per figure out of range, e.g. ``"mediastinum_ml 3043 outside [500, 2500]"``.
    """
    reasons = []
    for key in ("lung_ml", "mediastinum_ml"):
        value = float(figures[key])
        if value == 0.0:
            reasons.append(f"{key.removesuffix('_ml')} empty")
        elif key in ranges and _outside(value, ranges[key]):
            lo, hi = ranges[key]
            reasons.append(f"{key} {value:.0f} outside [{lo}, {hi}]")
    if "max_mediastinum_outside_hull" in ranges and figures["mediastinum_outside_hull"] > ranges["max_mediastinum_outside_hull"]:
        reasons.append(f"mediastinum_outside_hull {figures['mediastinum_outside_hull']:.3f} > {ranges['max_mediastinum_outside_hull']}")
    if "min_lung_balance" in ranges and figures["lung_balance"] < ranges["min_lung_balance"]:
        reasons.append(f"lung_balance {figures['lung_balance']:.2f} < {ranges['min_lung_balance']}")
    spill, limit = figures.get("tumour_in_aerated_lung_ml"), ranges.get("max_tumour_in_aerated_lung_ml")
    if spill is not None and limit is not None and spill > limit:
        reasons.append(f"tumour spills into aerated lung: {spill:.1f} mL > {limit} mL")
    for i, t in enumerate(figures.get("tumours", [])):
        if t["volume_ml"] == 0.0:
            reasons.append(f"finding {i}: no tumour region")
        # a finding whose report states its size may be as large as a ball of its cap's diameter
        limit = max(ranges.get("max_tumour_ml", np.inf), t.get("max_ml") or 0.0)
        if "max_tumour_ml" in ranges and t["volume_ml"] > limit:
            reasons.append(f"finding {i}: tumour_ml {t['volume_ml']:.1f} > {limit:.1f}")
        if "min_peak_to_threshold" in ranges and t["volume_ml"] > 0 and t["peak_to_threshold"] < ranges["min_peak_to_threshold"]:
            reasons.append(f"finding {i}: peak/threshold {t['peak_to_threshold']:.2f} < {ranges['min_peak_to_threshold']} (no uptake above background)")
        if ranges.get("capped_is_review") and t["capped"]:
            reasons.append(f"finding {i}: tumour region hits its size cap")
    return reasons


def thorax_check(
    lung_mask: np.ndarray,
    mediastinum_mask: np.ndarray,
    spacing_xyz_mm: Sequence[float],
    *,
    body_part_examined: str | None = None,
    min_lung_ml: float,
    min_mediastinum_ml: float,
    min_lung_balance: float,
    thorax_body_parts: Sequence[str],
) -> str | None:
    """Why a study is not a thorax, or None when it is one.

    Parameters
    ----------
    lung_mask, mediastinum_mask : ndarray of bool, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
    body_part_examined : str or None
        The CT's BodyPartExamined (0018,0015); blank or None is not held against the study.
    min_lung_ml : float
        Less lung than this (mL) is no pair of lungs.
    min_mediastinum_ml : float
        Less mediastinum between the lungs than this (mL) is none.
    min_lung_balance : float
        Two lungs: the smaller at least this fraction of the larger.
    thorax_body_parts : sequence of str
        BodyPartExamined values that are compatible with a thorax (upper case), e.g. CHEST,
        THORAX, WHOLEBODY; another non-blank value is a reason.

    Returns
    -------
    str or None
        ``"not a thorax: ..."`` naming the first failed check.
    """
    part = (body_part_examined or "").strip().upper()
    if part and part not in {p.upper() for p in thorax_body_parts}:
        return f"not a thorax: BodyPartExamined {part}"
    voxel_ml = float(np.prod(spacing_zyx(spacing_xyz_mm))) / 1000.0
    lung_ml = _ml(np.asarray(lung_mask, dtype=bool), voxel_ml)
    if lung_ml < min_lung_ml:
        return f"not a thorax: lungs {lung_ml:.0f} mL < {min_lung_ml:g} mL"
    balance = lung_balance(lung_mask)
    if balance < min_lung_balance:
        return f"not a thorax: no pair of lungs (balance {balance:.2f} < {min_lung_balance:g})"
    med_ml = _ml(np.asarray(mediastinum_mask, dtype=bool), voxel_ml)
    if med_ml < min_mediastinum_ml:
        return f"not a thorax: mediastinum {med_ml:.0f} mL < {min_mediastinum_ml:g} mL"
    return None
