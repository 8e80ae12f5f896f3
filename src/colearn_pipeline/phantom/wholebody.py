"""Whole-body and non-thorax studies: the body above and below the thorax, skull base to mid-thigh.

The thorax keeps its own parametric anatomy (:mod:`colearn_pipeline.phantom.anatomy`, painted on
the thorax slab and the upper abdomen under the domes); this module adds the neck and the base of
the head above it, and the abdomen (liver, kidneys, bowel with gas), the pelvis (bladder, a pelvic
node) and the thighs below it. Coordinates are DICOM patient LPS (mm), z to the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.anatomy import Anatomy, _paint_spine_and_sternum, _slice_frame, rasterise
from colearn_pipeline.phantom.geometry import Grid

# Lengths along z (mm), drawn uniformly per study (adult proportions; skull base to mid-thigh ~ 0.9-1.0 m).
UPPER_ABDOMEN_MM = 110.0            # below the thorax slab, still painted by the thorax anatomy (domes, liver, stomach)
ABDOMEN_MM = (110.0, 150.0)         # then down to the iliac crests
PELVIS_MM = (150.0, 180.0)          # iliac crests to the pubic symphysis
THIGH_MM = (150.0, 200.0)           # pubis to mid-thigh
NECK_MM = (60.0, 90.0)              # lung apices to the skull base
HEAD_MM = (45.0, 75.0)              # skull base to the top of the scan
ABDOMINAL_WALL_MM = (10.0, 16.0)    # muscle of the abdominal wall inside the fat
KIDNEY_SEMI_MM = ((26.0, 32.0), (20.0, 26.0), (48.0, 58.0))
BLADDER_SEMI_MM = ((35.0, 50.0), (28.0, 40.0), (30.0, 45.0))
PELVIC_NODE_DIAMETER_MM = (14.0, 20.0)
BOWEL_GAS = (4, 8)                  # number of gas pockets in the bowel
BOWEL_GAS_RADIUS_MM = (6.0, 14.0)
HEAD_SEMI_MM = ((68.0, 78.0), (85.0, 95.0), (90.0, 100.0))
SKULL_MM = 6.0
NON_THORAX_ABOVE_ILIAC_MM = 40.0    # a pelvis study starts this far above the iliac crests


@dataclass
class Body:
    """The body outside the thorax of one whole-body study: levels (z, mm) and organs."""

    z_bottom: float
    z_pubis: float
    z_iliac: float
    z_thorax_lo: float              # lowest slice painted by the thorax anatomy
    z_thorax_hi: float              # its highest (the thorax slab's top)
    z_skull_base: float
    z_top: float
    wall_mm: float
    kidneys: list[tuple[np.ndarray, np.ndarray]]
    bladder: tuple[np.ndarray, np.ndarray]
    pelvic_node: tuple[np.ndarray, float]
    gas: list[tuple[np.ndarray, float]]
    head: tuple[np.ndarray, np.ndarray]
    z_liver_bottom: float


def _u(rng: np.random.Generator, lo_hi) -> float:
    return float(rng.uniform(*lo_hi))


def body_levels(rng: np.random.Generator, z_bottom: float, thorax_height_mm: float) -> dict[str, float]:
    """Levels (z, mm) of a whole-body study from mid-thigh (``z_bottom``) to the top of the head.

    Returns ``z_pubis``, ``z_iliac``, ``z_thorax_lo``, ``z0`` and ``z1`` (the thorax slab a thorax
    study would cover), ``z_skull_base`` and ``z_top``.
    """
    z_pubis = z_bottom + _u(rng, THIGH_MM)
    z_iliac = z_pubis + _u(rng, PELVIS_MM)
    z_thorax_lo = z_iliac + _u(rng, ABDOMEN_MM)
    z0 = z_thorax_lo + UPPER_ABDOMEN_MM
    z1 = z0 + thorax_height_mm
    z_skull_base = z1 + _u(rng, NECK_MM)
    return dict(z_bottom=z_bottom, z_pubis=z_pubis, z_iliac=z_iliac, z_thorax_lo=z_thorax_lo, z0=z0, z1=z1,
                z_skull_base=z_skull_base, z_top=z_skull_base + _u(rng, HEAD_MM))


def sample_body(rng: np.random.Generator, anat: Anatomy, levels: dict[str, float]) -> Body:
    """Draw the organs outside the thorax, placed from the thorax anatomy's landmarks."""
    cx, cy = anat.cx, anat.cy
    y_ant = cy - anat.body_b_ant + anat.fat_mm
    kidneys = []
    for sign, drop in ((-1.0, _u(rng, (10.0, 20.0))), (1.0, 0.0)):     # the right kidney lies lower
        semi = np.array([_u(rng, r) for r in KIDNEY_SEMI_MM])
        centre = np.array([cx + sign * (1.1 * anat.vb_r + 20.0 + semi[0]), anat.y_vb - 5.0,
                           levels["z_thorax_lo"] - semi[2] - 5.0 - drop])
        kidneys.append((centre, semi))
    b_semi = np.array([_u(rng, r) for r in BLADDER_SEMI_MM])
    wall = _u(rng, ABDOMINAL_WALL_MM)
    b_centre = np.array([cx + _u(rng, (-5.0, 5.0)), y_ant + wall + b_semi[1] + 8.0, levels["z_pubis"] + 0.8 * b_semi[2]])
    side = 1.0 if rng.random() < 0.5 else -1.0
    node_d = _u(rng, PELVIC_NODE_DIAMETER_MM)
    node = np.array([b_centre[0] + side * (b_semi[0] + 0.5 * node_d + 12.0), b_centre[1] + 15.0,
                     b_centre[2] + _u(rng, (15.0, 35.0))])
    gas = []
    for _ in range(int(rng.integers(BOWEL_GAS[0], BOWEL_GAS[1] + 1))):
        z = _u(rng, (levels["z_iliac"] - 40.0, levels["z_thorax_lo"] - 20.0))
        gas.append((np.array([cx + _u(rng, (-70.0, 70.0)), y_ant + wall + _u(rng, (15.0, 50.0)), z]),
                    _u(rng, BOWEL_GAS_RADIUS_MM)))
    h_semi = np.array([_u(rng, r) for r in HEAD_SEMI_MM])
    head = (np.array([cx, cy + 0.1 * anat.body_b_post, levels["z_skull_base"] + 0.45 * h_semi[2]]), h_semi)
    return Body(z_bottom=levels["z_bottom"], z_pubis=levels["z_pubis"], z_iliac=levels["z_iliac"],
                z_thorax_lo=levels["z_thorax_lo"], z_thorax_hi=levels["z1"], z_skull_base=levels["z_skull_base"],
                z_top=levels["z_top"], wall_mm=wall, kidneys=kidneys, bladder=(b_centre, b_semi),
                pelvic_node=(node, node_d), gas=gas, head=(head[0], head[1]),
                z_liver_bottom=levels["z_thorax_lo"] - _u(rng, (60.0, 100.0)))


def _in_ellipsoid(X, Y, z: float, centre, semi) -> np.ndarray:
    q = ((X - centre[0]) / semi[0]) ** 2 + ((Y - centre[1]) / semi[1]) ** 2 + ((z - centre[2]) / semi[2]) ** 2
    return q <= 1.0


def _with_spine(sl: np.ndarray, anat: Anatomy, f, z: float, body: np.ndarray) -> None:
    """Vertebra (and sternum where it exists) painted inside ``body`` only."""
    tmp = sl.copy()
    _paint_spine_and_sternum(tmp, anat, f, z, body)
    sl[body] = tmp[body]


def _trunk(sl, anat: Anatomy, wb: Body, f, z: float) -> None:
    """Abdomen or pelvis slice: wall, bowel (soft tissue and gas), liver, kidneys, aorta, bladder, iliac bones."""
    X, Y, r = f.X, f.Y, f.r
    rb = f.rb0
    body = r <= rb
    sl[body] = C.MUSCLE
    sl[body & (r > rb - anat.fat_mm)] = C.FAT
    cavity = r <= rb - anat.fat_mm - wb.wall_mm - 20.0 * np.clip(np.sin(f.phi), 0, None) ** 2
    sl[cavity] = C.ABDOMEN
    if z > wb.z_liver_bottom:
        s = (wb.z_thorax_lo - z) / (wb.z_thorax_lo - wb.z_liver_bottom)
        sl[cavity & (X < anat.cx + 25.0 - 130.0 * s) & (Y < anat.y_vb)] = C.LIVER
    for centre, semi in wb.kidneys:
        sl[body & _in_ellipsoid(X, Y, z, centre, semi)] = C.KIDNEY
    desc = anat.desc_aorta
    sl[np.hypot(X - desc.p1[0], Y - desc.p1[1]) <= desc.r1] = C.ABD_VESSEL
    for centre, rad in wb.gas:
        sl[cavity & _in_ellipsoid(X, Y, z, centre, (rad, rad, rad))] = C.AIR
    if z < wb.z_iliac:
        for sign in (-1.0, 1.0):   # iliac wings and acetabula: a cortical shell around marrow
            c = (anat.cx + sign * 0.62 * anat.body_a * 0.85, anat.cy + 0.1 * anat.body_b_post)
            q = ((X - c[0]) / 14.0) ** 2 + ((Y - c[1]) / (0.45 * anat.body_b_post)) ** 2
            sl[cavity & (q <= 1.0)] = C.CORTEX
            sl[cavity & (q <= 0.5)] = C.MARROW
        sl[cavity & _in_ellipsoid(X, Y, z, *wb.bladder)] = C.URINE
    node, d = wb.pelvic_node
    sl[_in_ellipsoid(X, Y, z, node, (0.5 * d,) * 3)] = C.NODE
    _with_spine(sl, anat, f, z, body)


def _thighs(sl, anat: Anatomy, f) -> None:
    """Two thighs (muscle in fat) around the femurs."""
    X, Y = f.X, f.Y
    for sign in (-1.0, 1.0):
        cx, cy = anat.cx + sign * 0.5 * anat.body_a, anat.cy + 0.1 * anat.body_b_post
        q = ((X - cx) / (0.42 * anat.body_a)) ** 2 + ((Y - cy) / (0.7 * anat.body_b_post)) ** 2
        sl[q <= 1.0] = C.FAT
        sl[q <= 0.8] = C.MUSCLE
        femur = np.hypot(X - cx - sign * 8.0, Y - cy)
        sl[femur <= 13.0] = C.CORTEX
        sl[femur <= 8.0] = C.MARROW


def _neck_or_head(sl, anat: Anatomy, wb: Body, f, z: float) -> None:
    """Neck (airway, vessels, cervical spine) below the skull base; skull and brain above it."""
    X, Y = f.X, f.Y
    if z > wb.z_skull_base:
        centre, semi = wb.head
        head = _in_ellipsoid(X, Y, z, centre, semi)
        sl[head] = C.FAT
        sl[_in_ellipsoid(X, Y, z, centre, semi - 3.0)] = C.CORTEX
        sl[_in_ellipsoid(X, Y, z, centre, semi - 3.0 - SKULL_MM)] = C.BRAIN
        return
    cy = anat.cy + 0.25 * anat.body_b_post
    q = ((X - anat.cx) / (0.42 * anat.body_a)) ** 2 + ((Y - cy) / (0.6 * anat.body_b_post)) ** 2
    neck = q <= 1.0
    sl[neck] = C.FAT
    sl[q <= 0.85] = C.MUSCLE
    tr = anat.trachea
    d_tr = np.hypot(X - tr.p0[0], Y - tr.p0[1])
    sl[neck & (d_tr <= tr.r0)] = C.AIR
    for sign in (-1.0, 1.0):
        for dx, rad in ((25.0, 4.0), (35.0, 6.0)):    # carotid artery, jugular vein
            sl[neck & (np.hypot(X - tr.p0[0] - sign * dx, Y - tr.p0[1] - 8.0) <= rad)] = C.ABD_VESSEL
    _with_spine(sl, anat, f, z, neck)


def rasterise_body(anat: Anatomy, wb: Body, grid: Grid) -> np.ndarray:
    """Tissue codes (uint8, ``(z, y, x)``) of a whole-body study: the thorax anatomy on the slices
    from ``wb.z_thorax_lo`` to ``wb.z_thorax_hi``, the neck and head above, abdomen, pelvis and thighs below."""
    z_mm = grid.axis_mm("z")
    tissue = np.zeros(grid.shape_zyx, np.uint8)
    in_thorax = np.flatnonzero((z_mm >= wb.z_thorax_lo) & (z_mm <= wb.z_thorax_hi + 1e-6))
    if in_thorax.size:
        k0, k1 = int(in_thorax[0]), int(in_thorax[-1]) + 1
        sub = Grid((k1 - k0, *grid.shape_zyx[1:]), grid.spacing_xyz_mm,
                   (grid.origin_xyz_mm[0], grid.origin_xyz_mm[1], float(z_mm[k0])))
        tissue[k0:k1] = rasterise(anat, sub)
    f = _slice_frame(anat, grid)
    for k, z in enumerate(z_mm):
        if wb.z_thorax_lo <= z <= wb.z_thorax_hi + 1e-6:
            continue
        sl = np.zeros(grid.shape_zyx[1:], np.uint8)
        sl[f.in_table] = C.TABLE_FOAM
        sl[f.table_shell] = C.TABLE_SHELL
        if z > wb.z_thorax_hi:
            _neck_or_head(sl, anat, wb, f, z)
        elif z >= wb.z_pubis:
            _trunk(sl, anat, wb, f, z)
        else:
            _thighs(sl, anat, f)
        tissue[k] = sl
    return tissue


def thorax_slices(wb: Body, grid: Grid) -> np.ndarray:
    """Bool ``(z,)``: the slices painted by the thorax anatomy (where truth labels may be non-zero)."""
    z_mm = grid.axis_mm("z")
    return (z_mm >= wb.z_thorax_lo) & (z_mm <= wb.z_thorax_hi + 1e-6)

