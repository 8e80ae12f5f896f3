"""What a reader wants next: volumes, tumour components with SUV and position."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from colearn_pipeline.groundtruth import LABELS

#: CSV columns of :func:`summary_rows`.
CSV_COLUMNS = ["study", "structure", "component", "voxels", "volume_ml", "suv_max", "suv_mean",
               "centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]


def index_to_lps_mm(index_zyx: np.ndarray, spacing_xyz_mm, origin_xyz_mm, direction) -> np.ndarray:
    """Continuous ``(n, 3)`` voxel indices ``(z, y, x)`` -> patient coordinates ``(n, 3)`` LPS mm."""
    ijk = np.asarray(index_zyx, dtype=np.float64)[:, ::-1] * np.asarray(spacing_xyz_mm, dtype=np.float64)
    return np.asarray(origin_xyz_mm, dtype=np.float64) + ijk @ np.asarray(direction, dtype=np.float64).reshape(3, 3).T


def summarise_labels(
    labels: np.ndarray,
    suv: np.ndarray,
    spacing_xyz_mm: Sequence[float],
    origin_xyz_mm: Sequence[float],
    direction: Sequence[float],
) -> dict[str, Any]:
    """Volumes of lungs and mediastinum, and each connected tumour component's size, SUV and centroid.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(z, y, x)`` values of ``groundtruth.LABELS``.
    suv : numpy.ndarray
        ``(z, y, x)`` SUV on the same grid.
    spacing_xyz_mm, origin_xyz_mm, direction
        The grid's geometry (SimpleITK order).

    Returns
    -------
    dict
        ``lungs_ml``, ``mediastinum_ml``, ``tumour_ml`` (all components), ``n_tumours`` and
        ``tumours``: one dict per 26-connected component, largest first, with ``component``
        (1-based), ``voxels``, ``volume_ml``, ``suv_max``, ``suv_mean`` and ``centroid_lps_mm``
        (``[x, y, z]`` patient LPS mm, the frame of ImagePositionPatient).
    """
    if labels.shape != suv.shape:
        raise ValueError(f"labels {labels.shape} and SUV {suv.shape} are not on one grid")
    voxel_ml = float(np.prod(np.asarray(spacing_xyz_mm, dtype=np.float64))) / 1000.0
    components, n = ndi.label(labels == LABELS["tumour"], structure=np.ones((3, 3, 3), bool))
    tumours = []
    if n:
        ids = np.arange(1, n + 1)
        sizes = ndi.sum_labels(np.ones_like(components, np.int64), components, ids).astype(np.int64)
        suv_max = ndi.maximum(suv, components, ids)
        suv_mean = ndi.mean(suv, components, ids)
        centroids = index_to_lps_mm(np.asarray(ndi.center_of_mass(np.ones(labels.shape, np.uint8), components, ids)),
                                    spacing_xyz_mm, origin_xyz_mm, direction)
        for rank, i in enumerate(np.argsort(-sizes, kind="stable"), start=1):
            tumours.append({
                "component": rank, "voxels": int(sizes[i]), "volume_ml": round(float(sizes[i]) * voxel_ml, 3),
                "suv_max": round(float(suv_max[i]), 3), "suv_mean": round(float(suv_mean[i]), 3),
                "centroid_lps_mm": [round(float(v), 2) for v in centroids[i]],
            })
    return {
        "lungs_ml": round(float((labels == LABELS["lung"]).sum()) * voxel_ml, 3),
        "mediastinum_ml": round(float((labels == LABELS["mediastinum"]).sum()) * voxel_ml, 3),
        "tumour_ml": round(sum(t["voxels"] for t in tumours) * voxel_ml, 3),
        "n_tumours": len(tumours),
        "tumours": tumours,
    }


def summary_rows(study: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary as CSV rows (:data:`CSV_COLUMNS`): lungs, mediastinum, then one row per tumour."""
    empty = {"component": None, "voxels": None, "suv_max": None, "suv_mean": None,
             "centroid_x_mm": None, "centroid_y_mm": None, "centroid_z_mm": None}
    rows = [
        {**empty, "study": study, "structure": "lungs", "volume_ml": summary["lungs_ml"]},
        {**empty, "study": study, "structure": "mediastinum", "volume_ml": summary["mediastinum_ml"]},
    ]
    for t in summary["tumours"]:
        x, y, z = t["centroid_lps_mm"]
        rows.append({"study": study, "structure": "tumour", "component": t["component"], "voxels": t["voxels"],
                     "volume_ml": t["volume_ml"], "suv_max": t["suv_max"], "suv_mean": t["suv_mean"],
                     "centroid_x_mm": x, "centroid_y_mm": y, "centroid_z_mm": z})
    return [{c: r.get(c) for c in CSV_COLUMNS} for r in rows]


def summary_table(study: str, summary: dict[str, Any]):
    """:func:`summary_rows` as a pandas DataFrame (integer columns stay integers beside empty cells)."""
    import pandas as pd

    table = pd.DataFrame(summary_rows(study, summary), columns=CSV_COLUMNS)
    return table.astype({"component": "Int64", "voxels": "Int64"})
