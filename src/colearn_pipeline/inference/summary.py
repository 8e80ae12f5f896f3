"""What a reader wants next: volumes, tumour components with their clinical PET figures and position.

The figures (MTV, SUVmax, SUVpeak, SUVmean, TLG, mean uncertainty) come from
:func:`colearn_pipeline.evaluation.quantification.quantify_tumours`, the one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from colearn_pipeline.evaluation.quantification import quantify_tumours
from colearn_pipeline.groundtruth import LABELS

#: CSV columns of :func:`summary_rows`.
CSV_COLUMNS = ["study", "structure", "component", "voxels", "volume_ml", "suv_max", "suv_peak", "suv_mean", "tlg_g",
               "uncertainty_mean", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
#: Decimals of the figures in the summary.
DECIMALS = 3
#: Per-component figures copied from the quantification (rounded).
FIGURES = ("volume_ml", "suv_max", "suv_peak", "suv_mean", "tlg_g", "uncertainty_mean")


def index_to_lps_mm(index_zyx: np.ndarray, spacing_xyz_mm, origin_xyz_mm, direction) -> np.ndarray:
    """Continuous ``(n, 3)`` voxel indices ``(z, y, x)`` -> patient coordinates ``(n, 3)`` LPS mm."""
    ijk = np.asarray(index_zyx, dtype=np.float64)[:, ::-1] * np.asarray(spacing_xyz_mm, dtype=np.float64)
    return np.asarray(origin_xyz_mm, dtype=np.float64) + ijk @ np.asarray(direction, dtype=np.float64).reshape(3, 3).T


def _r(value):
    return None if value is None else round(float(value), DECIMALS)


def summarise_labels(
    labels: np.ndarray,
    suv: np.ndarray,
    spacing_xyz_mm: Sequence[float],
    origin_xyz_mm: Sequence[float],
    direction: Sequence[float],
    *,
    uncertainty: np.ndarray | None = None,
) -> dict[str, Any]:
    """Volumes of lungs and mediastinum, and each connected tumour component's size, PET figures and centroid.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(z, y, x)`` values of ``groundtruth.LABELS``.
    suv : numpy.ndarray
        ``(z, y, x)`` SUV on the same grid.
    spacing_xyz_mm, origin_xyz_mm, direction
        The grid's geometry (SimpleITK order).
    uncertainty : numpy.ndarray, optional
        ``(z, y, x)`` per-voxel uncertainty on the same grid; its mean per component is reported.

    Returns
    -------
    dict
        ``lungs_ml``, ``mediastinum_ml``, ``tumour_ml`` (all components), ``n_tumours``,
        ``tumours``: one dict per 26-connected component, largest first, with ``component``
        (1-based), ``voxels``, ``volume_ml`` (MTV), ``suv_max``, ``suv_peak`` (PERCIST),
        ``suv_mean``, ``tlg_g``, ``uncertainty_mean`` (None without a map),
        ``centroid_lps_mm`` (``[x, y, z]`` patient LPS mm, the frame of ImagePositionPatient) and
        ``z_range`` (its first and last slice);
        and ``tumour_totals``: ``n_components``, ``volume_ml``, ``tlg_g``, ``suv_max``,
        ``suv_peak``, ``suv_mean``, ``uncertainty_mean`` over all components.
    """
    if labels.shape != suv.shape:
        raise ValueError(f"labels {labels.shape} and SUV {suv.shape} are not on one grid")
    voxel_ml = float(np.prod(np.asarray(spacing_xyz_mm, dtype=np.float64))) / 1000.0
    figures = quantify_tumours(labels, suv, spacing_xyz_mm, tumour_label=LABELS["tumour"], uncertainty=uncertainty)
    tumours = []
    for c in figures["components"]:
        centroid = index_to_lps_mm(np.asarray([c["centroid_index_zyx"]]), spacing_xyz_mm, origin_xyz_mm, direction)[0]
        tumours.append({"component": c["component"], "voxels": c["voxels"],
                        **{k: _r(c.get(k)) for k in FIGURES},
                        "centroid_lps_mm": [round(float(v), 2) for v in centroid], "z_range": c["z_range"]})
    totals = figures["totals"]
    return {
        "lungs_ml": round(float((labels == LABELS["lung"]).sum()) * voxel_ml, DECIMALS),
        "mediastinum_ml": round(float((labels == LABELS["mediastinum"]).sum()) * voxel_ml, DECIMALS),
        "tumour_ml": round(sum(t["voxels"] for t in tumours) * voxel_ml, DECIMALS),
        "n_tumours": len(tumours),
        "tumours": tumours,
        "tumour_totals": {"n_components": totals["n_components"], **{k: _r(totals.get(k)) for k in FIGURES}},
    }


def summary_rows(study: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary as CSV rows (:data:`CSV_COLUMNS`): lungs, mediastinum, one row per tumour, the tumour totals."""
    rows = [
        {"study": study, "structure": "lungs", "volume_ml": summary["lungs_ml"]},
        {"study": study, "structure": "mediastinum", "volume_ml": summary["mediastinum_ml"]},
    ]
    for t in summary["tumours"]:
        x, y, z = t["centroid_lps_mm"]
        rows.append({**t, "study": study, "structure": "tumour", "centroid_x_mm": x, "centroid_y_mm": y,
                     "centroid_z_mm": z})
    totals = summary.get("tumour_totals")
    if totals is not None:
        rows.append({**{k: totals.get(k) for k in FIGURES}, "study": study, "structure": "tumour_total",
                     "voxels": sum(t["voxels"] for t in summary["tumours"])})
    return [{c: r.get(c) for c in CSV_COLUMNS} for r in rows]


def summary_table(study: str, summary: dict[str, Any]):
    """:func:`summary_rows` as a pandas DataFrame (integer columns stay integers beside empty cells)."""
    import pandas as pd

    table = pd.DataFrame(summary_rows(study, summary), columns=CSV_COLUMNS)
    return table.astype({"component": "Int64", "voxels": "Int64"})
