"""One DICOM study -> CT volume, SUV on the CT grid and the thorax slices to segment.

The same public functions as preprocess (pipelines/preprocess/study.py) read the study:
:func:`~colearn_pipeline.dicom.discovery.select_ct_pet` picks the series,
:func:`~colearn_pipeline.dicom.series.read_series` validates them,
:func:`~colearn_pipeline.suv.suv_conversion` gives SUV and
:func:`~colearn_pipeline.dicom.grid.resample_to_reference` puts it on the CT grid. No report is
needed: the thorax is the extent of the lungs (:func:`~colearn_pipeline.groundtruth.segment_lungs`)
plus a margin, and every slice of it is segmented.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from colearn_pipeline.dicom.discovery import StudyFiles, select_ct_pet
from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.dicom.grid import resample_to_reference, slices_with_pet
from colearn_pipeline.dicom.series import SeriesVolume, read_series
from colearn_pipeline.groundtruth import segment_lungs
from colearn_pipeline.suv import SuvError, suv_conversion, to_suv


class StudyReadError(DicomSeriesError):
    """A study that cannot be segmented; names the study (pseudonym), the file and the problem."""


@dataclass
class PredictStudy:
    """A study read for inference.

    Attributes
    ----------
    pseudonym : str
    ct : SeriesVolume
        CT in HU, ``(z, y, x)``, with its headers (pixel data removed) in slice order: the
        SEG's source images.
    suv_ct : numpy.ndarray
        float32 ``(z, y, x)`` body-weight (or configured) SUV resampled onto the CT grid.
    slice_index : numpy.ndarray
        int ``(S,)`` the thorax slices to segment (increasing).
    selection : str
        Which CT and PET series were used (no identifiers).
    suv_convention : str
        The scanner convention met by the SUV conversion.
    """

    pseudonym: str
    ct: SeriesVolume
    suv_ct: np.ndarray
    slice_index: np.ndarray
    selection: str
    suv_convention: str


def thorax_slices(
    ct_hu: np.ndarray,
    spacing_xyz_mm,
    *,
    margin_mm: float,
    superior_at_high_z: bool = True,
    lung_params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Axial slices from the lung apex to the lung base, widened by ``margin_mm`` on both sides.

    Parameters
    ----------
    ct_hu : numpy.ndarray
        ``(z, y, x)`` CT in HU.
    spacing_xyz_mm : sequence of 3 float
        SimpleITK order; the slice spacing converts ``margin_mm`` to slices.
    margin_mm : float
        Added above and below the lungs (tumours and nodes at the apex or the diaphragm).
    superior_at_high_z : bool
        Passed to :func:`~colearn_pipeline.groundtruth.segment_lungs` (airway search).
    lung_params : mapping, optional
        Other keyword arguments of ``segment_lungs``.

    Returns
    -------
    numpy.ndarray
        int64 ``(S,)`` consecutive slice indices; empty when no lung is found.
    """
    lungs = segment_lungs(ct_hu, spacing_xyz_mm, superior_at_high_z=superior_at_high_z, **dict(lung_params or {}))
    z_with_lung = np.flatnonzero(lungs.any(axis=(1, 2)))
    if z_with_lung.size == 0:
        return np.zeros(0, dtype=np.int64)
    pad = int(np.ceil(float(margin_mm) / float(spacing_xyz_mm[2])))
    first = max(0, int(z_with_lung[0]) - pad)
    last = min(ct_hu.shape[0] - 1, int(z_with_lung[-1]) + pad)
    return np.arange(first, last + 1, dtype=np.int64)


def _suv_on_ct_grid(pet: SeriesVolume, ct: SeriesVolume, study: StudyFiles, root: str, params: Mapping) -> tuple:
    try:
        conv = suv_conversion(pet.datasets, suv_type=params.get("suv_type", "bw"), source=study.pseudonym)
    except SuvError as exc:
        by_name = {os.path.basename(f): os.path.relpath(f, root) for f in pet.files}
        file = by_name.get(exc.file, exc.file) if exc.file else os.path.relpath(pet.files[0], root)
        problem = f"SUV: {exc.tag}: {exc.problem}" if exc.tag else f"SUV: {exc.problem}"
        raise StudyReadError(study.pseudonym, study.redact(file), study.redact(problem)) from None
    suv_pet = pet.to_sitk(to_suv(pet.array, conv))
    suv_ct = resample_to_reference(
        suv_pet, ct.to_sitk(), params.get("pet_interpolator", "linear"), float(params.get("pet_outside_value", 0.0))
    )
    return sitk.GetArrayFromImage(suv_ct).astype(np.float32), conv.convention


def load_study(root: str | os.PathLike, study: StudyFiles, params: Mapping[str, Any]) -> PredictStudy:
    """Read one discovered study for inference.

    Parameters
    ----------
    root : path-like
        The folder that was discovered (files are named relative to it in messages).
    study : StudyFiles
        From :func:`colearn_pipeline.dicom.discovery.discover`.
    params : mapping
        ``predict`` parameters: ``series_validation``, ``suv_type``, ``pet_interpolator``,
        ``pet_outside_value``, ``thorax`` (``margin_mm``, ``lungs``).

    Returns
    -------
    PredictStudy

    Raises
    ------
    DicomSeriesError
        No CT or no PET, an unreadable or inconsistent series, SUV not computable
        (:class:`StudyReadError`), or no lungs in the CT; messages name the pseudonym and file.
    """
    root = os.fspath(root)
    if study.corrupt:
        rel, why = study.corrupt[0]
        raise StudyReadError(study.pseudonym, study.redact(rel), study.redact(why))
    ct_info, pet_info, selection = select_ct_pet(study, root)
    tol = dict(params.get("series_validation") or {})
    try:
        ct = read_series(ct_info.files, study.pseudonym, root=root, **tol)
        pet = read_series(pet_info.files, study.pseudonym, root=root, **tol)
    except DicomSeriesError as exc:
        raise StudyReadError(study.pseudonym, study.redact(exc.file), study.redact(exc.problem)) from None
    suv_ct, convention = _suv_on_ct_grid(pet, ct, study, root, params)
    thorax = dict(params.get("thorax") or {})
    index = thorax_slices(
        ct.array, ct.spacing_xyz_mm, margin_mm=float(thorax.get("margin_mm", 0.0)),
        superior_at_high_z=bool(ct.direction[8] >= 0), lung_params=thorax.get("lungs"),
    )
    if index.size == 0:
        first = study.redact(os.path.relpath(ct.files[0], root))
        raise StudyReadError(study.pseudonym, first, "no lung found in the CT series: not a thorax CT?")
    index = slices_with_pet(index, ct, pet, study.pseudonym)  # never segment from a PET of zeros
    return PredictStudy(study.pseudonym, ct, suv_ct, index, selection, convention)
