"""From tissue codes to images: CT numbers with noise, true SUV, and the PET a scanner would report."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.anatomy import Anatomy
from colearn_pipeline.phantom.geometry import Grid

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
LUNG_TEXTURE_SCALE_MM = 12.0     # correlation length of the lung density texture
BLOOD_TISSUES = (C.HEART_BLOOD, C.GREAT_VESSEL, C.LUNG_VESSEL, C.ABD_VESSEL)


def tissue_values(rng: np.random.Generator, cfg: C.PhantomConfig,
                  extra_rng: np.random.Generator | None = None,
                  disease_rng: np.random.Generator | None = None) -> tuple[dict[int, float], dict[int, float]]:
    """Draw the study's CT number and true SUV of every tissue.

    Blood has one SUV (heart chambers, great and lung vessels); lesion SUVs are drawn per lesion.
    The tissues outside the thorax (brain, kidney, urine) are drawn from ``extra_rng`` (default
    ``rng``, after the others), so adding them left every thorax study's draws as they were; the
    diseased-lung tissues (pleural fluid) from ``disease_rng`` (default ``extra_rng``).

    Returns
    -------
    hu_of, suv_of : dict
        ``{tissue code: value}``.
    """
    hu_of = {k: float(rng.uniform(*cfg.tissue_hu[k])) for k in range(C.N_THORAX_TISSUES)}
    suv_of = {k: float(rng.uniform(*cfg.tissue_suv[k])) for k in range(C.N_THORAX_TISSUES)}
    extra = rng if extra_rng is None else extra_rng
    for k in range(C.N_THORAX_TISSUES, C.N_BODY_TISSUES):
        hu_of[k] = float(extra.uniform(*cfg.tissue_hu[k]))
        suv_of[k] = float(extra.uniform(*cfg.tissue_suv[k]))
    disease = extra if disease_rng is None else disease_rng
    for k in range(C.N_BODY_TISSUES, C.N_TISSUES):
        hu_of[k] = float(disease.uniform(*cfg.tissue_hu[k]))
        suv_of[k] = float(disease.uniform(*cfg.tissue_suv[k]))
    blood_hu, blood_suv = hu_of[C.HEART_BLOOD], suv_of[C.HEART_BLOOD]
    for k in BLOOD_TISSUES:
        hu_of[k], suv_of[k] = blood_hu, blood_suv
    return hu_of, suv_of


def _lut(values: dict[int, float]) -> np.ndarray:
    lut = np.zeros(C.N_TISSUES, np.float32)
    for k, v in values.items():
        lut[k] = v
    return lut


def labels_from_tissue(tissue: np.ndarray) -> np.ndarray:
    """Truth labels (uint8: 0 background, 1 lung, 2 mediastinum, 3 tumour) of a tissue volume."""
    lut = np.zeros(C.N_TISSUES, np.uint8)
    for k, v in C.LABEL_OF_TISSUE.items():
        lut[k] = v
    return lut[tissue]


def _unit_noise(rng: np.random.Generator, shape, sigma_vox: float) -> np.ndarray:
    """In-plane correlated gaussian noise of unit standard deviation (float32)."""
    n = rng.standard_normal(size=shape, dtype=np.float32)
    if sigma_vox <= 0:
        return n
    sig = (0.0, sigma_vox, sigma_vox)
    ndimage.gaussian_filter(n, sig, output=n, mode="wrap")
    delta = np.zeros((1, 33, 33), np.float32)
    delta[0, 16, 16] = 1.0
    k = ndimage.gaussian_filter(delta, sig, mode="constant")
    n /= np.float32(np.sqrt(float((k.astype(np.float64) ** 2).sum())))
    return n


def ct_hu(tissue: np.ndarray, grid: Grid, anat: Anatomy, hu_of: dict[int, float], rng: np.random.Generator,
          cfg: C.PhantomConfig, noise_sd_hu: float) -> np.ndarray:
    """CT numbers (int16 HU) with a dependent-lung gradient, partial volume and correlated noise."""
    hu = _lut(hu_of)[tissue]
    # lung density rises towards the dependent (posterior) lung, with a smooth random texture
    lung = tissue == C.LUNG
    y = grid.axis_mm("y")
    y_ant, y_post = anat.y_sternum, anat.y_vb + anat.vb_r
    grad = (np.clip((y - y_ant) / (y_post - y_ant), 0, 1) * cfg.lung_dependent_gradient_hu).astype(np.float32)
    hu += np.where(lung, grad[None, :, None], np.float32(0))
    nz, ny, nx = tissue.shape
    step = LUNG_TEXTURE_SCALE_MM / np.array(grid.spacing_xyz_mm[:2])
    cy_n, cx_n = (max(2, int(ny / step[1]) + 2), max(2, int(nx / step[0]) + 2))
    tex = rng.standard_normal((nz, cy_n, cx_n)).astype(np.float32)
    tex = ndimage.gaussian_filter(tex, (LUNG_TEXTURE_SCALE_MM / grid.spacing_xyz_mm[2], 0.7, 0.7), mode="wrap")
    tex *= np.float32(cfg.lung_texture_hu / max(float(tex.std()), 1e-6))
    wy = _interp_matrix(np.arange(cy_n, dtype=float), np.linspace(0, cy_n - 1, ny))
    wx = _interp_matrix(np.arange(cx_n, dtype=float), np.linspace(0, cx_n - 1, nx))
    for k in range(nz):
        if lung[k].any():
            hu[k] += np.where(lung[k], wy @ tex[k] @ wx.T, np.float32(0))
    pv = cfg.ct_partial_volume_mm / np.array(grid.spacing_xyz_mm[:2])
    ndimage.gaussian_filter(hu, (0.0, pv[1], pv[0]), output=hu)
    hu += np.float32(noise_sd_hu) * _unit_noise(rng, hu.shape, cfg.ct_noise_corr_voxels)
    lo, hi = C.CT_HU_RANGE
    return np.clip(np.rint(hu), lo, hi).astype(np.int16)


def true_suv(tissue: np.ndarray, suv_of: dict[int, float], patches: dict) -> np.ndarray:
    """Noise-free, unblurred SUV on the tissue grid (float32), lesions pasted in."""
    suv = _lut(suv_of)[tissue]
    for sl, patch, mask in patches.values():
        sub = suv[sl]
        sub[mask] = patch[mask]
    return suv


def _interp_matrix(src_axis: np.ndarray, dst_axis: np.ndarray) -> np.ndarray:
    """Linear-interpolation weights (dst x src) from one regular axis to another; 0 outside."""
    step = src_axis[1] - src_axis[0]
    f = (dst_axis - src_axis[0]) / step
    w = np.zeros((dst_axis.size, src_axis.size), np.float32)
    i0 = np.floor(f).astype(int)
    a = (f - i0).astype(np.float32)
    for idx, wt in ((i0, 1 - a), (i0 + 1, a)):
        ok = (idx >= 0) & (idx < src_axis.size)
        w[np.flatnonzero(ok), idx[ok]] += wt[ok]
    return w


def pet_psf(suv_ct: np.ndarray, ct_grid: Grid, pet_grid: Grid, cfg: C.PhantomConfig) -> np.ndarray:
    """Noise-free PET on the PET grid (float32): true SUV averaged over PET voxels, blurred by the PSF.

    The PSF is a gaussian of ``cfg.psf_fwhm_mm`` FWHM; PET slices coincide with CT slices.
    """
    dx_ct = ct_grid.spacing_xyz_mm[0]
    dx_pet = pet_grid.spacing_xyz_mm[0]
    f = max(1, int(np.floor(dx_pet / (2.0 * dx_ct))))
    nz, ny, nx = suv_ct.shape
    ny_f, nx_f = ny // f, nx // f
    inter = suv_ct[:, : ny_f * f, : nx_f * f].reshape(nz, ny_f, f, nx_f, f).mean(axis=(2, 4), dtype=np.float32)
    dx_int = dx_ct * f
    sigma_mm = cfg.psf_fwhm_mm / FWHM_PER_SIGMA
    sigma_xy = np.sqrt(sigma_mm**2 + max(dx_pet**2 - dx_int**2, 0.0) / 12.0) / dx_int
    sigma_z = sigma_mm / ct_grid.spacing_xyz_mm[2]
    ndimage.gaussian_filter(inter, (sigma_z, sigma_xy, sigma_xy), output=inter, mode="nearest")
    x_int = ct_grid.axis_mm("x")[: nx_f * f].reshape(nx_f, f).mean(axis=1)
    y_int = ct_grid.axis_mm("y")[: ny_f * f].reshape(ny_f, f).mean(axis=1)
    wx = _interp_matrix(x_int, pet_grid.axis_mm("x"))
    wy = _interp_matrix(y_int, pet_grid.axis_mm("y"))
    return np.einsum("py,zyx,qx->zpq", wy, inter, wx, optimize=True).astype(np.float32)


def add_pet_noise(pet_clean: np.ndarray, rng: np.random.Generator, cfg: C.PhantomConfig,
                  noise_cv: float) -> np.ndarray:
    """The PET a scanner reports: activity-dependent, spatially correlated noise, clipped at 0.

    The noise sd is ``noise_cv * sqrt(SUV + floor**2)`` (SUV units), correlated by a gaussian of
    ``cfg.pet_noise_corr_voxels`` PET voxels.
    """
    pet = pet_clean.copy()
    sd = np.float32(noise_cv) * np.sqrt(np.clip(pet, 0, None) + np.float32(cfg.pet_noise_floor_suv**2))
    pet += sd * _unit_noise(rng, pet.shape, cfg.pet_noise_corr_voxels)
    np.clip(pet, 0, None, out=pet)
    return pet


def recovery_leaks(pet_clean: np.ndarray, pet_grid: Grid, seeds_mm: list[np.ndarray],
                   allowed: list[tuple[np.ndarray, float]], fraction: float) -> list[int]:
    """Indices of the lesions whose ``fraction``-of-peak connected region leaks out of the lesions.

    Parameters
    ----------
    pet_clean : numpy.ndarray
        Noise-free PET (SUV) on ``pet_grid``.
    seeds_mm : list of array
        Report position of each lesion (LPS, mm).
    allowed : list of (centre_mm, radius_mm)
        Balls covering each lesion and its PSF blur; a region may span several of them.
    fraction : float
        Threshold as a fraction of the local peak next to the seed (0.4 in the paper).
    """
    z, y, x = (pet_grid.axis_mm(a) for a in "zyx")
    ok = np.zeros(pet_clean.shape, bool)
    for c, rad in allowed:
        ok |= ((z[:, None, None] - c[2]) ** 2 + (y[None, :, None] - c[1]) ** 2
               + (x[None, None, :] - c[0]) ** 2) <= rad * rad
    leaking = []
    for i, seed in enumerate(seeds_mm):
        k, j, m = pet_grid.index_of(seed)
        near = pet_clean[max(0, k - 1): k + 2, max(0, j - 1): j + 2, max(0, m - 1): m + 2]
        cc, _ = ndimage.label(pet_clean >= fraction * float(near.max()))
        region = cc == cc[k, j, m]
        if cc[k, j, m] == 0 or np.any(region & ~ok):
            leaking.append(i)
    return leaking
