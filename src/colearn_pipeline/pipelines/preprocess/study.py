"""One study, one stage: the functions the workers run (paper section III-A, stage by stage).

Each ``*_stage`` function takes the study's upstream partitions (loaded here, in the worker), the
stage's parameters and ``staging_dir``; it writes its outputs there in their final format and
returns ``{"row": manifest fields, "staged": {member: file}}``. A problem of the input raises
:class:`~colearn_pipeline.pipelines.preprocess.executor.StudyError`,
:class:`~colearn_pipeline.dicom.errors.DicomSeriesError` or :class:`~colearn_pipeline.suv.SuvError`
(the study is quarantined); anything else is a bug and stops the run.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from colearn_pipeline.datasets.study_partitions import StudyPartition
from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.dicom.grid import (inside, pet_covered_slices, physical_to_index_zyx, resample_to_reference,
                                         resize_labels_nearest, resize_slices)
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.groundtruth import LABELS, compose_labels, dice, segment_mediastinum, segment_tumours
from colearn_pipeline.groundtruth import select_slices
from colearn_pipeline.groundtruth.expert import EXPERT_CLASSES
from colearn_pipeline.pipelines.preprocess.executor import StudyError
from colearn_pipeline.groundtruth.quality import quality_figures, review_reasons, thorax_check, tumour_in_aerated_lung_ml
from colearn_pipeline.groundtruth.thorax import lungs_in_thorax, restrict_to_slab, seeds_to_follow
from colearn_pipeline.suv import SuvError, SuvPlausibility, check_slice_continuity, check_suv_values, suv_conversion
from colearn_pipeline.suv.conversion import header_hint

#: gzip level and zlib strategy of ``.nii.gz`` outputs. SimpleITK's NIfTI writer ignores the level it
#: is given, so we write ``.nii`` and gzip it ourselves: level 1 with run-length matching (``Z_RLE``)
#: deflates a paper-size int16 CT about 1.7x faster than plain level 1 for 8 % more bytes, and masks
#: (long runs of one value) both faster and to less than half the size.
NIFTI_COMPRESSION_LEVEL = 1
NIFTI_COMPRESSION_STRATEGY = zlib.Z_RLE
#: Manifest status of a study without report: converted, its tumours not labelled (no model input by default).
TUMOURS_UNLABELLED = "tumours_unlabelled"
#: Bits of the stored lung partition: lungs, and the airway removed from them.
LUNG_BIT, AIRWAY_BIT = 1, 2


def write_nifti(image: sitk.Image, path: str | os.PathLike) -> str:
    """Write ``image`` to ``path``: ``.nii`` as is, ``.nii.gz`` at :data:`NIFTI_COMPRESSION_LEVEL`; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".nii"):
        sitk.WriteImage(image, str(path), False)
        return str(path)
    plain = path.with_name(path.name.removesuffix(".gz"))
    sitk.WriteImage(image, str(plain), False)
    # wbits 31: a gzip member with no name and no time stamp, so the bytes depend on the image only
    deflate = zlib.compressobj(NIFTI_COMPRESSION_LEVEL, zlib.DEFLATED, 31, 9, NIFTI_COMPRESSION_STRATEGY)
    with open(plain, "rb") as src, open(path, "wb") as dst:
        while chunk := src.read(1 << 22):
            dst.write(deflate.compress(chunk))
        dst.write(deflate.flush())
    plain.unlink()
    return str(path)


def grid_image(geometry: Mapping[str, Any]) -> sitk.Image:
    """An all-zero uint8 image on a grid (``shape_zyx``, ``spacing_xyz_mm``, ``origin_xyz_mm``, ``direction``).

    What :func:`image_on` gives for zeros, without copying a volume of zeros into it.
    """
    image = sitk.Image([int(v) for v in geometry["shape_zyx"][::-1]], sitk.sitkUInt8)
    image.SetSpacing([float(v) for v in geometry["spacing_xyz_mm"]])
    image.SetOrigin([float(v) for v in geometry["origin_xyz_mm"]])
    image.SetDirection([float(v) for v in geometry["direction"]])
    return image


def image_on(geometry: Mapping[str, Any], array: np.ndarray) -> sitk.Image:
    """Wrap a ``(z, y, x)`` array with a grid's geometry (``spacing_xyz_mm``, ``origin_xyz_mm``, ``direction``)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(v) for v in geometry["spacing_xyz_mm"]])
    image.SetOrigin([float(v) for v in geometry["origin_xyz_mm"]])
    image.SetDirection([float(v) for v in geometry["direction"]])
    return image


#: NIfTI-1 ``datatype`` codes -> little-endian numpy dtypes read by :func:`nifti_voxels`.
NIFTI_DTYPES = {2: "u1", 4: "<i2", 8: "<i4", 16: "<f4", 64: "<f8", 256: "i1", 512: "<u2", 768: "<u4"}


def nifti_voxels(path: str | os.PathLike, z_start: int = 0, z_stop: int | None = None) -> np.ndarray | None:
    """Slices ``z_start:z_stop`` ``(z, y, x)`` of an uncompressed 3D NIfTI-1 file, read straight from the file.

    The voxels SimpleITK reads, several times faster: ITK reads a ``.nii`` through its gzip layer.
    None for any file this does not cover (compressed, big-endian, not 3D, scaled, other types):
    read those with SimpleITK.
    """
    if not str(path).endswith(".nii"):
        return None
    with open(path, "rb") as f:
        header = f.read(348)
    if len(header) < 348 or np.frombuffer(header, "<i4", 1)[0] != 348 or header[344:347] != b"n+1":
        return None
    dim = np.frombuffer(header, "<i2", 8, 40)
    datatype = int(np.frombuffer(header, "<i2", 1, 70)[0])
    vox_offset, slope, inter = (float(v) for v in np.frombuffer(header, "<f4", 3, 108))
    if dim[0] != 3 or datatype not in NIFTI_DTYPES or slope not in (0.0, 1.0) or inter != 0.0:
        return None
    nx, ny, nz = (int(v) for v in dim[1:4])
    z_stop = nz if z_stop is None else int(z_stop)
    if not 0 <= z_start <= z_stop <= nz:
        return None
    dtype = np.dtype(NIFTI_DTYPES[datatype])
    offset = int(vox_offset) + int(z_start) * ny * nx * dtype.itemsize
    count = (z_stop - int(z_start)) * ny * nx
    voxels = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if voxels.size != count:
        return None  # a truncated file: let SimpleITK say so
    return voxels.reshape(-1, ny, nx).astype(dtype.newbyteorder("="), copy=False)


def _array(partition: StudyPartition, member: str | None = None, dtype=None) -> np.ndarray:
    if member is None and len(partition.paths) == 1:
        (member,) = partition.paths
    voxels = nifti_voxels(partition.paths[member]) if member in partition.paths else None
    if voxels is not None:
        return voxels if dtype is None else voxels.astype(dtype, copy=False)
    return _as_array(partition.load(member), dtype)


def _as_array(image: sitk.Image, dtype=None) -> np.ndarray:
    """The image's voxels ``(z, y, x)``, a writable array of their own; converted straight from the
    image's buffer when ``dtype`` differs (one copy, not two)."""
    if dtype is not None and sitk.GetArrayViewFromImage(image).dtype != np.dtype(dtype):
        return sitk.GetArrayViewFromImage(image).astype(dtype)
    return sitk.GetArrayFromImage(image)


def _array_slices(partition: StudyPartition, z_start: int, z_stop: int, dtype=None) -> np.ndarray:
    """Slices ``z_start:z_stop`` of a study's stored volume, read without the slices after them.

    The same voxels as ``_array(partition)[z_start:z_stop]``: ITK's NIfTI reader stops reading (or
    inflating) at the region's last slice, and an uncompressed file is read at the region only.
    """
    if z_stop <= z_start:
        raise ValueError(f"{partition.pseudonym}: empty slice range {z_start}:{z_stop}")
    (path,) = partition.paths.values()
    voxels = nifti_voxels(path, z_start, z_stop)
    if voxels is not None:
        return voxels if dtype is None else voxels.astype(dtype, copy=False)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    width, height, _ = reader.GetSize()
    reader.SetExtractIndex([0, 0, int(z_start)])
    reader.SetExtractSize([width, height, int(z_stop - z_start)])
    return _as_array(reader.Execute(), dtype)


def _geometry(volume) -> dict[str, Any]:
    return {
        "shape_zyx": [int(v) for v in volume.shape_zyx],
        "spacing_xyz_mm": [float(v) for v in volume.spacing_xyz_mm],
        "origin_xyz_mm": [float(v) for v in volume.origin_xyz_mm],
        "direction": [float(v) for v in volume.direction],
    }


def ct_storage_array(ct_hu: np.ndarray) -> np.ndarray:
    """CT as int16 when that is lossless (integer HU within int16), else unchanged (float32).

    CT rescale slopes are 1 and intercepts integers on every scanner we know, so the NIfTI is
    stored as int16: half the bytes and about 5x faster to gzip than float32.
    """
    info = np.iinfo(np.int16)
    if not (ct_hu.size and ct_hu.min() >= info.min and ct_hu.max() <= info.max):
        return ct_hu
    as_int16 = ct_hu.astype(np.int16)  # in range, so the cast only truncates fractions
    return as_int16 if np.array_equal(as_int16, ct_hu) else ct_hu


def read_series_stage(*, staging_dir: str, pseudonym: str, root: str, ct_files: list[str], pet_files: list[str],
                      corrupt: list[tuple[str, str]], skipped_beside: list[str], tolerances: Mapping,
                      file_labels: Mapping[str, str]) -> dict:
    """Read and check the CT and PET series; stage the CT in HU (``ct_hu``) and record both grids.

    Files are named by their labels (``file_labels``: path -> label) in every message; a refused
    series names the unreadable files skipped beside it (labels), which may be its missing slices.
    """
    try:
        if corrupt:
            raise DicomSeriesError(pseudonym, corrupt[0][0], corrupt[0][1])
        ct = read_series(ct_files, pseudonym, root=root, file_labels=file_labels, **tolerances)
        pet = read_series(pet_files, pseudonym, root=root, file_labels=file_labels, **tolerances)
    except DicomSeriesError as exc:
        if not skipped_beside:
            raise
        raise DicomSeriesError(exc.study, exc.file, f"{exc.problem} (skipped beside this series: "
                                                    f"{', '.join(skipped_beside[:3])})") from exc
    covered = pet_covered_slices(ct, pet)
    if covered is None:
        raise StudyError(pseudonym, file_labels.get(pet.files[0], "PET series"),
                         "coverage: the PET covers none of the CT's slices (no SUV anywhere on the CT)")
    staged = {"ct_hu": write_nifti(ct.to_sitk(ct_storage_array(ct.array)), Path(staging_dir) / "ct_hu.nii.gz")}
    row = {
        "ct_shape_zyx": list(ct.shape_zyx), "pet_shape_zyx": list(pet.shape_zyx),
        "ct_spacing_xyz_mm": [round(v, 4) for v in ct.spacing_xyz_mm],
        "pet_spacing_xyz_mm": [round(v, 4) for v in pet.spacing_xyz_mm],
        "ct_geometry": _geometry(ct),
        "ct_body_part_examined": body_part_examined(ct.datasets[0]),
        "pet_covered_slices": [covered[0], covered[1]],
        "ct_slices_without_pet": int(ct.shape_zyx[0] - (covered[1] - covered[0] + 1)),
        "series_notes": "; ".join([*ct.notes, *pet.notes]),
    }
    return {"row": row, "staged": staged}


def body_part_examined(header) -> str | None:
    """BodyPartExamined (0018,0015) as a DICOM code string (upper case, ``A-Z 0-9 _`` and space, 16 characters at most)."""
    text = "".join(c for c in str(header.get("BodyPartExamined", "") or "").upper() if c.isalnum() or c in "_ ")
    return text.strip()[:16] or None


def convert_to_suv_stage(*, staging_dir: str, pseudonym: str, root: str, pet_files: list[str], tolerances: Mapping,
                         suv_type: str, truth_dir: str | None, qa_min_suv: float,
                         plausibility: SuvPlausibility, file_labels: Mapping[str, str],
                         qa_max_rel_error: float | None = None) -> dict:
    """PET activity -> SUV on the PET grid (QIBA vendor-neutral, :func:`colearn_pipeline.suv.suv_conversion`).

    Headers and the SUV volume are checked against ``plausibility`` (``params:suv``): a value out
    of range raises :class:`~colearn_pipeline.suv.SuvError` naming the tag and the value, and so does a
    slice whose SUV factor or body median departs from its neighbours'
    (:func:`~colearn_pipeline.suv.check_slice_continuity`). Where the phantom's truth is present, a
    largest relative SUV error above ``qa_max_rel_error`` sets the study aside too. Files are
    named by their labels (``file_labels``: path -> label), never by their raw names.
    """
    pet = read_series(pet_files, pseudonym, root=root, file_labels=file_labels, **tolerances)
    try:
        conv = suv_conversion(pet.datasets, suv_type=suv_type, source=pseudonym, plausibility=plausibility)
        factors = np.asarray(conv.slice_factors, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            suv_pet = pet.array.astype(np.float64) * factors[:, None, None]
        check_suv_values(suv_pet, plausibility, source=pseudonym, hint=f"{header_hint(conv)}, {_slope_hint(pet.datasets)}")
        check_slice_continuity(suv_pet, factors, plausibility, source=pseudonym,
                               slice_labels=[file_labels.get(f, "-") for f in pet.files])
        suv_pet = suv_pet.astype(np.float32)
    except SuvError as exc:
        by_name = {os.path.basename(f): file_labels[f] for f in pet.files}
        by_name.update({label: label for label in file_labels.values()})  # errors that name a slice by its label
        file = by_name.get(exc.file, "PET series") if exc.file else file_labels[pet.files[0]]
        raise StudyError(pseudonym, file, f"SUV: {exc.tag}: {exc.problem}" if exc.tag else f"SUV: {exc.problem}") from exc
    row = {
        "scanner_convention": conv.convention, "suv_type": conv.suv_type, "suv_units": conv.units,
        "decay_correction": conv.decay_correction, "reference_time_source": conv.reference_time_source,
        "suv_factor": float(np.median(factors)), "suv_factor_min": float(factors.min()),
        "suv_factor_max": float(factors.max()), "suv_notes": "; ".join(str(n) for n in conv.details.get("notes", [])),
        "pet_geometry": _geometry(pet),
    }
    image = pet.to_sitk(suv_pet)
    if truth_dir and (Path(truth_dir) / "suv.nii.gz").is_file():
        row.update(suv_error_against_truth(Path(truth_dir) / "suv.nii.gz", image, qa_min_suv))
        error = row["suv_max_rel_error"]
        if qa_max_rel_error is not None and error is not None and error > qa_max_rel_error:
            raise StudyError(pseudonym, "phantom_truth/suv.nii.gz", (
                f"SUV against the phantom's truth: largest relative error {error:.3g} > {qa_max_rel_error:g} "
                f"(preprocess.phantom_qa.max_suv_rel_error; median {row['suv_median_rel_error']:.3g})"))
    return {"row": row, "staged": {"suv_pet": write_nifti(image, Path(staging_dir) / "suv_pet.nii")}}


def _slope_hint(datasets: Sequence) -> str:
    slopes = [float(ds.get("RescaleSlope", 1.0) or 1.0) for ds in datasets]
    return f"RescaleSlope (0028,1053) {min(slopes):g}..{max(slopes):g}"


def suv_error_against_truth(truth_path: Path, suv_pet: sitk.Image, min_suv: float) -> dict[str, Any]:
    """Median and largest relative SUV error against the phantom's truth, over voxels whose true SUV > ``min_suv``."""
    truth_img = sitk.ReadImage(str(truth_path), sitk.sitkFloat32)
    ours = sitk.GetArrayFromImage(suv_pet)
    truth = sitk.GetArrayFromImage(truth_img)
    if truth.shape != ours.shape or not np.allclose(truth_img.GetOrigin(), suv_pet.GetOrigin(), atol=1e-3):
        truth = sitk.GetArrayFromImage(resample_to_reference(truth_img, suv_pet))
    mask = truth > min_suv
    if not mask.any():
        return {"suv_median_rel_error": None, "suv_max_rel_error": None, "suv_voxels_compared": 0}
    rel = np.abs(ours[mask].astype(np.float64) - truth[mask]) / truth[mask]
    return {"suv_median_rel_error": float(np.median(rel)), "suv_max_rel_error": float(np.max(rel)),
            "suv_voxels_compared": int(mask.sum())}


def pet_to_ct_stage(*, staging_dir: str, suv_pet: StudyPartition, geometry: Mapping, interpolator: str,
                    outside_value: float) -> dict:
    """SUV resampled from the PET grid onto the CT grid in physical space (``suv``).

    Both grids come from the DICOM geometry kept in the records (float64), not from the NIfTI
    headers (float32), so the result does not depend on how the PET was stored.
    """
    moving = image_on(suv_pet.record["row"]["pet_geometry"], _array(suv_pet))
    suv_ct = resample_to_reference(moving, grid_image(geometry), interpolator, outside_value)
    if suv_ct.GetPixelID() != sitk.sitkFloat32:  # a cast to the same type would copy the volume
        suv_ct = sitk.Cast(suv_ct, sitk.sitkFloat32)
    return {"row": {}, "staged": {"suv": write_nifti(suv_ct, Path(staging_dir) / "suv.nii")}}


def lungs_stage(*, staging_dir: str, ct_hu: StudyPartition, geometry: Mapping, keywords: Mapping,
                extent: Mapping, pseudonym: str = "-", pet_covered: Sequence[int] | None = None,
                outside_pet: str = "refuse") -> dict:
    """Lungs (:func:`colearn_pipeline.groundtruth.segment_lungs`); the airway removed from them is kept too.

    Both are kept in the thorax slab (:func:`colearn_pipeline.groundtruth.thorax.lungs_in_thorax`, the
    ``thorax_extent`` row field: first and last slice, or None) where every later stage works; the
    slab never reaches CT slices the PET does not cover (``pet_covered``: first and last CT slice).
    Lungs reaching such slices refuse the study (``outside_pet: refuse``) or are cut to the PET (``crop``).
    """
    kwargs = dict(keywords)
    if kwargs.get("superior_at_high_z") is None:
        kwargs["superior_at_high_z"] = bool(geometry["direction"][8] >= 0)  # LPS: +z is superior
    ct = _array(ct_hu, dtype=np.float32)
    lungs, info, slab = lungs_in_thorax(ct, geometry["spacing_xyz_mm"], extent=extent, **kwargs)
    airway = info.pop("airway_mask")
    if pet_covered is not None:
        slab = slab_within_pet(pseudonym, lungs, slab, (int(pet_covered[0]), int(pet_covered[1])), outside_pet)
        lungs, airway = restrict_to_slab(lungs, slab), restrict_to_slab(airway, slab)
    encoded = np.asarray(lungs, bool).view(np.uint8) * np.uint8(LUNG_BIT)
    encoded |= np.asarray(airway, bool).view(np.uint8) * np.uint8(AIRWAY_BIT)
    path = write_nifti(image_on(geometry, encoded), Path(staging_dir) / "lungs.nii.gz")
    row = {f"lungs_{k}": v for k, v in info.items() if isinstance(v, (int, float, bool)) or v is None}
    row["thorax_extent"] = None if slab is None else [int(slab[0]), int(slab[1])]
    return {"row": row, "staged": {"lungs": path}}


def slab_within_pet(pseudonym: str, lungs: np.ndarray, slab: tuple[int, int] | None, covered: tuple[int, int],
                    outside_pet: str) -> tuple[int, int] | None:
    """The thorax slab cut to the CT slices the PET covers; lungs outside them refuse the study under ``refuse``.

    Raises
    ------
    StudyError
        ``coverage: ...`` naming the covered slices and the lungs' slices outside them.
    """
    lung_z = np.flatnonzero(np.asarray(lungs).any(axis=(1, 2)))
    outside = lung_z[(lung_z < covered[0]) | (lung_z > covered[1])]
    if outside.size and outside_pet == "refuse":
        raise StudyError(pseudonym, "PET series", (
            f"coverage: the PET covers CT slices {covered[0]}..{covered[1]} of 0..{lungs.shape[0] - 1}; the lungs "
            f"reach {outside.size} slice(s) outside it ({int(outside[0])}..{int(outside[-1])}), where the SUV would be 0 "
            "(preprocess.thorax_extent.outside_pet: refuse)"))
    if slab is None:
        return None
    first, last = max(slab[0], covered[0]), min(slab[1], covered[1])
    return (first, last) if first <= last else None


def mediastinum_stage(*, staging_dir: str, pseudonym: str, ct_hu: StudyPartition, lungs: StudyPartition,
                      geometry: Mapping, keywords: Mapping, thorax: Mapping, body_part_examined: str | None) -> dict:
    """Mediastinum between the lungs (:func:`colearn_pipeline.groundtruth.segment_mediastinum`).

    Raises
    ------
    StudyError
        ``"not a thorax: <reason>"`` (:func:`colearn_pipeline.groundtruth.quality.thorax_check`).
    """
    kwargs = dict(keywords)
    if kwargs.get("superior_at_high_z") is None:
        kwargs["superior_at_high_z"] = bool(geometry["direction"][8] >= 0)  # LPS: +z is superior
    encoded = _array(lungs)
    lung_mask = (encoded & LUNG_BIT) > 0
    part = (body_part_examined or "").upper()
    if part and part not in {p.upper() for p in thorax["thorax_body_parts"]}:
        # no need to segment what the header already says is not a thorax
        raise StudyError(pseudonym, "CT series", f"not a thorax: BodyPartExamined {part}")
    ct = _array(ct_hu, dtype=np.float32)
    mask = segment_mediastinum(ct, lung_mask, geometry["spacing_xyz_mm"],
                               airway_mask=(encoded & AIRWAY_BIT) > 0, **kwargs)
    mask = restrict_to_slab(mask, _slab(lungs.record["row"].get("thorax_extent", WHOLE_VOLUME), mask.shape[0]))
    reason = thorax_check(lung_mask, mask, geometry["spacing_xyz_mm"], body_part_examined=body_part_examined,
                          **dict(thorax))
    if reason:
        raise StudyError(pseudonym, "CT series", reason)
    path = write_nifti(image_on(geometry, np.asarray(mask, bool).astype(np.uint8)), Path(staging_dir) / "mediastinum.nii.gz")
    return {"row": {}, "staged": {"mediastinum": path}}


def findings_to_seeds(findings: Sequence[Mapping], ct_image: sitk.Image, pseudonym: str, report: str = "report") -> np.ndarray:
    """Report findings (patient LPS mm) -> continuous CT voxel indices ``(n, 3)`` in ``(z, y, x)``.

    Raises
    ------
    StudyError
        A finding without a three-number ``position_mm`` or outside the CT volume.
    """
    points = []
    for i, finding in enumerate(findings):
        pos = finding.get("position_mm") if isinstance(finding, Mapping) else None
        try:
            point = [float(v) for v in pos]  # type: ignore[union-attr]
            if len(point) != 3 or not np.all(np.isfinite(point)):
                raise ValueError
        except (TypeError, ValueError):
            raise StudyError(pseudonym, report, f"finding {i} has no valid position_mm [x, y, z]: {pos!r}") from None
        points.append(point)
    if not points:
        return np.zeros((0, 3))
    idx = physical_to_index_zyx(points, ct_image)
    ok = inside(idx, ct_image.GetSize()[::-1])
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise StudyError(pseudonym, report,
                         f"finding {i} ({findings[i].get('kind', '?')}) at {points[i]} mm lies outside the CT volume")
    return idx


#: ``thorax_extent`` of a lungs stage output that has none (written before the slab existed): every slice.
WHOLE_VOLUME = "all"


def _slab(extent, n_slices: int) -> tuple[int, int] | None:
    """The thorax slab (first, last slice) of a lungs stage row's ``thorax_extent``."""
    if isinstance(extent, str) and extent == WHOLE_VOLUME:
        return 0, n_slices - 1
    return None if extent is None else (int(extent[0]), int(extent[1]))


def tumours_stage(*, staging_dir: str, pseudonym: str, suv: StudyPartition, findings: list[dict], geometry: Mapping,
                  keywords: Mapping, thorax_extent: Sequence[int] | str | None = WHOLE_VOLUME) -> dict:
    """Tumours: 40 % of peak SUV around the report's findings (:func:`colearn_pipeline.groundtruth.segment_tumours`).

    Only findings inside the thorax slab (``thorax_extent``, the lungs stage's) are followed; the
    others are listed in ``findings_not_followed`` with the reason ``seed_outside_thorax``.
    """
    seeds = findings_to_seeds(findings, grid_image(geometry), pseudonym)
    slab = _slab(thorax_extent, int(geometry["shape_zyx"][0]))
    followed, not_followed = seeds_to_follow(seeds, slab)
    left_out = {n["finding"] for n in not_followed}
    sizes = [f.get("size_mm") for i, f in enumerate(findings) if i not in left_out]  # the report's stated sizes
    mask, info = segment_tumours(_array(suv, dtype=np.float32), followed, geometry["spacing_xyz_mm"], sizes_mm=sizes,
                                 **dict(keywords))
    mask = restrict_to_slab(mask, slab)
    path = write_nifti(image_on(geometry, np.asarray(mask, bool).astype(np.uint8)), Path(staging_dir) / "tumours.nii.gz")
    row = {"n_findings": len(findings), "tumours_capped": int(sum(bool(t.get("capped")) for t in info)),
           "n_findings_not_followed": len(not_followed),
           "findings_not_followed": [{**n, "kind": str(findings[n["finding"]].get("kind", "?"))} for n in not_followed],
           "tumours_empty": int(sum(int(t.get("voxels", 0)) == 0 for t in info)),
           "tumour_findings": [{k: _plain(t.get(k))
                                for k in ("voxels", "peak_suv", "threshold_suv", "capped", "max_ml")}
                               for t in info]}
    return {"row": row, "staged": {"tumours": path}}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def labels_stage(*, staging_dir: str, pseudonym: str, lungs: StudyPartition, mediastinum: StudyPartition,
                 tumours: StudyPartition, geometry: Mapping, truth_dir: str | None, hull_margin_mm: float,
                 review_ranges: Mapping, ct_hu: StudyPartition, aerated_lung_hu: float,
                 correction: str | None = None, root: str = "", ct_files: Sequence[str] = (),
                 tolerances: Mapping | None = None, expert: Mapping | None = None) -> dict:
    """The label volume (0 background, 1 lung, 2 mediastinum, 3 tumour), its quality figures, and its Dice
    against phantom truth.

    A ``correction`` (a label map edited in a viewer, NIfTI or DICOM SEG) replaces the derived labels
    (``labels_source: corrected``) and is not reviewed again; an ``expert``'s contours
    (:func:`colearn_pipeline.pipelines.preprocess.nodes.expert_for_study`) replace the classes they
    contour (``labels_source: expert``, the derived labels scored against them); labels whose
    figures leave ``review_ranges`` raise :class:`StudyError` ``"needs review: <reasons>"``.
    """
    expert_row: dict[str, Any] = {}
    if correction is not None:
        labels = _corrected_labels(correction, pseudonym, root, ct_files, tolerances or {})
        findings: list = []
    else:
        labels = compose_labels((_array(lungs) & LUNG_BIT) > 0, _array(mediastinum) > 0, _array(tumours) > 0)
        findings = tumours.record["row"].get("tumour_findings", [])
        if expert:
            labels, expert_row = _with_expert(labels, expert, pseudonym, root, ct_files, tolerances or {},
                                              geometry["spacing_xyz_mm"])
            findings = [] if "tumour" in expert_row["expert_classes"] else findings
    figures = quality_figures(labels == LABELS["lung"], labels == LABELS["mediastinum"], geometry["spacing_xyz_mm"],
                              findings, hull_margin_mm=hull_margin_mm)
    tumour = labels == LABELS["tumour"]
    tumour_z = np.flatnonzero(tumour.any(axis=(1, 2)))
    z_start, z_stop = (int(tumour_z[0]), int(tumour_z[-1]) + 1) if tumour_z.size else (0, 0)
    ct_near_tumour = _array_slices(ct_hu, z_start, z_stop, np.float32) if tumour_z.size else np.zeros((0, *labels.shape[1:]))
    figures["tumour_in_aerated_lung_ml"] = tumour_in_aerated_lung_ml(  # only the tumour's slices count
        tumour[z_start:z_stop], ct_near_tumour, geometry["spacing_xyz_mm"], aerated_lung_hu=aerated_lung_hu)
    if correction is None:
        reasons = review_reasons(figures, review_ranges)
        if reasons:
            raise StudyError(pseudonym, "ground truth", "needs review: " + "; ".join(reasons))
    counts = {value: np.count_nonzero(labels == value) for value in LABELS.values()}  # a pass each beats bincount
    row: dict[str, Any] = {f"voxels_{name}": int(counts[value]) for name, value in LABELS.items()}
    row.update(quality_row(figures))
    from_expert = bool(expert_row.get("expert_classes"))
    row.update(labels_source="corrected" if correction else "expert" if from_expert else "derived",
               labels_correction=os.path.basename(correction) if correction else None, **expert_row)
    truth_path = Path(truth_dir) / "labels.nii.gz" if truth_dir else None
    if truth_path is not None and truth_path.is_file():
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_path)))
        if truth.shape != labels.shape:
            raise StudyError("-", "phantom_truth/labels.nii.gz", f"shape {truth.shape} != CT {labels.shape}")
        row.update({f"dice_{n}": dice(labels == v, truth == v) for n, v in LABELS.items() if v})
    path = write_nifti(image_on(geometry, labels.astype(np.uint8)), Path(staging_dir) / "labels.nii.gz")
    return {"row": row, "staged": {"labels": path}}


def quality_row(figures: Mapping) -> dict[str, Any]:
    """Manifest fields of :func:`~colearn_pipeline.groundtruth.quality.quality_figures` (mL, fractions, per finding)."""
    return {
        "lung_ml": round(figures["lung_ml"], 1), "mediastinum_ml": round(figures["mediastinum_ml"], 1),
        "mediastinum_outside_hull": round(figures["mediastinum_outside_hull"], 4),
        "lung_balance": round(figures["lung_balance"], 3),
        "tumour_in_aerated_lung_ml": round(figures["tumour_in_aerated_lung_ml"], 2),
        "tumour_ml": [round(t["volume_ml"], 2) for t in figures["tumours"]],
        "tumour_peak_to_threshold": [round(t["peak_to_threshold"], 3) for t in figures["tumours"]],
    }


def _with_expert(derived: np.ndarray, expert: Mapping, pseudonym: str, root: str, ct_files: Sequence[str],
                 tolerances: Mapping, spacing_xyz_mm: Sequence[float]) -> tuple[np.ndarray, dict[str, Any]]:
    """The labels with the expert's classes (:mod:`colearn_pipeline.groundtruth.expert`) and the manifest fields:
    the classes from each source, the ROIs not mapped, and the derived labels scored against the expert's."""
    from colearn_pipeline.groundtruth.agreement import class_agreement
    from colearn_pipeline.groundtruth.expert import ExpertContourError, ExpertObject, expert_masks, merge_with_derived

    ct = read_series(list(ct_files), pseudonym, root=root, **tolerances)
    objects = [ExpertObject(o["path"], o["kind"], o["match"]) for o in expert["objects"]]
    labels_of = {o["path"]: o["file"] for o in expert["objects"]}
    try:
        found = expert_masks(objects, ct.datasets, expert["rules"], labels_of=labels_of,
                             tolerance_fraction=expert["tolerance_fraction"])
    except ExpertContourError as exc:
        raise StudyError(pseudonym, exc.file, f"expert contours: {exc.problem}") from exc
    row: dict[str, Any] = {"expert_files": [o["file"] for o in expert["objects"]],
                           "expert_unmapped_rois": [safe_roi_name(n) for n in found.unmapped],
                           "expert_notes": "; ".join(found.notes)}
    if not found.masks:  # nothing usable (empty ROIs, or none mapped): the derived labels stay
        return derived, {**row, "expert_classes": [], "labels_from_derived": list(EXPERT_CLASSES)}
    labels, from_derived = merge_with_derived(derived, found.masks)
    classes = [c for c in EXPERT_CLASSES if c in found.masks]
    expert_only, _ = merge_with_derived(None, found.masks)
    scores = class_agreement(derived, expert_only, spacing_xyz_mm, classes)
    row.update(expert_classes=classes, labels_from_derived=from_derived, expert_agreement=scores)
    for name, s in scores.items():
        row.update({f"expert_dice_{name}": _rounded(s["dice"], 4),
                    f"expert_volume_ratio_{name}": _rounded(s["volume_ratio"], 4),
                    f"expert_msd_mm_{name}": _rounded(s["mean_surface_distance_mm"], 3)})
    return labels, row


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


#: Characters an ROI name may keep in the manifest (header free text: a space becomes ``_``, anything else ``?``).
_ROI_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+.()")
#: Longest ROI name kept in the manifest.
MAX_ROI_NAME_LENGTH = 32


def safe_roi_name(name: str) -> str:
    """An ROI name as the manifest lists it: ASCII letters, digits and ``_-+.()`` only, at most 32 characters."""
    text = str(name).strip().replace(" ", "_")
    return "".join(c if c in _ROI_NAME_CHARACTERS else "?" for c in text)[:MAX_ROI_NAME_LENGTH]


def _corrected_labels(path: str, pseudonym: str, root: str, ct_files: Sequence[str], tolerances: Mapping) -> np.ndarray:
    from colearn_pipeline.inference.seg import LabelMapError, read_label_map

    ct = read_series(list(ct_files), pseudonym, root=root, **tolerances)
    try:
        return read_label_map(path, ct)
    except LabelMapError as exc:
        raise StudyError(pseudonym, f"corrections/{exc.file}", f"corrected label map: {exc.problem}") from exc


def build_model_input(ct_hu: np.ndarray, suv: np.ndarray, labels: np.ndarray, slice_index: np.ndarray,
                      model_size: Sequence[int], geometry: Mapping, pseudonym: str, z_offset: int = 0) -> dict[str, np.ndarray]:
    """The model-input arrays of docs/architecture.md (keys and dtypes exactly as the contract).

    ``ct_hu`` and ``suv`` may hold only the CT slices from ``z_offset`` on (those around the kept
    ones); ``labels`` is the whole volume.
    """
    idx = np.asarray(slice_index, dtype=np.int32)
    near = idx - int(z_offset)
    return {
        "ct_hu": resize_slices(ct_hu[near].astype(np.float32), model_size, "image").astype(np.float32),
        "suv": resize_slices(suv[near], model_size, "image").astype(np.float32),
        "labels": resize_labels_nearest(labels[idx].astype(np.uint8), *model_size),
        "slice_index": idx,
        # on the CT grid, so a tumour that the model grid's resize drops still flags its slice
        "has_tumour": (labels[idx] == LABELS["tumour"]).any(axis=(1, 2)),
        "ct_shape_zyx": np.asarray(labels.shape, dtype=np.int64),
        "spacing_xyz_mm": np.asarray(geometry["spacing_xyz_mm"], dtype=np.float64),
        "origin_xyz_mm": np.asarray(geometry["origin_xyz_mm"], dtype=np.float64),
        "direction": np.asarray(geometry["direction"], dtype=np.float64),
        "study": np.array(pseudonym),
    }


def model_input_stage(*, staging_dir: str, pseudonym: str, ct_hu: StudyPartition, suv: StudyPartition,
                      labels: StudyPartition, geometry: Mapping, model_size: Sequence[int], compress: bool,
                      slice_classes: Sequence[str], slice_min_voxels: int, tumours_unlabelled: bool = False,
                      include_tumours_unlabelled: bool = False, unlabelled_slice_classes: Sequence[str] = (),
                      patient: str | None = None) -> dict:
    """Slice selection (every thorax slice: lung or tumour) and the per-study model input (NPZ).

    A study without report (``tumours_unlabelled``) has no tumour label: it gets no model input
    (:class:`StudyError` whose problem starts with :data:`TUMOURS_UNLABELLED`, which the manifest
    shows as that status) unless ``include_tumours_unlabelled``, and then its ``unlabelled_slice_classes`` slices.
    """
    from colearn_pipeline.datasets.npz import NpzDataset

    if tumours_unlabelled and not include_tumours_unlabelled:
        raise StudyError(pseudonym, "reports/", f"{TUMOURS_UNLABELLED}: no diagnostic report, so no tumour label; "
                                                "left out of training and testing (model_input.include_tumours_unlabelled)")
    if tumours_unlabelled:
        slice_classes = unlabelled_slice_classes
    label_array = _array(labels)
    slice_index = select_slices(label_array, list(slice_classes), min_voxels=int(slice_min_voxels))
    if slice_index.size == 0:
        raise StudyError(pseudonym, "-", f"no axial slice contains the classes {list(slice_classes)}")
    z_start, z_stop = int(slice_index.min()), int(slice_index.max()) + 1  # read the kept slices' range only
    arrays = build_model_input(_array_slices(ct_hu, z_start, z_stop), _array_slices(suv, z_start, z_stop, np.float32),
                               label_array, slice_index, model_size, geometry, pseudonym, z_offset=z_start)
    path = str(Path(staging_dir) / "model_input.npz")
    NpzDataset(path, compress=bool(compress)).save(arrays)
    row = {"slices_kept": int(slice_index.size), "slice_index": [int(i) for i in slice_index],
           "patient": patient or pseudonym}  # patient pseudonym: the unit the split keeps on one side
    return {"row": row, "staged": {"model_input": path}}
