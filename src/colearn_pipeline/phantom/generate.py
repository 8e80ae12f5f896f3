"""Generating one phantom study and whole cohorts (deterministic from a seed, written atomically)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from colearn_pipeline.dicom.pseudonym import pseudonymise
from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.anatomy import rasterise, sample_anatomy
from colearn_pipeline.phantom.dicomio import (
    StudyHeader,
    archive_options,
    ds_str,
    encode_pet,
    uid,
    write_clutter,
    write_ct,
    write_pet,
)
from colearn_pipeline.phantom.disease import (
    CONSOLIDATION,
    EFFUSION,
    LARGE_PRIMARY,
    disease_kinds,
    paint_consolidation,
    paint_effusion,
)
from colearn_pipeline.phantom.geometry import Grid
from colearn_pipeline.phantom.imaging import (
    add_pet_noise,
    ct_hu,
    labels_from_tissue,
    pet_psf,
    recovery_leaks,
    tissue_values,
    true_suv,
)
from colearn_pipeline.phantom.lesions import place_lesions
from colearn_pipeline.phantom.wholebody import (
    NON_THORAX_ABOVE_ILIAC_MM,
    body_levels,
    rasterise_body,
    sample_body,
    thorax_slices,
)

log = logging.getLogger(__name__)

OWNED_DIRS = ("dicom", "reports", "phantom_truth")
COHORT_FILE = "phantom_cohort.json"
OWNER_MARKER = ".colearn-phantom"   # file at the cohort root: the phantom owns its folders
STUDY_DATE_RANGE = (dt.datetime(2015, 1, 5), dt.datetime(2019, 12, 20))
CT_START_HOURS = (8.0, 16.0)
CT_TO_PET_MIN = (2.0, 6.0)
AGE_YEARS = (42, 86)
SLICE_POSITION_START_MM = (-420.0, -300.0)
SECONDS_PER_MINUTE = 60.0
FIRST_NAMES = ("ALEX", "SAM", "JORDAN", "ROBIN", "CHRIS", "TAYLOR", "MORGAN", "JAMIE", "CASEY", "DREW",
               "KIM", "LEE", "PAT", "RENE", "SASHA", "TONI")
LAST_NAMES = ("PHANTOM", "SYNTHETIC", "TESTCASE", "MOCKPATIENT", "DUMMY", "SIMULA")
# Stream order of a study's random generators (never reorder: it would change every cohort).
#: A lesion's allowed 40 %-region radius: this x its nominal radius (irregular, elongated) + one PSF FWHM.
RECOVERY_SHAPE_SLACK = 1.4
STREAMS = ("patient", "anatomy", "lesions", "ct_noise", "pet_noise", "files", "wholebody", "disease")
#: Patient z (mm) of the lowest slice (mid-thigh) of a whole-body or non-thorax study.
WHOLEBODY_START_MM = (-1100.0, -950.0)
#: Field-of-view kinds (:func:`field_of_view`).
THORAX, WHOLEBODY, NON_THORAX = "thorax", "wholebody", "non_thorax"
#: BodyPartExamined of a whole-body study (a thorax study leaves it blank, as many scanners do).
WHOLEBODY_BODY_PART = "WHOLEBODY"


def study_streams(seed: int, index: int) -> dict[str, np.random.Generator]:
    """The independent random streams of study ``index`` in a cohort with ``seed``."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(index),))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, ss.spawn(len(STREAMS)))}


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_nifti(path: Path, vol: np.ndarray, grid: Grid) -> None:
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(tuple(float(v) for v in grid.spacing_xyz_mm))
    img.SetOrigin(tuple(float(v) for v in grid.origin_xyz_mm))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    tmp = path.with_name(".part-" + path.name)
    sitk.WriteImage(img, str(tmp), useCompression=True)
    os.replace(tmp, path)


def _hex(rng: np.random.Generator, digits: int = 16) -> str:
    return "".join(f"{b:02X}" for b in rng.integers(0, 256, size=digits // 2))


def _round_grid(shape, spacing, origin) -> Grid:
    # the grid must be exactly what the DICOM header says, so round through the DS strings
    return Grid(tuple(int(s) for s in shape), tuple(float(ds_str(s)) for s in spacing),
                tuple(float(ds_str(o)) for o in origin))


def _pet_with_recoverable_lesions(suv_ct, ct_grid, pet_grid, cfg, lesions, patches) -> np.ndarray:
    """Noise-free PET; lesions whose 40 %-of-peak region would leak into other structures get more uptake.

    A lesion's true SUV is raised by ``cfg.recovery_boost`` (at most ``cfg.recovery_max_boosts``
    times) until ``cfg.recovery_fraction``-of-peak connected thresholding from its report position,
    on the blurred noise-free PET, stays within the lesions (each grown by one PSF FWHM).
    """
    pet_clean = pet_psf(suv_ct, ct_grid, pet_grid, cfg)
    seeds = [les.hot_spot_mm for les in lesions]
    allowed = [(les.centre_mm, 0.5 * les.diameter_mm * RECOVERY_SHAPE_SLACK + cfg.psf_fwhm_mm) for les in lesions]
    for _ in range(cfg.recovery_max_boosts):
        leaking = recovery_leaks(pet_clean, pet_grid, seeds, allowed, cfg.recovery_fraction)
        if not leaking:
            break
        for i in leaking:
            sl, patch, mask = patches[i]
            patch *= np.float32(cfg.recovery_boost)
            suv_ct[sl][mask] = patch[mask]
            lesions[i].peak_suv *= cfg.recovery_boost
            lesions[i].extra["uptake_boosts"] = lesions[i].extra.get("uptake_boosts", 0) + 1
        pet_clean = pet_psf(suv_ct, ct_grid, pet_grid, cfg)
    return pet_clean


@dataclasses.dataclass(frozen=True)
class _Patient:
    """A study's synthetic patient, dose and times (drawn from the ``patient`` stream)."""

    sex: str
    weight_ds: str
    height_ds: str
    dose_ds: str
    ct_start: dt.datetime
    pet_start: dt.datetime
    injection: dt.datetime
    age: int
    birth: dt.datetime
    frame_s: float
    counts_per_bqml: float


def _sample_patient(pr: np.random.Generator, cfg: C.PhantomConfig) -> tuple[_Patient, float, float]:
    """Patient, injected dose, scan times and PET frame of one study, with weight (kg) and height (m)."""
    sex = "F" if pr.random() < 0.45 else "M"
    lo_h, hi_h = cfg.height_m
    height = float(np.clip(pr.normal(1.64 if sex == "F" else 1.77, 0.07), lo_h, hi_h))
    weight = float(np.clip(height**2 * pr.uniform(19.0, 33.0), *cfg.weight_kg))
    weight_ds, height_ds = f"{weight:.1f}", f"{height:.2f}"
    dose_ds = ds_str(round(float(weight_ds) * pr.uniform(*cfg.dose_mbq_per_kg) * 1e6, -5))
    span = (STUDY_DATE_RANGE[1] - STUDY_DATE_RANGE[0]).days
    day = STUDY_DATE_RANGE[0] + dt.timedelta(days=int(pr.integers(0, span)))
    ct_start = day + dt.timedelta(seconds=int(pr.uniform(*CT_START_HOURS) * 3600))
    pet_start = ct_start + dt.timedelta(seconds=int(pr.uniform(*CT_TO_PET_MIN) * SECONDS_PER_MINUTE))
    injection = pet_start - dt.timedelta(seconds=int(pr.uniform(*cfg.uptake_min) * SECONDS_PER_MINUTE))
    age = int(pr.integers(*AGE_YEARS))
    birth = day - dt.timedelta(days=int(age * 365.25 + pr.integers(0, 365)))
    frame_s = float(round(pr.uniform(*cfg.pet_frame_duration_s)))
    counts_per_bqml = float(pr.uniform(*cfg.philips_counts_per_bqml))
    return _Patient(sex, weight_ds, height_ds, dose_ds, ct_start, pet_start, injection, age, birth, frame_s,
                    counts_per_bqml), weight, height


def _sample_grids(pr: np.random.Generator, geo) -> tuple[Grid, Grid, tuple[float, float]]:
    """CT and PET grids of one study (they share slice positions and the in-plane centre), and the
    first and last slice positions (mm)."""
    n_slices = int(pr.integers(geo.n_slices[0], geo.n_slices[1] + 1))
    dz = geo.slice_thickness_mm
    z0 = round(float(pr.uniform(*SLICE_POSITION_START_MM)), 1)
    dx_ct = round(float(pr.uniform(*geo.ct_fov_mm)) / geo.ct_matrix, 6)
    ct_grid = _round_grid((n_slices, geo.ct_matrix, geo.ct_matrix), (dx_ct, dx_ct, dz),
                          (-(geo.ct_matrix - 1) / 2 * dx_ct, -(geo.ct_matrix - 1) / 2 * dx_ct, z0))
    dxp = geo.pet_spacing_mm
    pet_grid = _round_grid((n_slices, geo.pet_matrix, geo.pet_matrix), (dxp, dxp, dz),
                           (-(geo.pet_matrix - 1) / 2 * dxp, -(geo.pet_matrix - 1) / 2 * dxp, z0))
    return ct_grid, pet_grid, (z0, z0 + (n_slices - 1) * dz)


def _paint_disease(rngs, cfg: C.PhantomConfig, anat, grid: Grid, tissue: np.ndarray, kinds: tuple[str, ...]):
    """Consolidation and effusion painted into ``tissue``; the large primary's diameter (or None) and
    the truth's ``disease`` entry. Every draw from the ``disease`` stream."""
    dr = rngs["disease"]
    info: dict[str, Any] = {"kinds": list(kinds)}
    large = float(dr.uniform(*cfg.large_primary_diameter_mm)) if LARGE_PRIMARY in kinds else None
    if CONSOLIDATION in kinds:
        info["consolidation"] = paint_consolidation(anat, grid, tissue, dr, cfg)
    if EFFUSION in kinds:
        info["effusion"] = paint_effusion(anat, grid, tissue, dr, cfg)
    return large, info


def _simulate_images(rngs, cfg: C.PhantomConfig, ct_grid: Grid, pet_grid: Grid, z_range_mm: tuple[float, float],
                     weight: float, height: float, disease: tuple[str, ...] = ()) -> dict[str, Any]:
    """Anatomy, lesions (and the study's ``disease``), truth labels, CT in HU and noisy PET in SUV of one study."""
    z0, z1 = z_range_mm
    anat = sample_anatomy(rngs["anatomy"], z0, z1, weight, height)
    tissue = rasterise(anat, ct_grid)
    hu_of, suv_of = tissue_values(rngs["lesions"], cfg, rngs["wholebody"], rngs["disease"])
    large, disease_info = _paint_disease(rngs, cfg, anat, ct_grid, tissue, disease)
    lesions, patches = place_lesions(anat, ct_grid, tissue, rngs["lesions"], cfg, suv_of, large_primary_mm=large)
    labels = labels_from_tissue(tissue)
    ct_noise = float(rngs["ct_noise"].uniform(*cfg.ct_noise_hu))
    hu = ct_hu(tissue, ct_grid, anat, hu_of, rngs["ct_noise"], cfg, ct_noise)
    suv_ct = true_suv(tissue, suv_of, patches)
    del tissue
    pet_clean = _pet_with_recoverable_lesions(suv_ct, ct_grid, pet_grid, cfg, lesions, patches)
    del suv_ct
    pet_cv = float(rngs["pet_noise"].uniform(*cfg.pet_noise_cv))
    pet_suv = add_pet_noise(pet_clean, rngs["pet_noise"], cfg, pet_cv)
    return {"lesions": lesions, "labels": labels, "hu": hu, "pet_suv": pet_suv, "suv_of": suv_of,
            "ct_noise": ct_noise, "pet_cv": pet_cv, "disease": disease_info}


def field_of_view(cfg: C.PhantomConfig, index: int) -> str:
    """What study ``index`` covers: :data:`THORAX`, :data:`WHOLEBODY` or :data:`NON_THORAX` (which wins)."""
    for every, kind in ((cfg.non_thorax_every, NON_THORAX), (cfg.wholebody_every, WHOLEBODY)):
        if every and index % every == every - 1:
            return kind
    return THORAX


@dataclasses.dataclass(frozen=True)
class _BodyPlan:
    """Where a whole-body or non-thorax study is simulated (``sim_*``) and which slices CT and PET keep."""

    kind: str
    levels: dict
    sim_ct: Grid
    sim_pet: Grid
    ct_slices: slice
    pet_slices: slice
    pet_vs_ct: str          # "same", "pet_shorter_feet" or "pet_longer_feet"


def _crop_z(grid: Grid, keep: slice) -> Grid:
    n = keep.stop - keep.start
    z = grid.origin_xyz_mm[2] + keep.start * grid.spacing_xyz_mm[2]
    return _round_grid((n, *grid.shape_zyx[1:]), grid.spacing_xyz_mm, (*grid.origin_xyz_mm[:2], z))


def _plan_body(wr: np.random.Generator, cfg: C.PhantomConfig, kind: str, thorax_ct: Grid, thorax_pet: Grid) -> _BodyPlan:
    """Levels, simulation grids (``cfg.wholebody_slice_factor`` times the preset's slice spacing) and the
    CT and PET slice ranges: a whole-body PET one bed shorter or longer than the CT at the feet, a
    non-thorax study the pelvis and thighs only."""
    dz = float(ds_str(cfg.geometry.slice_thickness_mm * cfg.wholebody_slice_factor))
    thorax_height = (thorax_ct.shape_zyx[0] - 1) * thorax_ct.spacing_xyz_mm[2]
    levels = body_levels(wr, round(float(wr.uniform(*WHOLEBODY_START_MM)), 1), thorax_height)
    n = int(np.floor((levels["z_top"] - levels["z_bottom"]) / dz)) + 1

    def sim(g: Grid) -> Grid:
        return _round_grid((n, *g.shape_zyx[1:]), (*g.spacing_xyz_mm[:2], dz), (*g.origin_xyz_mm[:2], levels["z_bottom"]))

    sim_ct, sim_pet = sim(thorax_ct), sim(thorax_pet)
    if kind == NON_THORAX:
        k_hi = int(np.floor((levels["z_iliac"] + NON_THORAX_ABOVE_ILIAC_MM - levels["z_bottom"]) / dz)) + 1
        return _BodyPlan(kind, levels, sim_ct, sim_pet, slice(0, k_hi), slice(0, k_hi), "same")
    bed = int(round(cfg.pet_length_difference_beds * cfg.pet_bed_length_mm / dz))
    if wr.random() < 0.5:
        return _BodyPlan(kind, levels, sim_ct, sim_pet, slice(0, n), slice(bed, n), "pet_shorter_feet")
    return _BodyPlan(kind, levels, sim_ct, sim_pet, slice(bed, n), slice(0, n), "pet_longer_feet")


def _simulate_body(rngs, cfg: C.PhantomConfig, plan: _BodyPlan, weight: float, height: float) -> dict[str, Any]:
    """:func:`_simulate_images` for a whole-body or non-thorax study: simulated on the union of the CT
    and PET lengths, then cut to each; truth labels only on the thorax slices; the report's pelvic node."""
    anat = sample_anatomy(rngs["anatomy"], plan.levels["z0"], plan.levels["z1"], weight, height)
    body = sample_body(rngs["wholebody"], anat, plan.levels)
    tissue = rasterise_body(anat, body, plan.sim_ct)
    hu_of, suv_of = tissue_values(rngs["lesions"], cfg, rngs["wholebody"], rngs["disease"])
    lesions, patches = [], {}
    if plan.kind == WHOLEBODY:
        lesions, patches = place_lesions(anat, plan.sim_ct, tissue, rngs["lesions"], cfg, suv_of)
    labels = labels_from_tissue(tissue)
    labels[~thorax_slices(body, plan.sim_ct)] = 0      # truth: lungs, mediastinum, tumours of the thorax only
    ct_noise = float(rngs["ct_noise"].uniform(*cfg.ct_noise_hu))
    hu = ct_hu(tissue, plan.sim_ct, anat, hu_of, rngs["ct_noise"], cfg, ct_noise)[plan.ct_slices]
    suv_ct = true_suv(tissue, suv_of, patches)
    del tissue
    pet_clean = _pet_with_recoverable_lesions(suv_ct, plan.sim_ct, plan.sim_pet, cfg, lesions, patches)[plan.pet_slices]
    del suv_ct
    pet_cv = float(rngs["pet_noise"].uniform(*cfg.pet_noise_cv))
    pet_suv = add_pet_noise(pet_clean, rngs["pet_noise"], cfg, pet_cv)
    node, diameter = body.pelvic_node
    side = "left" if node[0] > anat.cx else "right"   # LPS: +x is the patient's left
    outside = [{"text": f"FDG-avid {side} external iliac lymph node, {diameter:.0f} mm", "kind": "node",
                "position_mm": [round(float(v), 2) for v in node], "region": "pelvis"}]
    return {"lesions": lesions, "labels": labels[plan.ct_slices], "hu": hu, "pet_suv": pet_suv, "suv_of": suv_of,
            "ct_noise": ct_noise, "pet_cv": pet_cv, "findings_outside_thorax": outside}


def _study_header(fr: np.random.Generator, cfg: C.PhantomConfig, seed: int, index: int, patient: _Patient,
                  vendor: str, time_style: str) -> StudyHeader:
    """Deterministic UIDs and a synthetic patient identity for the DICOM headers."""
    uid_seed = (cfg.size, int(seed), int(index))
    return StudyHeader(
        patient_name=f"{LAST_NAMES[int(fr.integers(len(LAST_NAMES)))]}^{FIRST_NAMES[int(fr.integers(len(FIRST_NAMES)))]}",
        patient_id=f"PH{int(fr.integers(10**6, 10**7))}", birth_date=patient.birth.strftime("%Y%m%d"),
        sex=patient.sex, age_years=patient.age, weight_kg_ds=patient.weight_ds, height_m_ds=patient.height_ds,
        study_uid=uid(*uid_seed, "study"), frame_uid=uid(*uid_seed, "frame"),
        ct_series_uid=uid(*uid_seed, "ct-series"), pet_series_uid=uid(*uid_seed, "pet-series"),
        study_id=str(int(fr.integers(1000, 99999))), accession=f"A{int(fr.integers(10**7, 10**8))}",
        ct_start=patient.ct_start, pet_start=patient.pet_start, injection=patient.injection,
        dose_bq_ds=patient.dose_ds, vendor=vendor, time_style=time_style, frame_duration_s=patient.frame_s,
        bed_length_mm=cfg.pet_bed_length_mm, counts_per_bqml=patient.counts_per_bqml, uid_seed=uid_seed,
    )


def _write_dicom(out: Path, fr: np.random.Generator, cfg: C.PhantomConfig, index: int, hu: np.ndarray,
                 ct_grid: Grid, pet: tuple, pet_grid: Grid, header: StudyHeader) -> tuple[str, int]:
    """Write the CT and PET series (random file names, one folder or two) and any archive clutter.

    ``pet`` is ``(pixels, slopes, pet_info)`` from :func:`encode_pet`. Returns the study's DICOM
    folder relative to ``out`` and its number of files.
    """
    pixels, slopes, pet_info = pet
    n_slices = ct_grid.shape_zyx[0]
    study_dir = f"dicom/{_hex(fr, 8)}"
    same_folder = bool(fr.random() < 0.5)
    ext = ".dcm" if fr.random() < 0.67 else ""
    ct_dir = out / study_dir if same_folder else out / study_dir / _hex(fr, 8)
    pet_dir = out / study_dir if same_folder else out / study_dir / _hex(fr, 8)
    names: set[str] = set()

    def fresh() -> str:
        while True:
            name = _hex(fr, 16) + ext
            if name not in names:
                names.add(name)
                return name

    ct_paths = [ct_dir / fresh() for _ in range(n_slices)]
    pet_paths = [pet_dir / fresh() for _ in range(pet_grid.shape_zyx[0])]
    ct_dir.mkdir(parents=True, exist_ok=True)
    pet_dir.mkdir(parents=True, exist_ok=True)
    # archive realism (DICOM): transfer syntax, enhanced objects and clutter, by study index
    header = dataclasses.replace(header, **archive_options(cfg, index))
    write_ct(ct_paths, hu, ct_grid, header)
    write_pet(pet_paths, pixels, slopes, pet_grid, header, pet_info)
    if cfg.archive_clutter_every and index % cfg.archive_clutter_every == cfg.archive_clutter_every - 1:
        write_clutter(out / study_dir / _hex(fr, 8), hu, ct_grid, pixels, slopes, pet_grid, header, pet_info, fresh)
    return study_dir, sum(1 for p in (out / study_dir).rglob("*") if p.is_file())


def _grid_json(grid: Grid) -> dict[str, list]:
    return {"shape_zyx": list(grid.shape_zyx), "spacing_xyz_mm": list(grid.spacing_xyz_mm),
            "origin_xyz_mm": list(grid.origin_xyz_mm)}


def _truth_json(*, pseudonym: str, index: int, seed: int, cfg: C.PhantomConfig, conv: str, vendor: str,
                time_style: str, header: StudyHeader, pet_info: dict, patient: _Patient, images: dict,
                ct_grid: Grid, pet_grid: Grid, study_dir: str, report_rel: str) -> dict[str, Any]:
    """The truth folder's ``study.json``: every true value the generator used."""
    suv_of = images["suv_of"]
    label_counts = np.bincount(images["labels"].ravel(), minlength=4)
    return {
        "pseudonym": pseudonym, "index": int(index), "seed": int(seed), "size": cfg.size,
        "convention": conv, "vendor": vendor, "manufacturer": header.style["manufacturer"],
        "units": pet_info["units"], "decay_correction": pet_info["decay_correction"],
        "radiopharmaceutical_time": time_style,
        "philips_suv_factor": pet_info.get("philips_suv_factor"),
        "philips_activity_factor": pet_info.get("philips_activity_factor"),
        "patient_weight_kg": float(patient.weight_ds), "patient_size_m": float(patient.height_ds),
        "patient_sex": patient.sex, "injected_dose_bq": float(patient.dose_ds),
        "injection_datetime": patient.injection.isoformat(),
        "pet_series_datetime": patient.pet_start.isoformat(), "ct_series_datetime": patient.ct_start.isoformat(),
        "uptake_s": header.uptake_s, "decay_factor_injection_to_series": header.decay_to_start,
        "bqml_per_suv": pet_info["bqml_per_suv"], "half_life_s": C.F18_HALF_LIFE_S,
        "pet_frame_duration_s": patient.frame_s,
        "myocardium_suv_true": float(suv_of[C.MYOCARDIUM]), "blood_pool_suv_true": float(suv_of[C.HEART_BLOOD]),
        "lung_suv_true": float(suv_of[C.LUNG]), "liver_suv_true": float(suv_of[C.LIVER]),
        "ct_noise_sd_hu": images["ct_noise"], "pet_noise_cv": images["pet_cv"], "psf_fwhm_mm": cfg.psf_fwhm_mm,
        "ct_grid": _grid_json(ct_grid), "pet_grid": _grid_json(pet_grid),
        "label_voxels": {"background": int(label_counts[0]), "lung": int(label_counts[1]),
                         "mediastinum": int(label_counts[2]), "tumour": int(label_counts[3])},
        "lesions": [les.to_json() for les in images["lesions"]],
        "dicom_dir": study_dir, "report": report_rel, "generator_version": C.GENERATOR_VERSION,
    }


def _field_of_view_json(kind: str, plan: _BodyPlan | None, header: StudyHeader, images: dict) -> dict[str, Any]:
    """The truth's field-of-view entries: kind, body part, CT/PET lengths, levels, findings outside the thorax."""
    suv_of = images["suv_of"]
    out: dict[str, Any] = {"field_of_view": kind, "body_part_examined": header.body_part,
                           "findings_outside_thorax": images.get("findings_outside_thorax", [])}
    if plan is not None:
        out.update(pet_vs_ct=plan.pet_vs_ct, levels_mm={k: round(float(v), 2) for k, v in plan.levels.items()},
                   brain_suv_true=float(suv_of[C.BRAIN]), kidney_suv_true=float(suv_of[C.KIDNEY]),
                   bladder_suv_true=float(suv_of[C.URINE]))
    return out


def generate_study(out_dir: str | os.PathLike, index: int, seed: int = C.DEFAULT_SEED, size: str = C.DEFAULT_SIZE,
                   convention: str | None = None, config: C.PhantomConfig | None = None,
                   **overrides: Any) -> dict[str, Any]:
    """Generate one PET-CT study into a cohort folder.

    Writes ``out_dir/dicom/<folder>/...`` (CT and PET series), ``out_dir/reports/<name>.json`` and
    ``out_dir/phantom_truth/<pseudonym>/{labels.nii.gz, suv.nii.gz, study.json}``.

    Parameters
    ----------
    out_dir : path
        Cohort root.
    index : int
        Study index in the cohort; with ``seed`` it fixes every random choice of the study.
    seed : int
        Cohort seed.
    size : str
        Named size preset (``"paper"``, ``"demo"``, ``"tiny"``), ignored when ``config`` is given.
    convention : str, optional
        One of :data:`config.CONVENTIONS` (e.g. ``"philips_time_only"``); by default
        ``CONVENTIONS[index % len(CONVENTIONS)]``.
    config : PhantomConfig, optional
        Full configuration (overrides ``size`` and ``overrides``).
    **overrides
        Passed to :func:`config.make_config`.

    Returns
    -------
    dict
        The study's summary (pseudonym, convention, relative paths, counts).
    """
    cfg = config or C.make_config(size, **overrides)
    out = Path(out_dir)
    conv = convention or C.CONVENTIONS[index % len(C.CONVENTIONS)]
    if conv not in C.CONVENTIONS:
        raise ValueError(f"study {index}: unknown convention {conv!r}; choose one of {C.CONVENTIONS}")
    vendor, time_style = next((v, t) for v in C.VENDOR_STYLES for t in C.RADIOPHARM_TIME_STYLES if f"{v}_{t}" == conv)
    rngs = study_streams(seed, index)
    patient, weight, height = _sample_patient(rngs["patient"], cfg)
    ct_grid, pet_grid, z_range_mm = _sample_grids(rngs["patient"], cfg.geometry)
    kind = field_of_view(cfg, index)
    plan = None
    if kind == THORAX:
        images = _simulate_images(rngs, cfg, ct_grid, pet_grid, z_range_mm, weight, height, disease_kinds(cfg, index))
    else:
        plan = _plan_body(rngs["wholebody"], cfg, kind, ct_grid, pet_grid)
        ct_grid, pet_grid = _crop_z(plan.sim_ct, plan.ct_slices), _crop_z(plan.sim_pet, plan.pet_slices)
        images = _simulate_body(rngs, cfg, plan, weight, height)
    fr = rngs["files"]
    header = _study_header(fr, cfg, seed, index, patient, vendor, time_style)
    if kind != THORAX:
        header = dataclasses.replace(header, body_part=WHOLEBODY_BODY_PART if kind == WHOLEBODY else cfg.non_thorax_body_part)
    pixels, slopes, truth_suv, pet_info = encode_pet(images.pop("pet_suv"), header)
    pseudonym = pseudonymise(header.study_uid)
    study_dir, n_dicom_files = _write_dicom(out, fr, cfg, index, images.pop("hu"), ct_grid,
                                            (pixels, slopes, pet_info), pet_grid, header)

    report_rel = f"reports/{_hex(fr, 12)}.json"
    lesions = images["lesions"]
    outside = images.get("findings_outside_thorax", [])
    report = {"study_instance_uid": header.study_uid,
              "findings": [{"text": les.text, "kind": les.kind,
                            "position_mm": [round(float(v), 2) for v in les.hot_spot_mm],
                            **({"size_mm": round(float(les.size_mm))} if les.kind == "primary" else {})}
                           for les in lesions]
              + [{k: f[k] for k in ("text", "kind", "position_mm")} for f in outside]}
    _atomic_text(out / report_rel, json.dumps(report, indent=2) + "\n")
    truth = out / "phantom_truth" / pseudonym
    truth.mkdir(parents=True, exist_ok=True)
    _write_nifti(truth / "labels.nii.gz", images["labels"], ct_grid)
    _write_nifti(truth / "suv.nii.gz", truth_suv, pet_grid)
    study = _truth_json(pseudonym=pseudonym, index=index, seed=seed, cfg=cfg, conv=conv, vendor=vendor,
                        time_style=time_style, header=header, pet_info=pet_info, patient=patient, images=images,
                        ct_grid=ct_grid, pet_grid=pet_grid, study_dir=study_dir, report_rel=report_rel)
    study.update(_field_of_view_json(kind, plan, header, images))
    study["disease"] = images.get("disease", {"kinds": []})
    _atomic_text(truth / "study.json", json.dumps(study, indent=2) + "\n")
    return {"index": int(index), "pseudonym": pseudonym, "convention": conv, "n_slices": ct_grid.shape_zyx[0],
            "field_of_view": kind, "disease": list(images.get("disease", {}).get("kinds", [])),
            "n_lesions": len(lesions), "n_dicom_files": n_dicom_files, "dicom_dir": study_dir,
            "report": report_rel, "truth_dir": f"phantom_truth/{pseudonym}",
            "myocardium_suv_true": round(study["myocardium_suv_true"], 3)}


# ---------------------------------------------------------------------------------------------
def cohort_parameters(n_studies: int, seed: int, cfg: C.PhantomConfig) -> dict[str, Any]:
    """The parameters that identify a cohort (an existing cohort is reused only if they match)."""
    return {"generator_version": C.GENERATOR_VERSION, "n_studies": int(n_studies), "seed": int(seed),
            "size": cfg.size, "config": cfg.to_dict()}


def _is_complete(out: Path, summary: dict) -> bool:
    for s in summary.get("studies", []):
        truth = out / s["truth_dir"]
        if not all((truth / f).is_file() for f in ("labels.nii.gz", "suv.nii.gz", "study.json")):
            return False
        if not (out / s["report"]).is_file():
            return False
        files = [p for p in (out / s["dicom_dir"]).rglob("*") if p.is_file()]
        if len(files) != s["n_dicom_files"]:
            return False
    return len(summary.get("studies", [])) == summary.get("parameters", {}).get("n_studies", -1)


def load_existing(out_dir: str | os.PathLike, params: dict) -> dict | None:
    """The summary of a complete cohort in ``out_dir`` written with ``params``, else None."""
    path = Path(out_dir) / COHORT_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if summary.get("parameters") != json.loads(json.dumps(params)):
        return None
    return summary if _is_complete(Path(out_dir), summary) else None


def _one(args) -> dict:
    tmp, index, seed, cfg = args
    return generate_study(tmp, index, seed, config=cfg)


def _generate_studies(tmp: Path, n_studies: int, seed: int, cfg: C.PhantomConfig, workers: int,
                      progress: bool | Callable[[int, int], None]) -> list[dict]:
    """Generate every study into ``tmp`` (in parallel processes when ``workers > 1``), sorted by index."""
    jobs = [(tmp, i, seed, cfg) for i in range(n_studies)]
    bar = None
    if progress is True:
        from tqdm import tqdm
        bar = tqdm(total=n_studies, unit="study", desc="phantom")
    studies: list[dict] = []

    def done(s: dict) -> None:
        studies.append(s)
        log.debug("phantom study %d/%d written: %s (%s, %d lesions)", len(studies), n_studies,
                  s["pseudonym"], s["convention"], s["n_lesions"])
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(len(studies), n_studies)

    if workers > 1 and n_studies > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for s in pool.map(_one, jobs):
                done(s)
    else:
        for job in jobs:
            done(_one(job))
    if bar is not None:
        bar.close()
    return sorted(studies, key=lambda s: s["index"])


def _swap_into_place(tmp: Path, out: Path, summary: dict) -> None:
    """Move the new cohort's folders from ``tmp`` into ``out``: forget the old summary first, then
    move the folders, then write the summary."""
    (out / COHORT_FILE).unlink(missing_ok=True)
    old = Path(tempfile.mkdtemp(prefix=".phantom-old-", dir=out))
    for name in OWNED_DIRS:
        if (out / name).exists():
            os.replace(out / name, old / name)
        os.replace(tmp / name, out / name)
    _atomic_text(out / COHORT_FILE, json.dumps(summary, indent=2))
    shutil.rmtree(old, ignore_errors=True)


def generate_cohort(out_dir: str | os.PathLike, n_studies: int = C.DEFAULT_N_STUDIES, seed: int = C.DEFAULT_SEED,
                    size: str = C.DEFAULT_SIZE, workers: int = 1, force: bool = False,
                    progress: bool | Callable[[int, int], None] = False, **overrides: Any) -> dict[str, Any]:
    """Generate a phantom PET-CT cohort into ``out_dir`` (or reuse an identical one).

    The cohort is built in a temporary folder inside ``out_dir`` and moved into place
    (``dicom/``, ``reports/``, ``phantom_truth/``, then ``phantom_cohort.json`` last), so a
    crash never leaves a half-written cohort that looks complete.

    Parameters
    ----------
    out_dir : path
        Cohort root (e.g. ``data/01_raw``).
    n_studies : int
        Number of studies.
    seed : int
        Cohort seed: the same seed and parameters give byte-identical pixel data.
    size : str
        ``"paper"`` (default), ``"demo"`` or ``"tiny"``.
    workers : int
        Studies generated in parallel processes.
    force : bool
        Regenerate even if an identical complete cohort exists.
    progress : bool or callable
        True for a tqdm bar, or ``callback(done, total)``.
    **overrides
        :class:`config.PhantomConfig` fields.

    Returns
    -------
    dict
        The cohort summary, also written to ``out_dir/phantom_cohort.json``.
    """
    if n_studies < 1:
        raise ValueError(f"n_studies must be >= 1, got {n_studies}")
    cfg = C.make_config(size, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = cohort_parameters(n_studies, seed, cfg)
    if not force:
        existing = load_existing(out, params)
        if existing is not None:
            log.info("phantom cohort in %s is complete and up to date (%d studies); not regenerating", out, n_studies)
            return existing
    if not (out / OWNER_MARKER).exists():
        for name in OWNED_DIRS:
            d = out / name
            if d.exists() and any(p.name != ".gitkeep" for p in d.iterdir()):
                raise FileExistsError(f"{d} holds data the phantom did not write (no {out / OWNER_MARKER}); "
                                      "refusing to replace it: choose another output folder")
    tmp = Path(tempfile.mkdtemp(prefix=".phantom-tmp-", dir=out))
    try:
        for name in OWNED_DIRS:
            (tmp / name).mkdir()
        _atomic_text(out / OWNER_MARKER, "dicom/, reports/ and phantom_truth/ here are written by colearn-phantom\n")
        studies = _generate_studies(tmp, n_studies, seed, cfg, workers, progress)
        summary = {"parameters": params, "n_studies": n_studies, "conventions": sorted({s["convention"] for s in studies}),
                   "n_lesions": int(sum(s["n_lesions"] for s in studies)), "studies": studies}
        _swap_into_place(tmp, out, summary)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote phantom cohort: %d studies, %d lesions, into %s", n_studies, summary["n_lesions"], out)
    return summary
