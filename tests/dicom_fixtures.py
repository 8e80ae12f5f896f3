"""Helpers that write small, valid DICOM CT and PET series with pydicom (for tests).

Each helper writes one file per slice with the tags the pipeline relies on; a test then
breaks one thing (truncates a file, drops a slice, removes the weight) and checks the error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
F18_HALF_LIFE_S = 6586.2
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _base_dataset(path: Path, sop_class: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def write_series(
    out_dir: str | os.PathLike,
    volume: np.ndarray,
    *,
    modality: str,
    study_uid: str,
    series_uid: str | None = None,
    frame_uid: str,
    spacing_xyz_mm: Sequence[float] = (2.0, 2.0, 3.0),
    origin_xyz_mm: Sequence[float] = (0.0, 0.0, 0.0),
    iop: Sequence[float] = AXIAL_IOP,
    slope: float | Sequence[float] = 1.0,
    intercept: float = 0.0,
    extra: Callable[[Dataset, int], None] | None = None,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-0001",
    prefix: str = "",
) -> list[Path]:
    """Write ``volume`` (z, y, x, in real-world units) as one file per slice.

    Stored values are ``round((value - intercept) / slope)`` as uint16 (CT: int16); slices are
    written at ``origin + k * spacing_z * normal``. ``extra(ds, k)`` may add or change tags.

    Returns
    -------
    list of pathlib.Path
        The files written, in slice order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    iop_arr = np.asarray(iop, dtype=float)
    normal = np.cross(iop_arr[:3], iop_arr[3:])
    slopes = np.broadcast_to(np.asarray(slope, dtype=float), (volume.shape[0],))
    paths = []
    for k in range(volume.shape[0]):
        path = out / f"{prefix}{modality.lower()}_{k:04d}.dcm"
        ds = _base_dataset(path, CT_IMAGE_STORAGE if modality == "CT" else PET_IMAGE_STORAGE)
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.StudyDate = "20240101"
        ds.SeriesDate = "20240101"
        ds.SeriesTime = "100000"
        ds.AcquisitionDate = "20240101"
        ds.AcquisitionTime = "100000"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [float(v) for v in iop_arr]
        pos = np.asarray(origin_xyz_mm, dtype=float) + k * spacing_xyz_mm[2] * normal
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.PixelSpacing = [float(spacing_xyz_mm[1]), float(spacing_xyz_mm[0])]
        ds.SliceThickness = float(spacing_xyz_mm[2])
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        stored = np.round((volume[k].astype(np.float64) - intercept) / slopes[k])
        if modality == "CT":
            ds.PixelRepresentation = 1
            pixels = np.clip(stored, -32768, 32767).astype(np.int16)
        else:
            ds.PixelRepresentation = 0
            pixels = np.clip(stored, 0, 65535).astype(np.uint16)
        ds.RescaleSlope = f"{slopes[k]:.10g}"
        ds.RescaleIntercept = f"{intercept:.10g}"
        ds.PixelData = pixels.tobytes()
        if extra is not None:
            extra(ds, k)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def pet_suv_tags(
    weight_kg: float | None = 70.0,
    dose_bq: float | None = 3.7e8,
    injection_time: str = "090000",
    units: str = "BQML",
) -> Callable[[Dataset, int], None]:
    """Return an ``extra`` callback that adds the tags body-weight SUV needs (QIBA, BQML/START)."""

    def add(ds: Dataset, k: int) -> None:
        ds.Units = units
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["ATTN", "DECY"]
        if weight_kg is not None:
            ds.PatientWeight = f"{weight_kg:g}"
        info = Dataset()
        info.Radiopharmaceutical = "Fluorodeoxyglucose"
        info.RadionuclideHalfLife = f"{F18_HALF_LIFE_S:g}"
        if dose_bq is not None:
            info.RadionuclideTotalDose = f"{dose_bq:g}"
        info.RadiopharmaceuticalStartTime = injection_time
        info.RadiopharmaceuticalStartDateTime = "20240101" + injection_time
        ds.RadiopharmaceuticalInformationSequence = [info]

    return add


def suv_factor_bqml(weight_kg: float = 70.0, dose_bq: float = 3.7e8, delay_s: float = 3600.0) -> float:
    """Body-weight SUV factor for the tags of :func:`pet_suv_tags` (g/mL per Bq/mL)."""
    decayed = dose_bq * 2.0 ** (-delay_s / F18_HALF_LIFE_S)
    return weight_kg * 1000.0 / decayed


def write_study(
    root: str | os.PathLike,
    *,
    study_uid: str | None = None,
    ct_shape_zyx: tuple[int, int, int] = (8, 24, 24),
    ct_spacing_xyz_mm: Sequence[float] = (2.0, 2.0, 3.0),
    pet_shape_zyx: tuple[int, int, int] = (6, 12, 12),
    pet_spacing_xyz_mm: Sequence[float] = (4.0, 4.0, 4.0),
    with_pet: bool = True,
    pet_frame_uid: str | None = None,
    pet_extra: Callable[[Dataset, int], None] | None = None,
    seed: int = 0,
) -> dict:
    """Write a small CT + PET study (a body block with a hot sphere) under ``root``.

    Returns
    -------
    dict
        ``study_uid``, ``ct_files``, ``pet_files``, ``ct_volume``, ``pet_volume`` (Bq/mL),
        ``frame_uid``.
    """
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    root = Path(root)
    z, y, x = np.indices(ct_shape_zyx)
    ct = np.full(ct_shape_zyx, -1000.0)
    ct[:, 2:-2, 2:-2] = 40.0
    ct += rng.normal(0, 5, ct.shape).round()
    ct_origin = (-ct_shape_zyx[2] * ct_spacing_xyz_mm[0] / 2, -ct_shape_zyx[1] * ct_spacing_xyz_mm[1] / 2, -10.0)
    ct_files = write_series(
        root / "ct", ct, modality="CT", study_uid=study_uid, frame_uid=frame_uid,
        spacing_xyz_mm=ct_spacing_xyz_mm, origin_xyz_mm=ct_origin, intercept=-1024.0,
    )
    pet = np.full(pet_shape_zyx, 5000.0)
    pet[pet_shape_zyx[0] // 2, pet_shape_zyx[1] // 2, pet_shape_zyx[2] // 2] = 40000.0
    pet_origin = (-pet_shape_zyx[2] * pet_spacing_xyz_mm[0] / 2, -pet_shape_zyx[1] * pet_spacing_xyz_mm[1] / 2, -10.0)
    pet_files: list[Path] = []
    if with_pet:
        slopes = [1.0 + 0.25 * k for k in range(pet_shape_zyx[0])]
        pet_files = write_series(
            root / "pet", pet, modality="PT", study_uid=study_uid, frame_uid=pet_frame_uid or frame_uid,
            spacing_xyz_mm=pet_spacing_xyz_mm, origin_xyz_mm=pet_origin, slope=slopes,
            extra=pet_extra or pet_suv_tags(),
        )
    return {
        "study_uid": study_uid, "ct_files": ct_files, "pet_files": pet_files, "ct_volume": ct,
        "pet_volume": pet, "frame_uid": frame_uid,
    }


def thorax_volumes(
    shape_zyx: tuple[int, int, int] = (12, 40, 48),
    spacing_xyz_mm: Sequence[float] = (7.0, 7.0, 6.0),
    tumour_center_mm: Sequence[float] = (-60.0, 0.0, 0.0),
    tumour_radius_mm: float = 16.0,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A coarse thorax: body, two lungs, a mediastinum, a spine, a hot lung tumour.

    Returns
    -------
    ct_hu : numpy.ndarray
        ``(z, y, x)`` HU, axial, LPS, origin chosen so the volume is centred on (0, 0, 0).
    suv : numpy.ndarray
        The SUV on the same grid (body 1, lungs 0.3, tumour 8).
    origin_xyz_mm : tuple of float
    """
    nz, ny, nx = shape_zyx
    sx, sy, sz = spacing_xyz_mm
    origin = (-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -(nz - 1) * sz / 2)
    z, y, x = np.meshgrid(
        origin[2] + sz * np.arange(nz), origin[1] + sy * np.arange(ny), origin[0] + sx * np.arange(nx), indexing="ij"
    )
    body = (x / 150.0) ** 2 + (y / 115.0) ** 2 <= 1
    lungs = (((x - 65) / 45.0) ** 2 + (y / 75.0) ** 2 <= 1) | (((x + 65) / 45.0) ** 2 + (y / 75.0) ** 2 <= 1)
    lungs &= np.abs(z) < (nz / 2 - 1.5) * sz  # closed at top and bottom
    spine = ((x / 18.0) ** 2 + ((y - 85) / 18.0) ** 2) <= 1
    t = np.asarray(tumour_center_mm, dtype=float)
    tumour = ((x - t[0]) ** 2 + (y - t[1]) ** 2 + (z - t[2]) ** 2) <= tumour_radius_mm**2
    ct = np.full(shape_zyx, -1000.0)
    ct[body] = 40.0
    ct[lungs] = -850.0
    ct[spine & body] = 500.0
    ct[tumour] = 30.0
    suv = np.zeros(shape_zyx)
    suv[body] = 1.0
    suv[lungs] = 0.3
    suv[tumour] = 8.0
    return ct, suv, origin


def write_thorax_study(
    root: str | os.PathLike,
    *,
    study_uid: str | None = None,
    with_pet: bool = True,
    with_report: bool = True,
    reports_dir: str | os.PathLike | None = None,
    pet_frame_uid: str | None = None,
    pet_extra: Callable[[Dataset, int], None] | None = None,
    ct_extra: Callable[[Dataset, int], None] | None = None,
    weight_kg: float = 70.0,
    dose_bq: float = 3.7e8,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-0001",
) -> dict:
    """Write a CT + PET thorax study (and its report) whose ground truth the pipeline can derive.

    The PET is written on its own, coarser grid (same frame of reference) as Bq/mL with
    per-slice slopes, with the tags of :func:`pet_suv_tags` (injection one hour before).

    Returns
    -------
    dict
        ``study_uid``, ``ct_files``, ``pet_files``, ``report`` (path or None), ``tumour_mm``.
    """
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    root = Path(root)
    ct, _, ct_origin = thorax_volumes()
    ct_files = write_series(
        root / "ct", ct, modality="CT", study_uid=study_uid, frame_uid=frame_uid, spacing_xyz_mm=(7.0, 7.0, 6.0),
        origin_xyz_mm=ct_origin, intercept=-1024.0, extra=ct_extra, patient_name=patient_name, patient_id=patient_id,
    )
    pet_files: list[Path] = []
    if with_pet:
        _, suv, pet_origin = thorax_volumes((12, 30, 36), (9.0, 9.0, 6.0))
        factor = suv_factor_bqml(weight_kg, dose_bq)
        bqml = suv / factor
        slopes = [0.5 + 0.05 * k for k in range(suv.shape[0])]
        pet_files = write_series(
            root / "pet", bqml, modality="PT", study_uid=study_uid, frame_uid=pet_frame_uid or frame_uid,
            spacing_xyz_mm=(9.0, 9.0, 6.0), origin_xyz_mm=pet_origin, slope=slopes,
            extra=pet_extra or pet_suv_tags(weight_kg, dose_bq), patient_name=patient_name, patient_id=patient_id,
        )
    report = None
    if with_report:
        import json

        rdir = Path(reports_dir) if reports_dir is not None else root / "reports"
        rdir.mkdir(parents=True, exist_ok=True)
        report = rdir / f"{generate_uid()[-12:]}.json"
        report.write_text(json.dumps({
            "study_instance_uid": study_uid,
            "findings": [{"text": "primary tumour, right lung", "kind": "primary", "position_mm": [-58.0, 3.0, 2.0]}],
        }))
    return {"study_uid": study_uid, "ct_files": ct_files, "pet_files": pet_files, "report": report,
            "tumour_mm": (-60.0, 0.0, 0.0)}


#: Quality ranges of the fixture thorax of :func:`thorax_volumes` (lungs only 5.4 cm tall: about 1 L of
#: lung and 0.4 L of mediastinum), used by :func:`preprocess_catalog` instead of the adult ranges.
FIXTURE_QUALITY = {"lung_ml": [500.0, 9000.0], "mediastinum_ml": [200.0, 2500.0]}


def preprocess_catalog(raw: Path, out: Path, workers: int = 1, **overrides):
    """The project's preprocess catalog and parameters with every data path moved under ``out``.

    ``raw`` holds ``dicom/``, ``reports/`` and optionally ``phantom_truth/`` and ``corrections/``. The project's
    ``conf/base/catalog_preprocess.yml`` and ``parameters_preprocess.yml`` are used as they are,
    except that ``data/`` becomes ``out``, the raw paths point into ``raw``, the pseudonym and
    file-label maps go to ``out/local``, and ``preprocess.quality`` takes :data:`FIXTURE_QUALITY`.
    ``overrides``: ``{stage: {key: value}}`` merged into ``preprocess.<stage>``.

    Returns
    -------
    catalog : kedro.io.DataCatalog
    params : dict
        The ``preprocess`` parameters used.
    """
    import yaml
    from kedro.io import DataCatalog

    conf = Path(__file__).resolve().parents[1] / "conf" / "base"
    catalog_conf = yaml.safe_load((conf / "catalog_preprocess.yml").read_text())
    for entry in catalog_conf.values():
        for key in ("path", "filepath", "records_dir"):
            if key in entry and entry[key].startswith("data/"):
                entry[key] = str(out / entry[key].removeprefix("data/"))
    catalog_conf["raw_dicom"]["path"] = str(raw / "dicom")
    catalog_conf["raw_reports"]["path"] = str(raw / "reports")
    for entry in catalog_conf.values():  # the pseudonym and file-label maps
        if entry.get("filepath", "").startswith("conf/local/"):
            entry["filepath"] = str(out / "local" / entry["filepath"].removeprefix("conf/local/"))
    params = yaml.safe_load((conf / "parameters_preprocess.yml").read_text())["preprocess"]
    params["phantom_qa"]["truth_dir"] = str(raw / "phantom_truth")
    params["labels"]["corrections_dir"] = str(raw / "corrections")
    params["executor"].update(workers=workers, staging_dir=str(out / "02_intermediate"))
    params["quality"].update(FIXTURE_QUALITY)
    for stage, change in overrides.items():
        params[stage].update(change)
    catalog = DataCatalog.from_config(catalog_conf)
    for stage, block in params.items():
        catalog[f"params:preprocess.{stage}"] = block
    catalog["params:suv"] = yaml.safe_load((conf / "parameters_suv.yml").read_text())["suv"]
    return catalog, params


def run_preprocess_catalog(raw: Path, out: Path, workers: int = 1, pipeline=None, **overrides) -> dict:
    """Run the preprocess pipeline (or ``pipeline``) through the project's catalog, paths moved under ``out``.

    Returns
    -------
    dict
        ``manifest`` (the JSON manifest), ``log`` (every log record's text), ``params``.
    """
    import io
    import json
    import logging

    from kedro.runner import SequentialRunner

    from colearn_pipeline.pipelines.preprocess import create_pipeline

    catalog, params = preprocess_catalog(raw, out, workers, **overrides)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.INFO)
    root_logger = logging.getLogger("colearn_pipeline")
    old_level = root_logger.level
    root_logger.setLevel(logging.INFO)
    root_logger.addHandler(handler)
    try:
        SequentialRunner().run(pipeline or create_pipeline(), catalog)
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
    manifest = json.loads((out / "08_reporting" / "preprocess_manifest.json").read_text())
    return {"manifest": manifest, "log": stream.getvalue(), "params": params}


def write_enhanced(files: Sequence[str | os.PathLike], out_path: str | os.PathLike, series_uid: str | None = None) -> Path:
    """Convert a classic CT or PET series into one legacy-converted enhanced multi-frame file (highdicom)."""
    import pydicom
    from highdicom.legacy import LegacyConvertedEnhancedCTImage, LegacyConvertedEnhancedPETImage

    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:
        ds.StudyID = ds.get("StudyID", "1")
        ds.AccessionNumber = ds.get("AccessionNumber", "")
        ds.ReferringPhysicianName = ds.get("ReferringPhysicianName", "")
        ds.StudyTime = ds.get("StudyTime", "100000")
        ds.Manufacturer = ds.get("Manufacturer", "test")
        ds.PatientSex = ds.get("PatientSex", "F")
        ds.ContentDate, ds.ContentTime = "20240101", "100000"
    cls = LegacyConvertedEnhancedCTImage if datasets[0].Modality == "CT" else LegacyConvertedEnhancedPETImage
    image = cls(datasets, series_uid or generate_uid(), 90, generate_uid(), 1)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(out, enforce_file_format=True)
    return out


def write_non_image(path: str | os.PathLike, study_uid: str, sop_class: str, modality: str, **tags) -> Path:
    """A DICOM object of ``sop_class`` (screenshot, RTSTRUCT, SR, ...) in the study, without geometry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _base_dataset(path, sop_class)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Doe^Jane"
    for k, v in tags.items():
        setattr(ds, k, v)
    if "Rows" in tags:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes(int(tags["Rows"]) * int(tags["Columns"]))
    ds.save_as(path, enforce_file_format=True)
    return path


SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"


def write_cluttered_study(root: str | os.PathLike, pet_signals: str = "corrected_image") -> dict:
    """A study as a hospital archive exports it: the axial CT and AC PET among clutter.

    Clutter: a coronal reformat (DERIVED\\PRIMARY\\REFORMATTED, more images than the CT), a
    screenshot (secondary capture, Modality CT), an enhanced multi-frame CT beside the classic
    one, a non-attenuation-corrected PET and an RT structure set. ``pet_signals`` says how the
    two PET series tell their corrections: ``"corrected_image"`` (CorrectedImage on both),
    ``"method"`` (no CorrectedImage; AttenuationCorrectionMethod on the AC series only) or
    ``"none"`` (no signal at all: ambiguous).
    """
    root = Path(root)

    def ac(ds, k):
        pet_suv_tags()(ds, k)
        ds.SeriesNumber = 4
        if pet_signals != "corrected_image":
            del ds.CorrectedImage
        if pet_signals == "method":
            ds.AttenuationCorrectionMethod = "CT-based"

    study = write_study(root, pet_extra=ac, ct_shape_zyx=(8, 24, 24))
    uid, frame = study["study_uid"], study["frame_uid"]

    def nac(ds, k):
        pet_suv_tags()(ds, k)
        ds.SeriesNumber = 3
        ds.CorrectedImage = ["DECY"]
        if pet_signals != "corrected_image":
            del ds.CorrectedImage

    study["nac_files"] = write_series(
        root / "pet_nac", study["pet_volume"], modality="PT", study_uid=uid, frame_uid=frame,
        spacing_xyz_mm=(4.0, 4.0, 4.0), origin_xyz_mm=(-24.0, -24.0, -10.0), extra=nac,
    )

    def reformat(ds, k):
        ds.ImageType = ["DERIVED", "PRIMARY", "REFORMATTED"]
        ds.SeriesNumber = 5

    study["coronal_files"] = write_series(
        root / "coronal", np.zeros((24, 8, 24)), modality="CT", study_uid=uid, frame_uid=frame,
        iop=(1, 0, 0, 0, 0, -1), spacing_xyz_mm=(2.0, 3.0, 2.0), origin_xyz_mm=(-24.0, -24.0, 14.0),
        intercept=-1024.0, extra=reformat,
    )
    study["enhanced_ct"] = write_enhanced(study["ct_files"], root / "enhanced" / "ct_enhanced.dcm")
    study["screenshot"] = write_non_image(root / "misc" / "screen.dcm", uid, SECONDARY_CAPTURE, "CT",
                                          Rows=16, Columns=16)
    study["rtstruct"] = write_non_image(root / "misc" / "rtss.dcm", uid, RT_STRUCTURE_SET, "RTSTRUCT")
    return study


def tiny_phantom_ct(raw: Path, seed: int = 11):
    """One tiny phantom study written into ``raw``: ``(pseudonym, ct_info, ct volume, truth labels uint8 on the CT grid)``."""
    import SimpleITK as sitk

    from colearn_pipeline.dicom.discovery import discover, select_ct_pet
    from colearn_pipeline.dicom.series import read_series
    from colearn_pipeline.phantom.generate import generate_cohort

    generate_cohort(raw, n_studies=1, seed=seed, size="tiny", progress=False)
    (pseudonym, files), = discover(raw / "dicom").studies.items()
    ct_info, _, _ = select_ct_pet(files, str(raw / "dicom"))
    ct = read_series(ct_info.files, pseudonym, root=raw / "dicom")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "phantom_truth" / pseudonym / "labels.nii.gz")))
    return pseudonym, ct_info, ct, truth.astype(np.uint8)
