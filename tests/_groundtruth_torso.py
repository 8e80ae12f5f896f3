"""A small synthetic thorax for the ground-truth tests (arrays (z, y, x), spacing (x, y, z))."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SPACING_XYZ_MM = (2.5, 2.5, 4.0)
SHAPE_ZYX = (36, 112, 128)
AIR_HU, FAT_HU, SOFT_HU, LUNG_HU, BONE_HU, TABLE_HU = -1000.0, -100.0, 40.0, -850.0, 700.0, 300.0


def _ellipsoid(shape, centre_zyx, semi_mm, spacing_zyx):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((((g - c) * s) / a) ** 2 for g, c, a, s in zip(grids, centre_zyx, semi_mm, spacing_zyx)) <= 1.0


def make_torso(seed: int = 0, noise_hu: float = 15.0, tumour_radius_mm: float = 12.0):
    """Return ``ct_hu, suv, truth`` with ``truth`` a dict of boolean masks and the tumour seed.

    Superior is at high z (the trachea enters from the last slices).
    """
    rng = np.random.default_rng(seed)
    sp = np.array(SPACING_XYZ_MM)[::-1]
    nz, ny, nx = SHAPE_ZYX
    ct = np.full(SHAPE_ZYX, AIR_HU, dtype=np.float32)
    # Body: elliptic cylinder, fat shell over muscle.
    body = np.broadcast_to(_ellipsoid((1, ny, nx), (0, 52, 64), (1e9, 105, 140), sp), SHAPE_ZYX)
    inner = np.broadcast_to(_ellipsoid((1, ny, nx), (0, 52, 64), (1e9, 92, 127), sp), SHAPE_ZYX)
    ct[body] = FAT_HU
    ct[inner] = SOFT_HU
    # Scanner table under the body (posterior = high y) with a hollow core of air.
    table = _table_mask(SHAPE_ZYX)
    ct[table] = TABLE_HU
    ct[:, 98:102, 12:116] = AIR_HU
    # Spine (vertebral body + canal) and sternum.
    spine = np.broadcast_to(_ellipsoid((1, ny, nx), (0, 80, 64), (1e9, 18, 18), sp), SHAPE_ZYX)
    canal = np.broadcast_to(_ellipsoid((1, ny, nx), (0, 83, 64), (1e9, 6, 6), sp), SHAPE_ZYX)
    ct[spine] = BONE_HU
    ct[canal] = SOFT_HU
    ct[:, 22:25, 58:71] = BONE_HU
    # Lungs: z 4..31, with vessels, leaving a mediastinum between them.
    lungs = _ellipsoid(SHAPE_ZYX, (18, 52, 38), (56, 62, 48), sp) | _ellipsoid(SHAPE_ZYX, (18, 52, 90), (56, 62, 48), sp)
    ct[lungs] = LUNG_HU
    for cy, cx in [(45, 34), (60, 42), (50, 95), (62, 86)]:
        vessel = np.broadcast_to(_ellipsoid((1, ny, nx), (0, cy, cx), (1e9, 3.5, 3.5), sp), SHAPE_ZYX) & lungs
        ct[vessel] = SOFT_HU
    # Mediastinum: fat between the lungs, in front of the spine, wrapping the heart.
    from skimage.morphology import convex_hull_image

    between = np.zeros(SHAPE_ZYX, dtype=bool)
    for z in range(nz):
        if lungs[z].any():
            between[z] = convex_hull_image(lungs[z])
    mediastinum = between & ~lungs & inner & ~spine & (np.arange(ny)[None, :, None] < 78)
    ct[mediastinum] = FAT_HU
    pad = ndi.binary_erosion(mediastinum, structure=np.ones((1, 3, 3), bool), iterations=2)
    heart = _ellipsoid(SHAPE_ZYX, (12, 55, 64), (40, 35, 30), sp) & pad
    ct[heart] = SOFT_HU
    # Trachea from the top down to z=22, then two main bronchi running into the lungs.
    airway = np.zeros(SHAPE_ZYX, dtype=bool)
    yy, xx = np.ogrid[:ny, :nx]
    for z in range(22, nz):
        airway[z] = ((yy - 45) * sp[1]) ** 2 + ((xx - 64) * sp[2]) ** 2 <= 9.0**2
    for z in range(15, 23):
        t = (23 - z) / 8.0
        for side in (-1, 1):
            cx = 64 + side * 20 * t
            airway[z] |= ((yy - 47) * sp[1]) ** 2 + ((xx - cx) * sp[2]) ** 2 <= 6.0**2
    ct[ndi.binary_dilation(airway, structure=np.ones((1, 3, 3), bool)) & ~lungs] = SOFT_HU + 40.0  # airway wall
    ct[airway] = AIR_HU
    ct += rng.normal(0.0, noise_hu, size=SHAPE_ZYX).astype(np.float32)
    # Lung truth: lung parenchyma with vessels, no airway.
    truth_lungs = lungs & ~airway
    truth_med = mediastinum | (airway & ~lungs)
    # Tumour in the right lung, touching nothing.
    tumour_centre = (20, 40, 34)
    tumour = _ellipsoid(SHAPE_ZYX, tumour_centre, (tumour_radius_mm,) * 3, sp)
    ct[tumour] = SOFT_HU + rng.normal(0.0, noise_hu, size=int(tumour.sum()))
    truth_lungs &= ~tumour
    # SUV: background 1 in body, heart 3, tumour 8; blurred by a 6 mm FWHM PSF, light noise.
    suv = np.where(body, 1.0, 0.0).astype(np.float32)
    suv[lungs] = 0.4
    suv[heart] = 3.0
    suv[tumour] = 8.0
    sigma_mm = 6.0 / 2.3548
    suv = ndi.gaussian_filter(suv, sigma_mm / sp)
    suv = np.maximum(suv + rng.normal(0.0, 0.05, size=SHAPE_ZYX).astype(np.float32), 0.0)
    seed = (tumour_centre[0] + 1, tumour_centre[1] + 2, tumour_centre[2] - 2)  # approximate report position
    truth = {"lungs": truth_lungs, "mediastinum": truth_med & ~truth_lungs, "tumour": tumour,
             "airway": airway, "table": _table_mask(SHAPE_ZYX),
             "spine": spine, "seed_zyx": seed}
    return ct, suv, truth


def _table_mask(shape):
    m = np.zeros(shape, dtype=bool)
    m[:, 96:104, 8:120] = True
    return m
