"""Lesions: primary lung tumours (with optional distal atelectasis) and involved lymph nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.anatomy import Anatomy
from colearn_pipeline.phantom.geometry import Grid, ellipsoid

COARSE_SPACING_MM = 4.0          # in-plane spacing of the placement maps
PLACEMENT_TRIES = 60
NODE_TRIES_PER_STATION = 12      # jittered attempts at one nodal station before trying the next
NODE_SEARCH_MM = 8.0             # jitter of a node around its station's anchor (each axis)
LESION_GAP_MM = 8.0              # minimum surface gap between two lesions
MIN_PAINTED_FRACTION = 0.55      # share of the nominal ball that must be paintable
SHAPE_HARMONICS = 4              # random radial harmonics of an irregular primary
PRIMARY_IRREGULARITY = 0.22      # total amplitude of the radial harmonics (fraction of radius)
NODE_IRREGULARITY = 0.08
PRIMARY_RIM_FRACTION = (0.5, 0.7)    # true SUV at the rim / peak
NODE_RIM_FRACTION = (0.65, 0.8)
NECROSIS_MIN_DIAMETER_MM = 32.0
NECROSIS_PROBABILITY = 0.4
NECROSIS_FACTOR = (0.45, 0.6)        # core SUV / peak
ATELECTASIS_WIDTH = (1.1, 0.8)       # semi-axes across the collapse, as multiples of the tumour radius
ATELECTASIS_VERTICAL_WEIGHT = 0.3    # weight of the cranio-caudal part of the collapse direction
ATELECTASIS_OVERLAP = 0.7            # collapse starts this far (x tumour radius) from the tumour centre
ATELECTASIS_MIN_ML = 3.0             # smaller collapses are not drawn (nor reported)
PLACEMENT_KINDS = {"interior": 0.4, "chest_wall": 0.35, "mediastinal": 0.25}
#: A large primary (diseased-lung studies) lies against the mediastinum; when no place fits its
#: diameter, the diameter shrinks by this factor (never below the range's low end) and it tries again.
LARGE_PRIMARY_SHRINK = 0.92
#: A large primary keeps less of the ordinary clearance from the myocardium in its placement map (its
#: painted ball is still checked against the full margin): radius x this + margin.
LARGE_PRIMARY_MYO_FACTOR = 1.0
NODE_STATIONS = ("2R", "2L", "4R", "4L", "5", "7", "10R", "10L")

PRIMARY_HOSTS = (C.LUNG, C.LUNG_VESSEL)
NODE_HOSTS = (C.MED_FAT, C.LUNG, C.LUNG_VESSEL, C.MUSCLE)
#: Tissues with blood-pool-like uptake that a node keeps ``blood_margin_mm`` away from, so that a
#: 40 %-of-peak threshold around the node does not leak into them after the PSF.
WARM_NEIGHBOURS = (C.GREAT_VESSEL, C.HEART_BLOOD, C.MARROW, C.LIVER, C.ABDOMEN)
#: The oesophagus (thin, lower uptake) only needs ``oesophagus_margin_mm``.
OESOPHAGUS_NEIGHBOUR = (C.OESOPHAGUS,)


@dataclass
class Lesion:
    """One lesion as written to the truth and the report."""

    kind: str                       # "primary" or "node"
    text: str
    centre_mm: np.ndarray
    hot_spot_mm: np.ndarray         # report position: the voxel of highest true SUV, inside the lesion
    diameter_mm: float
    peak_suv: float
    n_voxels: int
    placement: str = ""
    station: str = ""
    lobe: str = ""
    atelectasis_voxels: int = 0
    necrotic: bool = False
    size_mm: float = 0.0            # longest diameter of the painted lesion (what a report states)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-ready description (positions in LPS mm)."""
        return {
            "kind": self.kind, "text": self.text, "centre_mm": [round(float(v), 2) for v in self.centre_mm],
            "position_mm": [round(float(v), 2) for v in self.hot_spot_mm], "diameter_mm": round(self.diameter_mm, 1),
            "peak_suv_true": round(self.peak_suv, 3), "n_voxels": int(self.n_voxels), "placement": self.placement,
            "station": self.station, "lobe": self.lobe, "atelectasis_voxels": int(self.atelectasis_voxels),
            "necrotic": bool(self.necrotic), "uptake_boosts": int(self.extra.get("uptake_boosts", 0)),
            "size_mm": round(float(self.size_mm), 1),
        }


def _coarse(grid: Grid) -> tuple[int, int]:
    sx = max(1, int(round(COARSE_SPACING_MM / grid.spacing_xyz_mm[0])))
    sy = max(1, int(round(COARSE_SPACING_MM / grid.spacing_xyz_mm[1])))
    return sy, sx


def _edt(mask: np.ndarray, sampling) -> np.ndarray:
    """Distance (mm) from each voxel to the nearest voxel outside ``mask`` (0 outside)."""
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    return ndimage.distance_transform_edt(mask, sampling=sampling).astype(np.float32)


def _blob(grid: Grid, rng: np.random.Generator, centre, radius: float, irregularity: float, elong=(1.0, 1.0, 1.0)):
    """An irregular ball: radius modulated by random harmonics of the direction."""
    c = np.asarray(centre, float)
    ext = radius * (1 + irregularity) * np.asarray(elong) + 1.0
    sl = grid.bbox(c - ext, c + ext)
    if sl is None:
        return None, None
    z, y, x = grid.coords(sl)
    dx, dy, dz = (x - c[0]) / elong[0], (y - c[1]) / elong[1], (z - c[2]) / elong[2]
    d = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-6
    rmod = np.ones(np.broadcast(dx, dy, dz).shape)
    if irregularity > 0:
        amps = rng.dirichlet(np.ones(SHAPE_HARMONICS)) * irregularity
        for amp in amps:
            v = rng.normal(size=3)
            v /= np.linalg.norm(v)
            freq = rng.uniform(1.0, 3.0)
            ph = rng.uniform(0, 2 * np.pi)
            rmod = rmod + amp * np.cos(freq * np.pi * (dx * v[0] + dy * v[1] + dz * v[2]) / d + ph)
    return sl, d <= radius * rmod


def _lobe(anat: Anatomy, p: np.ndarray) -> tuple[str, str]:
    """(side, lobe) of a lung point, from simple oblique and horizontal fissure planes."""
    side = "right" if p[0] < anat.cx else "left"
    y_ant = anat.y_sternum
    y_post = anat.y_vb + anat.vb_r
    yn = np.clip((p[1] - y_ant) / (y_post - y_ant), 0, 1)          # 0 anterior .. 1 posterior
    z_dia = anat.dome_top[side]
    z_obl = z_dia + (anat.z_carina + 25.0 - z_dia) * (0.2 + 0.8 * yn)
    if p[2] < z_obl:
        return side, "lower lobe"
    if side == "right" and p[2] < anat.z_carina - 15.0:
        return side, "middle lobe"
    return side, "upper lobe"


def _station_anchor(anat: Anatomy, station: str, r: float, rng) -> np.ndarray:
    tr = anat.trachea
    xt, yt, rt = tr.p1[0], tr.p1[1], tr.r0
    zc = anat.z_carina
    j = lambda s=3.0: rng.uniform(-s, s)  # noqa: E731
    if station == "2R":
        return np.array([xt - rt - 4 - r + j(), yt + j(), zc + rng.uniform(60, 85)])
    if station == "2L":
        return np.array([xt + rt + 4 + r + j(), yt + 2 + j(), zc + rng.uniform(75, 95)])
    if station == "4R":
        return np.array([xt - rt - 5 - r + j(), yt + 5 + j(), zc + rng.uniform(5, 20)])
    if station == "4L":
        return np.array([xt + rt + 4 + r + j(), yt + 2 + j(), zc + rng.uniform(5, 20)])
    if station == "5":
        return np.array([xt + rt + 18 + r + j(), yt - 16 + j(), zc + rng.uniform(0, 15)])
    if station == "7":
        return np.array([xt + 2 + j(), yt + j(), zc - r - rng.uniform(8, 16)])
    side = "right" if station == "10R" else "left"
    h = anat.hilum[side]
    return h + np.array([j(), j(), -r - rng.uniform(4, 10)])


def _distance_maps(grid: Grid, tissue: np.ndarray) -> SimpleNamespace:
    """Distances (mm) on a coarse in-plane sampling of ``tissue``: into the lung (``d_lung``), to the
    mediastinum (``d_med``) and to the myocardium (``d_myo``), with the sampling's axes (mm) and steps."""
    sy, sx = _coarse(grid)
    sp = (grid.spacing_xyz_mm[2], sy * grid.spacing_xyz_mm[1], sx * grid.spacing_xyz_mm[0])
    coarse = tissue[:, ::sy, ::sx]
    lung_c = np.isin(coarse, PRIMARY_HOSTS)
    med_c = np.isin(coarse, (C.MED_FAT, C.GREAT_VESSEL, C.HEART_BLOOD, C.MYOCARDIUM, C.OESOPHAGUS, C.AIRWAY, C.AIRWAY_WALL))
    return SimpleNamespace(d_lung=_edt(lung_c, sp), d_med=_edt(~med_c, sp), d_myo=_edt(coarse != C.MYOCARDIUM, sp),
                           z_mm=grid.axis_mm("z"), y_mm=grid.axis_mm("y")[::sy], x_mm=grid.axis_mm("x")[::sx],
                           sy=sy, sx=sx)


def _draw_primary(rng: np.random.Generator, cfg: C.PhantomConfig, maps: SimpleNamespace, half_slice: float,
                  large_mm: float | None = None):
    """Radius (mm), placement kind and centre (x, y, z mm) of a primary tumour, or None when no place fits.

    ``large_mm``: a large primary of this diameter against the mediastinum (diseased-lung studies).
    """
    if large_mm is None:
        diam = rng.uniform(*cfg.primary_diameter_mm)
        placement = rng.choice(list(PLACEMENT_KINDS), p=list(PLACEMENT_KINDS.values()))
    else:
        diam, placement = large_mm, "mediastinal"
    r = 0.5 * diam
    d_lung, d_med, zc_axis = maps.d_lung, maps.d_med, maps.z_mm
    if placement == "interior":
        ok = (d_lung >= r + 4.0) & (d_med >= r + 6.0)
    elif placement == "chest_wall":
        ok = (np.abs(d_lung - 0.85 * r) < 3.0) & (d_med > r + 20.0)
    else:
        ok = (np.abs(d_med - 0.85 * r) < 3.0) & (np.abs(d_lung - d_med) < 3.0)
    ok &= maps.d_myo >= r * (1.3 if large_mm is None else LARGE_PRIMARY_MYO_FACTOR) + cfg.myocardium_margin_mm
    zok = (zc_axis >= zc_axis[0] + r + half_slice) & (zc_axis <= zc_axis[-1] - r - half_slice)
    ok &= zok[:, None, None]
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    k, j, i = np.unravel_index(idx[rng.integers(idx.size)], ok.shape)
    centre = np.array([maps.x_mm[i], maps.y_mm[j], zc_axis[k]]) + rng.uniform(-1, 1, 3) * [maps.sx, maps.sy, 0]
    return r, placement, centre


def place_lesions(anat: Anatomy, grid: Grid, tissue: np.ndarray, rng: np.random.Generator,
                  cfg: C.PhantomConfig, suv_of: dict[int, float],
                  large_primary_mm: float | None = None) -> tuple[list[Lesion], dict]:
    """Add lesions to ``tissue`` (in place) and return them with their true-SUV patches.

    Parameters
    ----------
    anat : Anatomy
    grid : Grid
        The CT grid of ``tissue``.
    tissue : numpy.ndarray
        uint8 tissue codes; lesions and atelectasis are painted into it.
    rng : numpy.random.Generator
        The study's lesion stream.
    cfg : PhantomConfig
    suv_of : dict
        The study's true SUV per tissue code (for the lesion-to-background ratio).
    large_primary_mm : float, optional
        The first primary is a large one of this diameter against the mediastinum (shrunk by
        ``LARGE_PRIMARY_SHRINK`` while no place fits, down to ``cfg.large_primary_diameter_mm[0]``).

    Returns
    -------
    lesions : list of Lesion
    patches : dict
        ``{lesion index: (slices, float32 SUV array, bool mask)}`` true SUV inside each lesion.
    """
    n = int(rng.integers(cfg.n_lesions[0], cfg.n_lesions[1] + 1))
    n_primary = max(1, int(round(n * cfg.primary_fraction * rng.uniform(0.7, 1.3))))
    n_primary = min(n_primary, n, 3)
    kinds = ["primary"] * n_primary + ["node"] * (n - n_primary)
    maps = _distance_maps(grid, tissue)
    zc_axis = maps.z_mm
    taken: list[tuple[np.ndarray, float]] = []
    lesions: list[Lesion] = []
    patches: dict = {}
    stations = list(rng.permutation(NODE_STATIONS))
    half_slice = 0.5 * grid.spacing_xyz_mm[2]
    node_tries = 0
    large = large_primary_mm
    for kind in kinds:
        for _attempt in range(PLACEMENT_TRIES):
            if kind == "primary":
                if large is not None and _attempt and _attempt % 6 == 0:
                    large = max(cfg.large_primary_diameter_mm[0], large * LARGE_PRIMARY_SHRINK)
                drawn = _draw_primary(rng, cfg, maps, half_slice, large)
                if drawn is None:
                    continue
                r, placement, centre = drawn
                station = ""
            else:
                if not stations:
                    stations = list(rng.permutation(NODE_STATIONS))
                station = stations[0]
                diam = rng.uniform(*cfg.node_diameter_mm)
                r = 0.5 * diam
                centre = _station_anchor(anat, station, r, rng) + rng.uniform(-1, 1, 3) * NODE_SEARCH_MM
                placement = "hilar" if station.startswith("10") else "mediastinal"
                node_tries += 1
                if node_tries % NODE_TRIES_PER_STATION == 0:
                    stations.append(stations.pop(0))
            if not (zc_axis[0] + r + half_slice <= centre[2] <= zc_axis[-1] - r - half_slice):
                continue                      # the whole lesion must lie inside the scanned volume
            if any(np.linalg.norm(centre - c) < r + rc + LESION_GAP_MM for c, rc in taken):
                continue
            res = _paint_lesion(anat, grid, tissue, rng, cfg, suv_of, kind, centre, r, placement, station)
            if res is None:
                continue
            lesion, patch = res
            if kind == "node":
                stations.pop(0)
            patches[len(lesions)] = patch
            lesions.append(lesion)
            if kind == "primary":
                large = None                  # only the first primary is the large one
            taken.append((centre, r))
            break
    return lesions, patches


def _paint_lesion(anat, grid, tissue, rng, cfg, suv_of, kind, centre, r, placement, station):
    irregular = PRIMARY_IRREGULARITY if kind == "primary" else NODE_IRREGULARITY
    elong = (1.0, 1.0, 1.0) if kind == "primary" else tuple(rng.uniform(0.85, 1.25, 3))
    sl, ball = _blob(grid, rng, centre, r, irregular, elong)
    if sl is None:
        return None
    sub = tissue[sl]
    hosts = PRIMARY_HOSTS if kind == "primary" else NODE_HOSTS
    mask = ball & np.isin(sub, hosts)
    voxel_mm3 = float(np.prod(grid.spacing_xyz_mm))
    nominal = max(float(ball.sum()), 4.0 / 3.0 * np.pi * r**3 * float(np.prod(elong)) / voxel_mm3)
    if mask.sum() < MIN_PAINTED_FRACTION * nominal:
        return None
    # clearance from the myocardium (and, for nodes, from blood) around the lesion
    margin = cfg.myocardium_margin_mm
    near = ellipsoid(grid, centre, np.asarray(elong) * r * (1 + irregular) + margin)
    if near is not None and np.any(tissue[near[0]][near[1]] == C.MYOCARDIUM):
        return None
    if kind == "node":
        nb = ellipsoid(grid, centre, np.asarray(elong) * r * (1 + irregular) + cfg.blood_margin_mm)
        if nb is not None and np.any(np.isin(tissue[nb[0]][nb[1]], WARM_NEIGHBOURS)):
            return None
        no = ellipsoid(grid, centre, np.asarray(elong) * r * (1 + irregular) + cfg.oesophagus_margin_mm)
        if no is not None and np.any(np.isin(tissue[no[0]][no[1]], OESOPHAGUS_NEIGHBOUR)):
            return None
    # keep the biggest connected piece only (clipping can split a blob)
    lab, nlab = ndimage.label(mask)
    if nlab > 1:
        sizes = ndimage.sum(mask, lab, index=np.arange(1, nlab + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    # true SUV: a hot spot inside the lesion, falling off to the rim, optional necrotic core
    z, y, x = grid.coords(sl)
    host_bg = max(suv_of[C.LUNG], suv_of[C.MED_FAT]) if kind == "node" else suv_of[C.LUNG]
    blood = suv_of[C.GREAT_VESSEL]
    lo, hi = cfg.primary_peak_suv if kind == "primary" else cfg.node_peak_suv
    near_blood = kind == "node" or placement == "mediastinal"
    lo = max(lo, cfg.lesion_to_background_min * max(host_bg, blood if near_blood else host_bg))
    peak = float(rng.uniform(lo, max(lo, hi)))
    rim = rng.uniform(*(PRIMARY_RIM_FRACTION if kind == "primary" else NODE_RIM_FRACTION))
    necrotic = kind == "primary" and 2 * r >= NECROSIS_MIN_DIAMETER_MM and rng.random() < NECROSIS_PROBABILITY
    offset = rng.normal(size=3)
    offset *= rng.uniform(0.15, 0.35 if not necrotic else 0.55) * r / np.linalg.norm(offset)
    hot = np.asarray(centre) + offset
    d_hot2 = (x - hot[0]) ** 2 + (y - hot[1]) ** 2 + (z - hot[2]) ** 2
    prof = rim + (1 - rim) * np.exp(-d_hot2 / (2 * (0.6 * r) ** 2))
    if necrotic:
        d_c2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
        core = np.clip(1.0 - np.sqrt(d_c2) / (0.45 * r), 0, 1)
        prof = prof * (1 - (1 - rng.uniform(*NECROSIS_FACTOR)) * core)
    suv = (peak * prof / prof[mask].max()).astype(np.float32) * mask
    # the report point: the voxel of highest true SUV
    kk, jj, ii = np.unravel_index(int(np.argmax(np.where(mask, suv, -1))), mask.shape)
    hot_idx = (sl[0].start + kk, sl[1].start + jj, sl[2].start + ii)
    hot_mm = grid.point_of(hot_idx)
    if kind == "primary":
        side, lobe = _lobe(anat, np.asarray(centre))
        lobe_text = f"{side} {lobe}"
        text = f"primary tumour, {lobe_text}"
        if placement == "chest_wall":
            text += ", abutting the chest wall"
        elif placement == "mediastinal":
            text += ", abutting the mediastinum"
    else:
        lobe_text = ""
        text = f"node, station {station}"
    code = C.TUMOUR if kind == "primary" else C.NODE
    sub[mask] = code
    size_mm = longest_diameter_mm(mask, grid.spacing_xyz_mm) if kind == "primary" else 0.0
    if kind == "primary":
        text += f", {size_mm:.0f} mm"
    lesion = Lesion(kind=kind, text=text, centre_mm=np.asarray(centre, float), hot_spot_mm=hot_mm,
                    diameter_mm=2 * r, peak_suv=peak, n_voxels=int(mask.sum()), placement=str(placement),
                    station=station, lobe=lobe_text, necrotic=bool(necrotic), size_mm=size_mm)
    if kind == "primary" and rng.random() < cfg.atelectasis_probability:
        lesion.atelectasis_voxels = _atelectasis(anat, grid, tissue, rng, cfg, np.asarray(centre), r)
        if lesion.atelectasis_voxels:
            lesion.text += ", with distal atelectasis"
    return lesion, (sl, suv, mask)


def longest_diameter_mm(mask: np.ndarray, spacing_xyz_mm) -> float:
    """Largest distance (mm) between two voxel centres of ``mask`` plus one voxel (its longest diameter)."""
    sp = np.asarray(spacing_xyz_mm, float)[::-1]
    edge = mask & ~ndimage.binary_erosion(mask)
    pts = np.argwhere(edge) * sp
    if len(pts) < 2:
        return float(sp.max()) if mask.any() else 0.0
    try:
        pts = pts[ConvexHull(pts).vertices]
    except QhullError:                      # flat (one slice): all boundary points
        pass
    return float(pdist(pts).max() + sp.min())


def _atelectasis(anat, grid, tissue, rng, cfg, centre, r) -> int:
    """Collapsed lung beside a tumour, on its side away from the hilum (soft-tissue HU, low uptake)."""
    side = "right" if centre[0] < anat.cx else "left"
    u = centre - anat.hilum[side]
    u[2] *= ATELECTASIS_VERTICAL_WEIGHT        # mostly in-plane, so it lies beside the tumour on its slices
    u /= np.linalg.norm(u)
    length = rng.uniform(*cfg.atelectasis_length_mm)
    c = centre + u * (ATELECTASIS_OVERLAP * r + 0.5 * length)
    ref = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    v = np.cross(u, ref)
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    semi = np.array([0.5 * length, ATELECTASIS_WIDTH[0] * r, ATELECTASIS_WIDTH[1] * r])
    shp = ellipsoid(grid, c, semi, np.stack([u, v, w]))
    if shp is None:
        return 0
    sl, m = shp
    sub = tissue[sl]
    m = m & np.isin(sub, PRIMARY_HOSTS)
    near = ellipsoid(grid, c, semi + cfg.myocardium_margin_mm, np.stack([u, v, w]))
    if near is not None and np.any(tissue[near[0]][near[1]] == C.MYOCARDIUM):
        return 0
    voxel_ml = float(np.prod(grid.spacing_xyz_mm)) / 1000.0
    if m.sum() * voxel_ml < ATELECTASIS_MIN_ML:
        return 0
    sub[m] = C.ATELECTASIS
    return int(m.sum())
