"""Nodes of the phantom pipeline (thin wrappers around :mod:`colearn_pipeline.phantom`)."""

from __future__ import annotations

import os
from typing import Any

from colearn_pipeline.phantom import DEFAULT_N_STUDIES, DEFAULT_SEED, DEFAULT_SIZE, generate_cohort

DEFAULT_OUT_DIR = "data/01_raw"


def generate_phantom_cohort(phantom: dict[str, Any]) -> dict[str, Any]:
    """Write the phantom cohort (or reuse an identical complete one) and return its summary.

    Parameters
    ----------
    phantom : dict
        ``params:phantom``: ``out_dir``, ``n_studies``, ``seed``, ``size``, ``workers`` and
        ``overrides`` (fields of :class:`colearn_pipeline.phantom.PhantomConfig`).

    Returns
    -------
    dict
        The cohort summary (the ``phantom_cohort`` dataset, ``data/01_raw/phantom_cohort.json``).
    """
    p = dict(phantom)
    overrides = p.pop("overrides", None) or {}
    return generate_cohort(
        p.pop("out_dir", DEFAULT_OUT_DIR),
        n_studies=int(p.pop("n_studies", DEFAULT_N_STUDIES)),
        seed=int(p.pop("seed", DEFAULT_SEED)),
        size=str(p.pop("size", DEFAULT_SIZE)),
        workers=int(p.pop("workers", 1)),
        force=bool(p.pop("force", False)),
        progress=bool(p.pop("progress", False)),
        **overrides,
        **p,
    )


def write_phantom_cohort(phantom: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """:func:`generate_phantom_cohort`, returning also the raw folders it wrote.

    Returns
    -------
    summary : dict
        The ``phantom_cohort`` dataset.
    dicom_dir, reports_dir : str
        ``<out_dir>/dicom`` and ``<out_dir>/reports``: saved as ``raw_dicom`` and ``raw_reports``,
        whose datasets check that the catalog reads them from there. Preprocess takes these as
        inputs, so Kedro runs it after the cohort exists.
    """
    summary = generate_phantom_cohort(phantom)
    out_dir = str(phantom.get("out_dir", DEFAULT_OUT_DIR))
    return summary, os.path.join(out_dir, "dicom"), os.path.join(out_dir, "reports")
