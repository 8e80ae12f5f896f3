"""Diseased lungs (issue 23): a consolidated lobe beside the mediastinum and pleural effusion.

Painted into the tissue volume after the anatomy and before the lesions (lesions grow in aerated
lung only). Which study has which disease is chosen by study index (:func:`disease_kinds`), like
the archive and field-of-view options; every draw comes from the study's own ``disease`` stream, so
the other streams (patient, anatomy, noise) of a diseased study stay those of the healthy one.
A large primary is placed by :func:`colearn_pipeline.phantom.lesions.place_lesions`.

Truth, as radiotherapy contouring atlases draw it (Kong et al., IJROBP 2011, the RTOG lung atlas:
"all inflated and collapsed ... lung"): consolidated lung is lung (tissue ``ATELECTASIS``, label 1);
pleural effusion is fluid in the pleural space, outside the lung, neither lung nor mediastinum
(tissue ``EFFUSION``, label 0).
"""

from __future__ import annotations

import numpy as np

from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.anatomy import Anatomy
from colearn_pipeline.phantom.geometry import Grid, ellipsoid

LARGE_PRIMARY, CONSOLIDATION, EFFUSION = "large_primary", "consolidation", "effusion"
#: Aerated lung that disease replaces.
AERATED = (C.LUNG, C.LUNG_VESSEL)
#: Consolidation centre relative to the hilum: lateral (x, away from the midline), posterior (y), inferior (z), mm.
CONSOLIDATION_OFFSET_MM = ((20.0, 35.0), (5.0, 25.0), (25.0, 50.0))
#: Its cranio-caudal semi-axis, as a multiple of the in-plane ones (a lobe is taller than wide).
CONSOLIDATION_HEIGHT_FACTOR = 1.3
#: Probability that an effusion is on both sides (else one, chosen at random).
BILATERAL_EFFUSION_PROBABILITY = 0.35
#: The effusion lies along the posterior chest wall: pixels whose direction from the body centre
#: has a sine above this (0: the posterior half; negative reaches round to the lateral wall).
EFFUSION_MIN_POSTERIOR_SINE = -0.15


def disease_kinds(cfg: C.PhantomConfig, index: int) -> tuple[str, ...]:
    """The diseases of study ``index``: each of large primary, consolidation and effusion whose
    ``*_every`` option is n > 0 with ``index % n == n - 1`` (a study may have several)."""
    out = []
    for every, kind in ((cfg.large_primary_every, LARGE_PRIMARY), (cfg.consolidation_every, CONSOLIDATION),
                        (cfg.effusion_every, EFFUSION)):
        if every and index % every == every - 1:
            out.append(kind)
    return tuple(out)


def paint_consolidation(anat: Anatomy, grid: Grid, tissue: np.ndarray, rng: np.random.Generator,
                        cfg: C.PhantomConfig) -> dict:
    """An airless (consolidated or collapsed) region of one lower lung against the mediastinum.

    An ellipsoid below and lateral of a hilum; its aerated lung becomes ``ATELECTASIS`` (soft-tissue
    CT, mild uptake). Returns ``{"side", "voxels"}``.
    """
    side = "right" if rng.random() < 0.5 else "left"
    sign = -1.0 if side == "right" else 1.0     # LPS: +x is the patient's left
    lateral, posterior, inferior = (float(rng.uniform(*r)) for r in CONSOLIDATION_OFFSET_MM)
    centre = anat.hilum[side] + np.array([sign * lateral, posterior, -inferior])
    a, b = (float(rng.uniform(*cfg.consolidation_semi_mm)) for _ in range(2))
    shape = ellipsoid(grid, centre, np.array([a, b, CONSOLIDATION_HEIGHT_FACTOR * max(a, b)]))
    if shape is None:
        return {"side": side, "voxels": 0}
    sl, mask = shape
    sub = tissue[sl]
    mask = mask & np.isin(sub, AERATED)
    sub[mask] = C.ATELECTASIS
    return {"side": side, "voxels": int(mask.sum()), "centre_mm": [round(float(v), 2) for v in centre]}


def paint_effusion(anat: Anatomy, grid: Grid, tissue: np.ndarray, rng: np.random.Generator,
                   cfg: C.PhantomConfig) -> dict:
    """Pleural fluid along the posterior chest wall at the lung bases (the patient lies supine).

    On one or both sides, the aerated lung within ``depth`` of the inner ribcage, in the posterior
    half, from the lowest slice up to ``height`` above that side's dome, thinning linearly upwards.
    Returns ``{"sides", "voxels"}``.
    """
    if rng.random() < BILATERAL_EFFUSION_PROBABILITY:
        sides = ("right", "left")
    else:
        sides = ("right",) if rng.random() < 0.5 else ("left",)
    xs, ys = grid.axis_mm("x"), grid.axis_mm("y")
    X, Y = np.meshgrid(xs, ys)
    r = np.hypot(X - anat.cx, Y - anat.cy)
    phi = np.arctan2(Y - anat.cy, X - anat.cx)
    posterior = np.sin(phi) > EFFUSION_MIN_POSTERIOR_SINE
    total = 0
    for side in sides:
        depth = float(rng.uniform(*cfg.effusion_depth_mm))
        height = float(rng.uniform(*cfg.effusion_height_mm))
        on_side = (X < anat.cx) if side == "right" else (X >= anat.cx)
        z_top = anat.dome_top[side] + height
        for k, z in enumerate(grid.axis_mm("z")):
            if z > z_top:
                continue
            d_z = depth * min(1.0, (z_top - z) / height)
            near_wall = anat.cavity_radius(phi, z) - r < d_z
            m = near_wall & posterior & on_side & np.isin(tissue[k], AERATED)
            tissue[k][m] = C.EFFUSION
            total += int(m.sum())
    return {"sides": list(sides), "voxels": total}
