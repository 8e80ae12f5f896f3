"""A parametric thorax: per-study anatomy drawn from a random generator, rasterised to tissue codes.

All shapes are defined in DICOM patient coordinates (LPS, mm): x to the patient's left, y to the
posterior, z to the head. The body rests supine on the scanner table (larger y).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.geometry import Grid, capsule, ellipsoid, paint

# Anatomical proportions (mm unless stated); ranges are drawn uniformly per study.
BODY_HALF_WIDTH_MM = (95.0, 2.8, 50.0)          # a = c0 + c1 * BMI + c2 * (height_m - 1.7)
BODY_HALF_DEPTH_MM = (50.0, 2.2)                # b = c0 + c1 * BMI
FAT_MM = (4.0, 1.1)                             # fat = c0 + c1 * (BMI - 18)
BMI_LEAN = 18.0
MUSCLE_LATERAL_MM = (8.0, 14.0)
MUSCLE_ANTERIOR_MM = (12.0, 22.0)
MUSCLE_POSTERIOR_MM = (38.0, 50.0)
RIB_THICKNESS_MM = (9.0, 12.0)
RIB_SPACING_MM = (24.0, 30.0)
RIB_HEIGHT_MM = (9.0, 12.0)
RIB_DROP_MM = (70.0, 100.0)
RIB_CORTEX_MM = 1.5
VERTEBRA_RADIUS_MM = (16.0, 20.0)
VERTEBRA_HEIGHT_MM = (24.0, 28.0)
DISC_HEIGHT_MM = (5.0, 7.0)
TABLE_THICKNESS_MM = 35.0
TABLE_SHELL_MM = 3.0
TABLE_HALF_WIDTH_MM = 225.0
TABLE_CRADLE_RADIUS_MM = (500.0, 800.0)
MYOCARDIUM_THICKNESS_MM = (9.0, 12.0)
LUNG_VESSEL_TREE_DEPTH = 4
UPPER_CHEST_TAPER = 0.05            # the body is this much narrower at the top of the volume
APEX_START_T = (0.62, 0.70)          # normalised height where the lungs start to narrow
APEX_TOP_T = (1.0, 1.05)             # normalised height of the lung apices
# What broke the fat-window mediastinum on real CT (issue 12): fat planes that connect the
# mediastinum to the chest wall and the upper abdomen, and organs under the lung bases.
EXTRAPLEURAL_FAT_MM = (2.0, 4.5)     # fat between the ribcage and the parietal pleura
DIAPHRAGM_MM = (3.5, 5.0)            # diaphragm muscle under the dome surface
SUBPHRENIC_FAT_MM = (4.0, 8.0)       # fat under the left dome, around the stomach and spleen
PERICARDIAL_FAT_MM = (4.0, 9.0)      # fat shell around the heart (mediastinum)
CARDIOPHRENIC_PAD_MM = (14.0, 24.0)  # epicardial fat pad at the cardiac apex, on the diaphragm
STOMACH_SEMI_MM = ((38.0, 50.0), (32.0, 42.0), (40.0, 55.0))
STOMACH_GAS_FRACTION = (0.25, 0.45)  # anterior part of the stomach holding gas (patient supine)
JUGULAR_NOTCH_FRACTION = 0.5        # notch height between the carina (0) and the apices (1)
SPLEEN_SEMI_MM = ((18.0, 26.0), (40.0, 55.0), (38.0, 50.0))


@dataclass
class Tube:
    """A tapered capsule (used for airways and vessels)."""

    p0: np.ndarray
    p1: np.ndarray
    r0: float
    r1: float


@dataclass
class Anatomy:
    """One study's anatomy: scalar parameters and 3D landmarks (mm, LPS)."""

    z0: float
    z1: float
    cx: float
    cy: float
    body_a: float
    body_b_ant: float
    body_b_post: float
    body_p: float
    harmonics: list[tuple[int, float, float]]
    fat_mm: float
    muscle_lat_mm: float
    muscle_ant_mm: float
    muscle_post_mm: float
    rib_mm: float
    rib_spacing_mm: float
    rib_height_mm: float
    rib_drop_mm: float
    rib_phase_mm: float
    vb_r: float
    vert_h: float
    disc_h: float
    disc_phase: float
    canal_r: float
    sternum_w: float
    sternum_h: float
    z_xiphoid: float
    table_cradle_r: float
    dome_top: dict[str, float]
    dome_depth: float
    apex_t0: float
    apex_top: float
    z_carina: float
    heart_centre: np.ndarray
    heart_axes: np.ndarray
    heart_semi: np.ndarray
    lv_centre: np.ndarray
    lv_semi: np.ndarray
    myo_mm: float
    trachea: Tube
    bronchi: dict[str, Tube]
    oesophagus: Tube
    oesophagus_air_r: float
    aorta: list[Tube]
    desc_aorta: Tube
    svc: Tube
    pulmonary_arteries: list[Tube]
    hilum: dict[str, np.ndarray]
    column_half_width: float
    lung_vessels: list[Tube] = field(default_factory=list)
    extrapleural_mm: float = 0.0
    diaphragm_mm: float = 0.0
    subphrenic_fat_mm: float = 0.0
    pericardial_fat_mm: float = 0.0
    cardiophrenic_pad: tuple | None = None       # (centre, semi axes) of the fat pad
    stomach: tuple | None = None                 # (centre, semi axes, gas fraction)
    spleen: tuple | None = None                  # (centre, semi axes)

    # ---- derived geometry -----------------------------------------------------------------
    def t_of(self, z: float) -> float:
        """Normalised height of a slice (0 at the volume's bottom, 1 at its top)."""
        return (z - self.z0) / max(self.z1 - self.z0, 1e-6)

    def body_radius(self, phi: np.ndarray, z: float) -> np.ndarray:
        """Distance (mm) from the body centre to the skin along direction ``phi``."""
        c, s = np.cos(phi), np.sin(phi)
        b = np.where(s > 0, self.body_b_post, self.body_b_ant)
        p = self.body_p
        r = (np.abs(c / self.body_a) ** p + np.abs(s / b) ** p) ** (-1.0 / p)
        mod = 1.0
        for k, amp, ph in self.harmonics:
            mod = mod + amp * np.cos(k * phi + ph)
        return r * mod * self.taper(z)

    def taper(self, z: float) -> float:
        """Relative body width at height ``z`` (the upper chest is slightly narrower)."""
        t = self.t_of(z)
        return 1.0 - UPPER_CHEST_TAPER * float(np.clip((t - 0.6) / 0.4, 0.0, 1.0))

    def wall_mm(self, phi: np.ndarray) -> np.ndarray:
        """Chest wall thickness (fat + muscle + ribs) along ``phi``."""
        s = np.sin(phi)
        muscle = (self.muscle_lat_mm
                  + (self.muscle_post_mm - self.muscle_lat_mm) * np.clip(s, 0, None) ** 3
                  + (self.muscle_ant_mm - self.muscle_lat_mm) * np.clip(-s, 0, None) ** 2)
        return self.fat_mm + muscle + self.rib_mm + 1.0

    def cavity_radius(self, phi: np.ndarray, z: float) -> np.ndarray:
        """Distance (mm) from the body centre to the inner surface of the ribcage."""
        return self.body_radius(phi, z) - self.wall_mm(phi)

    @property
    def y_vb(self) -> float:
        """Vertebral body centre (y, mm)."""
        zc = 0.5 * (self.z0 + self.z1)
        return self.cy + float(self.cavity_radius(np.array(np.pi / 2), zc)) - 0.35 * self.vb_r

    @property
    def y_sternum(self) -> float:
        """Sternum centre (y, mm)."""
        zc = 0.5 * (self.z0 + self.z1)
        return self.cy - float(self.cavity_radius(np.array(-np.pi / 2), zc)) - 1.0 - 0.5 * self.rib_mm

    @property
    def z_jugular_notch(self) -> float:
        """Upper border of the manubrium (z, mm): the anterior end of the thoracic inlet.

        Halfway between the carina (about the sternal angle) and the lung apices, which rise above
        it into the root of the neck.
        """
        z_apex = self.z0 + self.apex_top * (self.z1 - self.z0)
        return self.z_carina + JUGULAR_NOTCH_FRACTION * (z_apex - self.z_carina)

    def dome_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (z, mm) of the diaphragm surface above point (x, y)."""
        out = None
        for side, sign in (("right", -1.0), ("left", 1.0)):
            xs = self.cx + sign * 60.0
            d = ((x - xs) / 110.0) ** 2 + ((y - self.cy) / 100.0) ** 2
            zs = self.dome_top[side] - self.dome_depth * d
            out = zs if out is None else np.maximum(out, zs)
        return out


def _u(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def _sample_body(rng: np.random.Generator, z0: float, z1: float, weight_kg: float, height_m: float) -> dict:
    """Body outline, wall, skeleton, domes and carina level (the :class:`Anatomy` fields drawn first)."""
    bmi = weight_kg / height_m**2
    H = z1 - z0
    zt = lambda t: z0 + t * H  # noqa: E731
    cx, cy = _u(rng, (-8, 8)), _u(rng, (-25, 5))
    a = BODY_HALF_WIDTH_MM[0] + BODY_HALF_WIDTH_MM[1] * bmi + BODY_HALF_WIDTH_MM[2] * (height_m - 1.7)
    b = BODY_HALF_DEPTH_MM[0] + BODY_HALF_DEPTH_MM[1] * bmi
    a *= _u(rng, (0.95, 1.05))
    b *= _u(rng, (0.95, 1.05))
    harmonics = [(k, _u(rng, (0.0, 0.03)), _u(rng, (0, 2 * np.pi))) for k in (3, 4, 5)]
    anat = dict(
        z0=z0, z1=z1, cx=cx, cy=cy, body_a=a, body_b_ant=b * _u(rng, (1.0, 1.1)), body_b_post=b * _u(rng, (0.9, 1.0)),
        body_p=_u(rng, (2.1, 2.6)), harmonics=harmonics,
        fat_mm=max(3.0, FAT_MM[0] + FAT_MM[1] * (bmi - BMI_LEAN)) * _u(rng, (0.8, 1.2)),
        muscle_lat_mm=_u(rng, MUSCLE_LATERAL_MM), muscle_ant_mm=_u(rng, MUSCLE_ANTERIOR_MM),
        muscle_post_mm=_u(rng, MUSCLE_POSTERIOR_MM), rib_mm=_u(rng, RIB_THICKNESS_MM),
        rib_spacing_mm=_u(rng, RIB_SPACING_MM), rib_height_mm=_u(rng, RIB_HEIGHT_MM),
        rib_drop_mm=_u(rng, RIB_DROP_MM), rib_phase_mm=_u(rng, (0, 30)),
        vb_r=_u(rng, VERTEBRA_RADIUS_MM), vert_h=_u(rng, VERTEBRA_HEIGHT_MM), disc_h=_u(rng, DISC_HEIGHT_MM),
        disc_phase=_u(rng, (0, 30)), canal_r=_u(rng, (7.0, 9.0)), sternum_w=_u(rng, (13.0, 18.0)),
        sternum_h=_u(rng, (5.5, 8.0)), z_xiphoid=zt(_u(rng, (0.12, 0.25))),
        table_cradle_r=_u(rng, TABLE_CRADLE_RADIUS_MM),
    )
    t_dome_r = _u(rng, (0.16, 0.26))
    anat["dome_top"] = {"right": zt(t_dome_r), "left": zt(t_dome_r) - _u(rng, (10.0, 22.0))}
    anat["dome_depth"] = _u(rng, (70.0, 95.0))
    anat["apex_t0"] = _u(rng, APEX_START_T)
    anat["apex_top"] = _u(rng, APEX_TOP_T)
    z_car = zt(_u(rng, (0.58, 0.66)))
    anat["z_carina"] = z_car
    return anat


def _sample_airways(rng: np.random.Generator, anat: dict, y_vb_front: float) -> dict:
    """Trachea down to the carina, the main bronchi to the hila, and the oesophagus."""
    cx, z0, z1, z_car = anat["cx"], anat["z0"], anat["z1"], anat["z_carina"]
    r_tr = _u(rng, (8.0, 10.0))
    x_tr = cx + _u(rng, (-3.0, 3.0))
    y_tr = y_vb_front - _u(rng, (16.0, 22.0)) - r_tr
    trachea = Tube(np.array([x_tr, y_tr, z1 + 20.0]), np.array([x_tr, y_tr, z_car]), r_tr, r_tr)
    carina = np.array([x_tr, y_tr, z_car])
    bronchi = {
        "right": Tube(carina, carina + [-_u(rng, (36, 44)), _u(rng, (4, 10)), -_u(rng, (18, 26))], 0.75 * r_tr, 0.65 * r_tr),
        "left": Tube(carina, carina + [_u(rng, (44, 54)), _u(rng, (6, 12)), -_u(rng, (26, 36))], 0.72 * r_tr, 0.62 * r_tr),
    }
    hilum = {
        "right": np.array([x_tr - _u(rng, (55, 65)), y_tr + _u(rng, (0, 10)), z_car - _u(rng, (18, 28))]),
        "left": np.array([x_tr + _u(rng, (60, 72)), y_tr + _u(rng, (2, 12)), z_car - _u(rng, (22, 32))]),
    }
    r_oe = _u(rng, (6.5, 8.5))
    oesophagus = Tube(np.array([cx + _u(rng, (1, 7)), y_vb_front - r_oe - 1.0, z1 + 20.0]),
                      np.array([cx + _u(rng, (8, 16)), y_vb_front - r_oe - 6.0, z0 - 30.0]), r_oe, r_oe)
    oesophagus_air_r = _u(rng, (1.5, 3.0)) if rng.random() < 0.35 else 0.0

    return dict(trachea=trachea, bronchi=bronchi, hilum=hilum, oesophagus=oesophagus,
                oesophagus_air_r=oesophagus_air_r)


def _sample_heart(rng: np.random.Generator, anat: dict, y_st_back: float, y_vb_front: float) -> dict:
    """Heart: an ellipsoid resting on the left dome, long axis to the left, anterior and inferior."""
    cx = anat["cx"]
    alpha = np.deg2rad(_u(rng, (30, 50)))
    beta = np.deg2rad(_u(rng, (15, 30)))
    e0 = np.array([np.cos(alpha) * np.cos(beta), -np.sin(alpha) * np.cos(beta), -np.sin(beta)])
    e1 = np.array([np.sin(alpha), np.cos(alpha), 0.0])
    e1 -= (e1 @ e0) * e0
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e0, e1)
    heart_semi = np.array([_u(rng, (55, 66)), _u(rng, (42, 50)), _u(rng, (40, 48))])
    y_mid = 0.5 * (y_st_back + y_vb_front)
    heart_centre = np.array([cx + _u(rng, (18, 32)), y_mid - _u(rng, (0, 12)),
                             anat["dome_top"]["left"] + _u(rng, (25, 38))])
    lv_centre = heart_centre + 0.18 * heart_semi[0] * e0 + 0.32 * heart_semi[1] * e1
    lv_semi = heart_semi * np.array([0.72, 0.55, 0.62])
    myo_mm = _u(rng, MYOCARDIUM_THICKNESS_MM)

    return dict(heart_centre=heart_centre, heart_axes=np.stack([e0, e1, e2]), heart_semi=heart_semi,
                lv_centre=lv_centre, lv_semi=lv_semi, myo_mm=myo_mm)


def _sample_great_vessels(rng: np.random.Generator, anat: dict, frame: Anatomy, airways: dict,
                          heart_centre: np.ndarray) -> dict:
    """Aorta (ascending, arch, descending), SVC and pulmonary arteries.

    ``frame`` is a provisional :class:`Anatomy` giving the vertebra and sternum positions.
    """
    cx, z0, z1, z_car = anat["cx"], anat["z0"], anat["z1"], anat["z_carina"]
    H = z1 - z0
    zt = lambda t: z0 + t * H  # noqa: E731
    x_sp, y_vb = cx, frame.y_vb
    y_st_back = frame.y_sternum + frame.sternum_h
    x_tr, y_tr = airways["trachea"].p0[0], airways["trachea"].p0[1]
    hilum = airways["hilum"]
    r_aa = _u(rng, (13.0, 17.0))
    r_da = _u(rng, (10.0, 13.0))
    x_aa = cx + _u(rng, (-14.0, -4.0))
    y_aa = y_st_back + r_aa + _u(rng, (18.0, 28.0))
    x_da = x_sp + 1.1 * frame.vb_r + r_da + _u(rng, (-6.0, 0.0))
    y_da = y_vb - _u(rng, (0.3, 0.8)) * frame.vb_r
    z_arch = zt(_u(rng, (0.76, 0.84)))
    aorta = [Tube(np.array([x_aa, y_aa, heart_centre[2] + 10.0]), np.array([x_aa, y_aa, z_arch]), r_aa, r_aa)]
    h_arch = r_aa + _u(rng, (6.0, 14.0))
    bulge = _u(rng, (14.0, 22.0))
    n_arch = 10
    pts = [np.array([x_aa + s * (x_da - x_aa) + bulge * np.sin(np.pi * s), y_aa + s * (y_da - y_aa),
                     z_arch + h_arch * np.sin(np.pi * s)]) for s in np.linspace(0, 1, n_arch + 1)]
    rad = np.linspace(r_aa, r_da, n_arch + 1)
    aorta += [Tube(pts[i], pts[i + 1], rad[i], rad[i + 1]) for i in range(n_arch)]
    desc_aorta = Tube(np.array([x_da, y_da, z_arch]), np.array([x_da + _u(rng, (-8, 0)), y_da - 4.0, z0 - 30.0]), r_da, r_da * 0.95)
    r_svc = _u(rng, (8.0, 10.0))
    # The SVC forms from the brachiocephalic veins behind the manubrium (below the jugular notch).
    z_svc_top = z_car + JUGULAR_NOTCH_FRACTION * (z0 + anat["apex_top"] * H - z_car)
    svc = Tube(np.array([x_aa - r_aa - r_svc - 3.0, y_aa + 6.0, z_svc_top]),
               np.array([x_aa - r_aa - r_svc - 1.0, y_aa + 8.0, heart_centre[2] + 15.0]), r_svc, r_svc)
    r_pt = _u(rng, (12.0, 14.0))
    pt0 = np.array([x_aa + r_aa + r_pt - 2.0, y_aa - 4.0, heart_centre[2] + 18.0])
    pt1 = np.array([x_aa + r_aa + 8.0, y_tr - 30.0, z_car - 12.0])    # bifurcation in front of the carina
    under_carina = np.array([x_tr - 6.0, y_tr - 30.0, z_car - 22.0])   # the RPA passes in front of the carina
    pulmonary = [
        Tube(pt0, pt1, r_pt, r_pt),
        Tube(pt1, under_carina, 0.75 * r_pt, 0.7 * r_pt),
        Tube(under_carina, hilum["right"], 0.7 * r_pt, 0.55 * r_pt),
        Tube(pt1, hilum["left"], 0.75 * r_pt, 0.55 * r_pt),
    ]
    return dict(aorta=aorta, desc_aorta=desc_aorta, svc=svc, pulmonary_arteries=pulmonary)


def sample_anatomy(rng: np.random.Generator, z0: float, z1: float, weight_kg: float, height_m: float) -> Anatomy:
    """Draw one study's anatomy.

    Parameters
    ----------
    rng : numpy.random.Generator
        The study's anatomy stream.
    z0, z1 : float
        Patient z (mm) of the lowest and highest slice centres.
    weight_kg, height_m : float
        Body habitus; the body outline and fat thickness follow the BMI.

    Returns
    -------
    Anatomy
    """
    anat = _sample_body(rng, z0, z1, weight_kg, height_m)
    tmp = Anatomy(**anat, heart_centre=np.zeros(3), heart_axes=np.eye(3), heart_semi=np.ones(3),
                  lv_centre=np.zeros(3), lv_semi=np.ones(3), myo_mm=10.0,
                  trachea=None, bronchi={}, oesophagus=None, oesophagus_air_r=0.0, aorta=[],
                  desc_aorta=None, svc=None, pulmonary_arteries=[], hilum={}, column_half_width=20.0)
    y_vb_front = tmp.y_vb - tmp.vb_r
    y_st_back = tmp.y_sternum + tmp.sternum_h
    airways = _sample_airways(rng, anat, y_vb_front)
    heart = _sample_heart(rng, anat, y_st_back, y_vb_front)
    vessels = _sample_great_vessels(rng, anat, tmp, airways, heart["heart_centre"])
    anat.update(**airways, **heart, **vessels, column_half_width=_u(rng, (16.0, 24.0)))
    anatomy = Anatomy(**anat)
    anatomy.lung_vessels = _vessel_trees(rng, anatomy)
    _sample_abdomen_and_fat(rng, anatomy)
    return anatomy


def _sample_abdomen_and_fat(rng: np.random.Generator, anat: Anatomy) -> None:
    """Fat planes, diaphragm and the organs under the left dome (drawn last: the rest stays as it was)."""
    anat.extrapleural_mm = _u(rng, EXTRAPLEURAL_FAT_MM)
    anat.diaphragm_mm = _u(rng, DIAPHRAGM_MM)
    anat.subphrenic_fat_mm = _u(rng, SUBPHRENIC_FAT_MM)
    anat.pericardial_fat_mm = _u(rng, PERICARDIAL_FAT_MM)
    e0 = anat.heart_axes[0]
    apex = anat.heart_centre + 0.75 * anat.heart_semi[0] * e0
    pad = _u(rng, CARDIOPHRENIC_PAD_MM)
    anat.cardiophrenic_pad = (np.array([apex[0], apex[1] - 5.0, anat.dome_top["left"] + 0.3 * pad]), np.array([pad * 1.4, pad, pad * 0.8]))
    z_left = anat.dome_top["left"]
    semi = np.array([_u(rng, r) for r in STOMACH_SEMI_MM])
    centre = np.array([anat.cx + _u(rng, (45.0, 65.0)), anat.cy - _u(rng, (10.0, 30.0)), z_left - anat.diaphragm_mm - semi[2] * _u(rng, (0.55, 0.8))])
    anat.stomach = (centre, semi, _u(rng, STOMACH_GAS_FRACTION))
    semi = np.array([_u(rng, r) for r in SPLEEN_SEMI_MM])
    centre = np.array([anat.cx + _u(rng, (75.0, 95.0)), anat.cy + _u(rng, (35.0, 55.0)), z_left - anat.diaphragm_mm - semi[2] * _u(rng, (0.6, 0.9))])
    anat.spleen = (centre, semi)


def _paint_left_upper_abdomen(tissue: np.ndarray, grid: Grid, anat: Anatomy) -> None:
    """Stomach (soft-tissue wall and contents, gas anteriorly) and spleen under the left dome."""
    abdominal = lambda s: np.isin(s, (C.ABDOMEN, C.LIVER, C.FAT))  # noqa: E731
    centre, semi, gas_fraction = anat.stomach
    stomach = ellipsoid(grid, centre, semi)
    paint(tissue, stomach, C.ABDOMEN, lambda s: s == C.ABDOMEN)  # the subphrenic fat stays above it
    if stomach is not None:
        sl, mask = stomach
        y = grid.axis_mm("y")[sl[1]][None, :, None]
        inner = ellipsoid(grid, centre, semi - 3.0)
        if inner is not None:
            gas = np.zeros_like(mask)
            gas_sl = tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(inner[0], sl))
            gas[gas_sl] = inner[1]
            gas &= y < centre[1] - semi[1] * (1.0 - 2.0 * gas_fraction)
            paint(tissue, (sl, gas), C.AIR, lambda s: s == C.ABDOMEN)
    paint(tissue, ellipsoid(grid, *anat.spleen), C.LIVER, abdominal)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle) + axis * (axis @ v) * (1 - np.cos(angle)))


def _vessel_trees(rng: np.random.Generator, anat: Anatomy) -> list[Tube]:
    """Branching pulmonary vessel trees from each hilum into its lung."""
    tubes: list[Tube] = []
    for side, sign in (("right", -1.0), ("left", 1.0)):
        root = anat.hilum[side]
        # lateral (x), posterior (y), superior (z) components of each lobar trunk's direction
        trunks = [(0.5, -0.1, 0.9), (0.8, -0.5, 0.1), (0.7, 0.4, -0.6), (0.4, 0.7, -0.6), (0.6, -0.4, -0.7)]
        for dx, dy, dz in trunks:
            d = np.array([sign * dx, dy, dz]) + rng.normal(0, 0.12, 3)
            d /= np.linalg.norm(d)
            _grow(rng, tubes, root, d, _u(rng, (5.0, 6.5)), _u(rng, (28.0, 40.0)), LUNG_VESSEL_TREE_DEPTH)
    return tubes


def _grow(rng, tubes, p0, d, r, length, depth):
    p1 = p0 + d * length
    tubes.append(Tube(p0, p1, r, 0.85 * r))
    if depth <= 0:
        return
    perp = np.cross(d, rng.normal(size=3))
    perp /= np.linalg.norm(perp)
    for sgn in (1.0, -1.0):
        nd = _rotate(d, perp, sgn * np.deg2rad(_u(rng, (20.0, 40.0))))
        nd = _rotate(nd, d, _u(rng, (-0.6, 0.6)))
        _grow(rng, tubes, p1, nd, 0.7 * r, 0.78 * length, depth - 1)


def _superior_mediastinum(column: np.ndarray, lungs: np.ndarray, cavity: np.ndarray, right_side: np.ndarray,
                          above_inlet: bool) -> np.ndarray:
    """The mediastinum of a slice through the narrowing apices (2D masks, ``(y, x)``).

    All of the cavity between the two lungs and in front of the vertebral bodies (``cavity``) is
    mediastinum (the paper's definition), not only the drawn column: row by row, from the right
    lung's medial edge to the left lung's. Above the jugular notch the tissue in front of the
    apices is the root of the neck, not mediastinum.
    """
    right, left = lungs & right_side, lungs & ~right_side
    ny, nx = lungs.shape
    cols = np.arange(nx)
    r_edge = np.where(right, cols, -1).max(axis=1)
    l_edge = np.where(left, cols, nx).min(axis=1)
    rows = (r_edge >= 0) & (l_edge < nx)
    between = rows[:, None] & (cols[None, :] > r_edge[:, None]) & (cols[None, :] < l_edge[:, None])
    out = column.copy()
    if rows.any():
        first = int(np.argmax(rows))
        if above_inlet:
            out[:first] = False
        else:
            # Below the notch the mediastinum reaches forward to the sternum between the lungs.
            between[:first] = between[first]
    return (out | between) & cavity


# ---------------------------------------------------------------------------------------------
BONE = (C.CORTEX, C.MARROW, C.CARTILAGE, C.DISC, C.CANAL)


def _slice_frame(anat: Anatomy, grid: Grid) -> SimpleNamespace:
    """In-plane coordinates (mm) and the slice-independent landmarks :func:`rasterise` paints with."""
    xs, ys = grid.axis_mm("x"), grid.axis_mm("y")
    X, Y = np.meshgrid(xs, ys)
    dxb, dyb = X - anat.cx, Y - anat.cy
    r = np.hypot(dxb, dyb)
    phi = np.arctan2(dyb, dxb)
    wall = anat.wall_mm(phi)
    g = np.abs(np.angle(np.exp(1j * (phi - np.pi / 2)))) / np.pi   # 0 posterior midline, 1 anterior
    dome = anat.dome_z(X, Y)
    y_vb, y_st = anat.y_vb, anat.y_sternum
    y_canal = y_vb + anat.vb_r + 2.0 + anat.canal_r
    y_col_front, y_col_back = y_st + anat.sternum_h, y_vb - anat.vb_r
    # table: a curved carbon-fibre cradle (shell + foam) under the body
    phis = np.linspace(0.05, np.pi - 0.05, 181)
    y_back = anat.cy + float(max(np.max(anat.body_radius(phis, z) * np.sin(phis)) for z in (anat.z0, anat.z1)))
    y_table = y_back + 1.0 - (X - anat.cx) ** 2 / (2 * anat.table_cradle_r)
    in_table = (Y >= y_table) & (Y <= y_table + TABLE_THICKNESS_MM) & (np.abs(X - anat.cx) <= TABLE_HALF_WIDTH_MM)
    table_shell = in_table & ((Y < y_table + TABLE_SHELL_MM) | (Y > y_table + TABLE_THICKNESS_MM - TABLE_SHELL_MM))
    rb0 = anat.body_radius(phi, anat.z0) / anat.taper(anat.z0)
    z_notch = anat.z_jugular_notch
    return SimpleNamespace(X=X, Y=Y, r=r, phi=phi, wall=wall, g=g, dome=dome, y_vb=y_vb, y_st=y_st, y_canal=y_canal,
                           y_col_front=y_col_front, y_col_back=y_col_back, in_table=in_table,
                           table_shell=table_shell, rb0=rb0, z_notch=z_notch)


def _paint_table_wall_and_ribs(anat: Anatomy, f: SimpleNamespace, z: float) -> tuple[np.ndarray, ...]:
    """One slice's table, body wall (muscle, fat) and ribs.

    Returns the slice's tissue codes, the body and cavity masks (the cavity is inside the wall) and
    the cavity radius (mm) per pixel.
    """
    r, g, wall, in_table, table_shell, rb0 = f.r, f.g, f.wall, f.in_table, f.table_shell, f.rb0
    ny, nx = r.shape
    sl = np.zeros((ny, nx), np.uint8)
    sl[in_table] = C.TABLE_FOAM
    sl[table_shell] = C.TABLE_SHELL
    rb = rb0 * anat.taper(z)
    rc = rb - wall
    body = r <= rb
    sl[body] = C.MUSCLE
    sl[body & (r > rb - anat.fat_mm)] = C.FAT
    cav = r <= rc
    # ribs: oblique hoops descending anteriorly; a slice cuts each one as a short arc
    band = (r > rc + 1.0) & (r <= rc + 1.0 + anat.rib_mm)
    u = (z + anat.rib_drop_mm * g - anat.rib_phase_mm) / anat.rib_spacing_mm
    fz = (u - np.floor(u)) * anat.rib_spacing_mm
    rib = band & (fz < anat.rib_height_mm) & (g > 0.06)
    edge = (fz < RIB_CORTEX_MM) | (fz > anat.rib_height_mm - RIB_CORTEX_MM) | \
        (r < rc + 1.0 + RIB_CORTEX_MM) | (r > rc + 1.0 + anat.rib_mm - RIB_CORTEX_MM)
    sl[rib & (g <= 0.78)] = C.MARROW
    sl[rib & (g <= 0.78) & edge] = C.CORTEX
    sl[rib & (g > 0.78) & (g <= 0.93)] = C.CARTILAGE
    return sl, body, cav, rc


def _paint_thorax(sl: np.ndarray, anat: Anatomy, f: SimpleNamespace, z: float, cav: np.ndarray,
                  rc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lungs, diaphragm and upper abdomen of one slice; returns the thoracic cavity and where lung may be."""
    X, Y, r, dome = f.X, f.Y, f.r, f.dome
    t = anat.t_of(z)
    # thoracic cavity: lungs (apices narrow towards the top), abdomen below the diaphragm
    lung_ok = np.ones_like(cav)
    if t > anat.apex_t0:
        frac = np.clip((t - anat.apex_t0) / (anat.apex_top - anat.apex_t0), 0, 1)
        shrink = np.sqrt(max(0.0, 1.0 - frac**2))
        lung_ok = np.zeros_like(cav)
        for sgn in (-1.0, 1.0):
            xa, ya = anat.cx + sgn * 0.5 * anat.body_a * 0.62, anat.cy + 0.15 * anat.body_b_post
            rx, ry = 0.5 * anat.body_a * 0.85 * shrink, anat.body_b_post * 0.75 * shrink
            if rx > 1 and ry > 1:
                lung_ok |= ((X - xa) / rx) ** 2 + ((Y - ya) / ry) ** 2 <= 1.0
    sl[cav & lung_ok] = C.LUNG
    below = cav & (z < dome)
    sl[below & (X < anat.cx + 25.0)] = C.LIVER
    sl[below & (X >= anat.cx + 25.0)] = C.ABDOMEN
    pleural_fat = cav & ~below & (r > rc - anat.extrapleural_mm)
    sl[pleural_fat] = C.FAT
    sl[below & (z >= dome - anat.diaphragm_mm)] = C.MUSCLE
    sl[below & (z < dome - anat.diaphragm_mm) & (z >= dome - anat.diaphragm_mm - anat.subphrenic_fat_mm)
       & (X >= anat.cx + 25.0)] = C.FAT
    return cav & ~below & ~pleural_fat, lung_ok


def _mediastinal_column(anat: Anatomy, f: SimpleNamespace, z: float, cavity: np.ndarray,
                        lung_ok: np.ndarray) -> np.ndarray:
    """The mediastinal column of one slice: sternum to spine, between the lungs."""
    X, Y, y_col_front, y_col_back, z_notch = f.X, f.Y, f.y_col_front, f.y_col_back, f.z_notch
    t = anat.t_of(z)
    hw = anat.column_half_width * (0.85 if t > 0.8 else 1.0)
    ymid, hh = 0.5 * (y_col_front + y_col_back), 0.5 * (y_col_back - y_col_front) + 3.0
    column = (((X - anat.cx - 4.0) / hw) ** 2 + ((Y - ymid) / hh) ** 2 <= 1.0) & cavity
    if t > anat.apex_t0:
        column = _superior_mediastinum(column, cavity & lung_ok, cavity & (Y < y_col_back),
                                       X < anat.cx + 4.0, z > z_notch)
    return column


def _paint_spine_and_sternum(sl: np.ndarray, anat: Anatomy, f: SimpleNamespace, z: float, body: np.ndarray) -> None:
    """Vertebral body (with discs), canal, posterior elements, transverse processes and sternum."""
    X, Y, y_vb, y_st, y_canal, z_notch = f.X, f.Y, f.y_vb, f.y_st, f.y_canal, f.z_notch
    fzv = ((z - anat.disc_phase) / anat.vert_h) % 1.0 * anat.vert_h
    vb_q = ((X - anat.cx) / (1.1 * anat.vb_r)) ** 2 + ((Y - y_vb) / anat.vb_r) ** 2
    vb_in = ((X - anat.cx) / (1.1 * anat.vb_r - 2)) ** 2 + ((Y - y_vb) / (anat.vb_r - 2)) ** 2
    rc_canal = np.hypot(X - anat.cx, Y - y_canal)
    arch = rc_canal <= anat.canal_r + 5.0
    spinous = ((X - anat.cx) / 5.0) ** 2 + ((Y - y_canal - anat.canal_r - 20.0) / 18.0) ** 2 <= 1.0
    transverse = ((np.abs(X - anat.cx) - 24.0) / 14.0) ** 2 + ((Y - y_canal + 2.0) / 6.0) ** 2 <= 1.0
    for m in (arch, spinous, transverse):
        sl[m & body] = C.CORTEX
    sl[(((X - anat.cx) / 3.0) ** 2 + ((Y - y_canal - anat.canal_r - 20.0) / 15.0) ** 2 <= 1.0)] = C.MARROW
    sl[vb_q <= 1.0] = C.CORTEX
    sl[vb_in <= 1.0] = C.DISC if fzv < anat.disc_h else C.MARROW
    sl[rc_canal <= anat.canal_r] = C.CANAL
    # sternum
    if anat.z_xiphoid < z <= z_notch:
        sq = ((X - anat.cx) / anat.sternum_w) ** 2 + ((Y - y_st) / anat.sternum_h) ** 2
        sqi = ((X - anat.cx) / (anat.sternum_w - 1.5)) ** 2 + ((Y - y_st) / (anat.sternum_h - 1.5)) ** 2
        sl[sq <= 1.0] = C.CORTEX
        sl[sqi <= 1.0] = C.MARROW


def _mediastinum_region(tissue: np.ndarray, cavity: np.ndarray, column: np.ndarray, grid: Grid,
                        anat: Anatomy) -> None:
    """Mediastinal fat: the column plus padded great vessels, airways, oesophagus and heart."""
    region = column
    padded = [ellipsoid(grid, anat.heart_centre, anat.heart_semi, anat.heart_axes, pad_mm=6.0),
              ellipsoid(grid, anat.lv_centre, anat.lv_semi, anat.heart_axes, pad_mm=6.0)]
    tubes_pad = ([(tb, 5.0) for tb in (anat.trachea, anat.oesophagus, anat.svc)]
                 + [(tb, 4.0) for tb in anat.aorta + [anat.desc_aorta]]
                 + [(tb, 3.0) for tb in anat.pulmonary_arteries + list(anat.bronchi.values())])
    padded += [capsule(grid, tb.p0, tb.p1, tb.r0 + pad, tb.r1 + pad) for tb, pad in tubes_pad]
    for shp in padded:
        if shp is not None:
            region[shp[0]] |= shp[1]
    region &= cavity
    soft = (tissue == C.LUNG) | (tissue == C.MUSCLE)
    tissue[region & soft] = C.MED_FAT


def _paint_heart_and_tubes(tissue: np.ndarray, grid: Grid, anat: Anatomy) -> None:
    """Pericardial fat, heart, great vessels, oesophagus, airways and lung vessels."""
    heart = ellipsoid(grid, anat.heart_centre, anat.heart_semi, anat.heart_axes)
    lv_out = ellipsoid(grid, anat.lv_centre, anat.lv_semi, anat.heart_axes)
    lv_in = ellipsoid(grid, anat.lv_centre, anat.lv_semi - anat.myo_mm, anat.heart_axes)
    # Pericardial fat around the heart and the epicardial fat pad on the diaphragm (mediastinum).
    in_chest = lambda sub: sub == C.LUNG  # noqa: E731
    paint(tissue, ellipsoid(grid, anat.heart_centre, anat.heart_semi, anat.heart_axes, pad_mm=anat.pericardial_fat_mm),
          C.MED_FAT, in_chest)
    paint(tissue, ellipsoid(grid, *anat.cardiophrenic_pad), C.MED_FAT, in_chest)
    # The heart rests on the diaphragm inside the ribcage: it fills only the thoracic cavity.
    in_cavity = lambda sub: np.isin(sub, (C.LUNG, C.MED_FAT))  # noqa: E731
    paint(tissue, heart, C.HEART_BLOOD, in_cavity)
    paint(tissue, lv_out, C.MYOCARDIUM, lambda s: np.isin(s, (C.LUNG, C.MED_FAT, C.HEART_BLOOD)))
    _paint_left_upper_abdomen(tissue, grid, anat)
    paint(tissue, lv_in, C.HEART_BLOOD, lambda s: s == C.MYOCARDIUM)
    thoracic = lambda s: np.isin(s, (C.LUNG, C.MED_FAT, C.MUSCLE))  # noqa: E731
    abdominal = lambda s: np.isin(s, (C.LIVER, C.ABDOMEN))  # noqa: E731
    for tb in anat.aorta + [anat.desc_aorta, anat.svc] + anat.pulmonary_arteries:
        shp = capsule(grid, tb.p0, tb.p1, tb.r0, tb.r1)
        paint(tissue, shp, C.GREAT_VESSEL, thoracic)
        paint(tissue, shp, C.ABD_VESSEL, abdominal)
    oe = anat.oesophagus
    paint(tissue, capsule(grid, oe.p0, oe.p1, oe.r0), C.OESOPHAGUS, thoracic)
    if anat.oesophagus_air_r > 0:
        paint(tissue, capsule(grid, oe.p0, oe.p1, anat.oesophagus_air_r), C.AIRWAY, lambda s: s == C.OESOPHAGUS)
    not_bone = lambda s: ~np.isin(s, BONE + (C.HEART_BLOOD, C.MYOCARDIUM))  # noqa: E731
    airways = [anat.trachea] + list(anat.bronchi.values())
    for tb in airways:
        paint(tissue, capsule(grid, tb.p0, tb.p1, tb.r0 + 2.0, tb.r1 + 2.0), C.AIRWAY_WALL, not_bone)
    for tb in airways:
        paint(tissue, capsule(grid, tb.p0, tb.p1, tb.r0, tb.r1), C.AIRWAY, lambda s: s == C.AIRWAY_WALL)
    for tb in anat.lung_vessels:
        paint(tissue, capsule(grid, tb.p0, tb.p1, tb.r0, tb.r1), C.LUNG_VESSEL, lambda s: s == C.LUNG)


def rasterise(anat: Anatomy, grid: Grid) -> np.ndarray:
    """Tissue codes (uint8, ``(z, y, x)``) of the anatomy on a grid (no lesions).

    Parameters
    ----------
    anat : Anatomy
    grid : Grid

    Returns
    -------
    numpy.ndarray
        uint8 tissue codes from :mod:`colearn_pipeline.phantom.config`.
    """
    tissue = np.zeros(grid.shape_zyx, np.uint8)
    cavity = np.zeros(grid.shape_zyx, bool)
    column = np.zeros(grid.shape_zyx, bool)
    f = _slice_frame(anat, grid)
    for k, z in enumerate(grid.axis_mm("z")):
        sl, body, cav, rc = _paint_table_wall_and_ribs(anat, f, z)
        cavity[k], lung_ok = _paint_thorax(sl, anat, f, z, cav, rc)
        column[k] = _mediastinal_column(anat, f, z, cavity[k], lung_ok)
        _paint_spine_and_sternum(sl, anat, f, z, body)
        tissue[k] = sl
    spine_free = ~np.isin(tissue, BONE)
    cavity &= spine_free
    _mediastinum_region(tissue, cavity, column, grid, anat)
    _paint_heart_and_tubes(tissue, grid, anat)
    return tissue
