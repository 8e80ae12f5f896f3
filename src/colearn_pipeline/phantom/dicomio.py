"""Writing the phantom's CT and PET series as a scanner exports them (pydicom)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    generate_uid,
)

from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.geometry import Grid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
CT_KVP = "120"
CT_WINDOW = ("40", "400")
PET_CORRECTIONS = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
F18_POSITRON_FRACTION = "0.9673"
DS_SIGNIFICANT_DIGITS = 10


def ds_str(value: float) -> str:
    """A Decimal String (at most 16 characters) for ``value``."""
    s = f"{value:.{DS_SIGNIFICANT_DIGITS}g}"
    if len(s) > 16:
        s = f"{value:.6e}"
    return s


def da(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d")


def tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S")


def dt_str(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S")


def uid(*parts: object) -> str:
    """A deterministic UID under the pydicom organisation root, derived from ``parts``."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["colearn-phantom", *map(str, parts)])


@dataclass
class StudyHeader:
    """Patient, study, timing and convention values shared by a study's two series."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age_years: int
    weight_kg_ds: str
    height_m_ds: str
    study_uid: str
    frame_uid: str
    ct_series_uid: str
    pet_series_uid: str
    study_id: str
    accession: str
    ct_start: dt.datetime
    pet_start: dt.datetime
    injection: dt.datetime
    dose_bq_ds: str
    vendor: str
    time_style: str
    frame_duration_s: float
    bed_length_mm: float
    counts_per_bqml: float
    uid_seed: tuple
    transfer_syntax: str = "explicit_le"   # a TRANSFER_SYNTAXES name
    enhanced: bool = False                 # one legacy-converted enhanced multi-frame object per series
    body_part: str = ""                    # BodyPartExamined (0018,0015) of both series; blank: not written

    @property
    def style(self) -> dict:
        return C.VENDOR_STYLES[self.vendor]

    @property
    def convention(self) -> str:
        return f"{self.vendor}_{self.time_style}"

    @property
    def uptake_s(self) -> float:
        return (self.pet_start - self.injection).total_seconds()

    @property
    def decay_to_start(self) -> float:
        """Fraction of the injected activity left at the PET series start."""
        return float(2.0 ** (-self.uptake_s / C.F18_HALF_LIFE_S))


def _common(ds: Dataset, h: StudyHeader, modality: str, series_uid: str, series_time: dt.datetime) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = da(h.ct_start)
    ds.StudyTime = tm(h.ct_start - dt.timedelta(minutes=2))
    ds.SeriesDate = da(series_time)
    ds.SeriesTime = tm(series_time)
    ds.AccessionNumber = h.accession
    ds.Modality = modality
    ds.Manufacturer = h.style["manufacturer"]
    ds.ManufacturerModelName = h.style["model"]
    ds.InstitutionName = "Phantom General Hospital"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "PET-CT WHOLE BODY FDG"
    if h.body_part:
        ds.BodyPartExamined = h.body_part
    ds.PatientName = h.patient_name
    ds.PatientID = h.patient_id
    ds.PatientBirthDate = h.birth_date
    ds.PatientSex = h.sex
    ds.PatientAge = f"{h.age_years:03d}Y"
    ds.PatientWeight = h.weight_kg_ds
    ds.PatientSize = h.height_m_ds
    ds.StudyInstanceUID = h.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = h.study_id
    ds.FrameOfReferenceUID = h.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15


def _finish(ds: Dataset, sop_class: str, sop_uid: str) -> Dataset:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _geometry(ds: Dataset, grid: Grid, k: int) -> None:
    nz, ny, nx = grid.shape_zyx
    x0, y0, z0 = grid.origin_xyz_mm
    sx, sy, sz = grid.spacing_xyz_mm
    ds.ImagePositionPatient = [ds_str(x0), ds_str(y0), ds_str(z0 + k * sz)]
    ds.SliceLocation = ds_str(z0 + k * sz)
    ds.PixelSpacing = [ds_str(sy), ds_str(sx)]
    ds.SliceThickness = ds_str(sz)
    ds.Rows = ny
    ds.Columns = nx
    # scanners number from the head down: instance 1 is the highest slice
    ds.InstanceNumber = nz - k


#: Transfer syntaxes the phantom can store a study in: name -> (UID, encoder options, lossless).
#: Lossy options: JPEG-LS near-lossless ``jls_error`` is the codec's bound on the absolute error
#: in stored values; JPEG 2000 lossy at compression ratio ``j2k_cr`` has no bound (OpenJPEG's
#: PSNR target offsets flat frames), its tested error is an RMS within 1 % of each frame's range.
TRANSFER_SYNTAXES: dict[str, tuple[str, dict, bool]] = {
    "explicit_le": (ExplicitVRLittleEndian, {}, True),
    "implicit_le": (ImplicitVRLittleEndian, {}, True),
    "deflate": (DeflatedExplicitVRLittleEndian, {}, True),
    "rle": (RLELossless, {}, True),
    "jpeg_ls": (JPEGLSLossless, {}, True),
    "jpeg_ls_near": (JPEGLSNearLossless, {"jls_error": 2}, False),
    "jpeg2000": (JPEG2000Lossless, {}, True),
    "jpeg2000_lossy": (JPEG2000, {"j2k_cr": [4.0]}, False),
}


def encode(ds: Dataset, syntax: str = "explicit_le") -> Dataset:
    """Store ``ds`` in one of :data:`TRANSFER_SYNTAXES` (in place; pydicom's installed encoders).

    JPEG 2000 needs frames of at least 32x32 pixels (OpenJPEG's default resolution levels).
    """
    if syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"unknown transfer syntax {syntax!r}; choose one of {sorted(TRANSFER_SYNTAXES)}")
    uid_, options, _ = TRANSFER_SYNTAXES[syntax]
    if uid_ in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = uid_
    else:
        ds.compress(uid_, **options)
    return ds


def _save(ds: Dataset, path: Path, syntax: str = "explicit_le") -> None:
    if syntax != "explicit_le":
        encode(ds, syntax)
    tmp = path.with_name(path.name + ".part")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


def _finish_slice(ds: Dataset, pixels: np.ndarray, sop_class: str, sop_uid: str, tweak, k: int) -> Dataset:
    """Put a slice's pixels and SOP identity in ``ds`` and let ``tweak(ds, k)`` change its tags."""
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    _finish(ds, sop_class, sop_uid)
    if tweak is not None:
        tweak(ds, k)
    return ds


def write_ct(paths: list[Path], hu: np.ndarray, grid: Grid, h: StudyHeader, tweak=None, instance_tag: str = "") -> None:
    """Write the CT series, one file per slice (``paths[k]`` holds slice ``k``).

    ``tweak(ds, k)`` may change a slice's tags before it is stored (archive clutter; then give an
    ``instance_tag`` so SOPInstanceUIDs differ from the main series'); with
    ``h.enhanced`` the series becomes one multi-frame object at ``paths[0]``.
    """
    datasets = []
    signed = h.style["ct_signed"]
    stored = (hu.astype(np.int32) - int(C.CT_RESCALE_INTERCEPT))
    stored = stored.astype(np.int16 if signed else np.uint16)
    fov = grid.spacing_xyz_mm[0] * grid.shape_zyx[2]
    for k in range(grid.shape_zyx[0]):
        ds = Dataset()
        _common(ds, h, "CT", h.ct_series_uid, h.ct_start)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber = 2
        ds.SeriesDescription = "CT WB 3.0 B31f" if h.vendor == "siemens" else "CT ATTENUATION"
        ds.AcquisitionDate = da(h.ct_start)
        ds.AcquisitionTime = tm(h.ct_start)
        ds.ContentDate = da(h.ct_start)
        ds.ContentTime = tm(h.ct_start)
        ds.KVP = CT_KVP
        ds.ReconstructionDiameter = ds_str(fov)
        ds.GantryDetectorTilt = "0"
        ds.ConvolutionKernel = "B31f" if h.vendor == "siemens" else "STANDARD"
        _geometry(ds, grid, k)
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleIntercept = ds_str(C.CT_RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = CT_WINDOW
        datasets.append(_finish_slice(ds, stored[k], CT_IMAGE_STORAGE, uid(*h.uid_seed, instance_tag or "ct", k), tweak, k))
    _store(datasets, paths, h)


def encode_pet(suv: np.ndarray, h: StudyHeader) -> tuple[np.ndarray, list[str], np.ndarray, dict]:
    """Turn the scanner's SUV image into stored PET pixels the way the study's vendor does.

    Parameters
    ----------
    suv : numpy.ndarray
        float32 SUV on the PET grid, ``(z, y, x)``, >= 0.
    h : StudyHeader

    Returns
    -------
    pixels : numpy.ndarray
        int16 stored values.
    slopes : list of str
        Per-slice RescaleSlope (DS strings; intercept is 0).
    decoded_suv : numpy.ndarray
        float32 SUV that the stored pixels and header values represent (the truth).
    info : dict
        Unit conversion factors used (JSON-ready).
    """
    weight_g = float(h.weight_kg_ds) * 1000.0
    dose = float(h.dose_bq_ds)
    units = h.style["units"]
    decay = 1.0 if h.style["decay_correction"] == "ADMIN" else h.decay_to_start
    bqml_per_suv = dose * decay / weight_g
    info = {"units": units, "decay_correction": h.style["decay_correction"], "decay_factor_to_reference": decay,
            "bqml_per_suv": bqml_per_suv}
    if units == "CNTS":
        bqml_per_cnt = 1.0 / h.counts_per_bqml
        suv_factor_ds = ds_str(bqml_per_cnt / bqml_per_suv)
        act_factor_ds = ds_str(bqml_per_cnt)
        real_per_suv = 1.0 / float(suv_factor_ds)
        info.update(philips_suv_factor=suv_factor_ds, philips_activity_factor=act_factor_ds)
    else:
        real_per_suv = bqml_per_suv
    real = suv.astype(np.float64) * real_per_suv
    pixels = np.zeros(suv.shape, np.int16)
    decoded = np.zeros(suv.shape, np.float64)
    slopes = []
    for k in range(suv.shape[0]):
        m = float(real[k].max())
        slope_ds = ds_str(m / C.INT16_MAX) if m > 0 else "1"
        slope = float(slope_ds)
        px = np.clip(np.rint(real[k] / slope), 0, C.INT16_MAX)
        pixels[k] = px.astype(np.int16)
        decoded[k] = px * slope
        slopes.append(slope_ds)
    if units == "CNTS":
        decoded_suv = decoded * float(info["philips_suv_factor"])
    else:
        decoded_suv = decoded / real_per_suv
    return pixels, slopes, decoded_suv.astype(np.float32), info


def write_pet(paths: list[Path], pixels: np.ndarray, slopes: list[str], grid: Grid, h: StudyHeader, info: dict,
              tweak=None, instance_tag: str = "") -> None:
    """Write the PET series, one file per slice (``paths[k]`` holds slice ``k``); ``tweak`` as in :func:`write_ct`."""
    datasets = []
    nz = grid.shape_zyx[0]
    lam = np.log(2.0) / C.F18_HALF_LIFE_S
    dur = h.frame_duration_s
    ref_time = h.injection if h.style["decay_correction"] == "ADMIN" else h.pet_start
    z0 = grid.origin_xyz_mm[2]
    for k in range(nz):
        bed = int(((z0 + k * grid.spacing_xyz_mm[2]) - z0) // h.bed_length_mm)
        acq = h.pet_start + dt.timedelta(seconds=bed * dur)
        ds = Dataset()
        _common(ds, h, "PT", h.pet_series_uid, h.pet_start)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesNumber = 3
        ds.SeriesDescription = "PET WB AC"
        ds.AcquisitionDate = da(acq)
        ds.AcquisitionTime = tm(acq)
        ds.ContentDate = da(h.pet_start)
        ds.ContentTime = tm(h.pet_start)
        ds.SeriesType = ["WHOLE BODY", "IMAGE"]
        ds.Units = info["units"]
        ds.CountsSource = "EMISSION"
        ds.DecayCorrection = info["decay_correction"]
        ds.CorrectedImage = PET_CORRECTIONS
        ds.ReconstructionMethod = "OSEM 3i21s"
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "CT"
        ds.ScatterCorrectionMethod = "Model-based"
        ds.NumberOfSlices = nz
        ds.ImageIndex = nz - k
        ds.SliceSensitivityFactor = "1"
        frame_ref_s = (acq - h.pet_start).total_seconds() + np.log(lam * dur / (1 - np.exp(-lam * dur))) / lam
        ds.FrameReferenceTime = ds_str(frame_ref_s * 1000.0)
        ds.ActualFrameDuration = int(round(dur * 1000))
        ds.DecayFactor = ds_str(float(np.exp(lam * ((acq - ref_time).total_seconds())) * lam * dur / (1 - np.exp(-lam * dur))))
        item = Dataset()
        item.Radiopharmaceutical = "Fludeoxyglucose"
        item.RadiopharmaceuticalStartTime = tm(h.injection)
        if h.time_style == "datetime":
            item.RadiopharmaceuticalStartDateTime = dt_str(h.injection)
        item.RadionuclideTotalDose = h.dose_bq_ds
        item.RadionuclideHalfLife = ds_str(C.F18_HALF_LIFE_S)
        item.RadionuclidePositronFraction = F18_POSITRON_FRACTION
        code = Dataset()
        code.CodeValue = "C-111A1"
        code.CodingSchemeDesignator = "SRT"
        code.CodeMeaning = "^18^Fluorine"
        item.RadionuclideCodeSequence = Sequence([code])
        rp = Dataset()
        rp.CodeValue = "C-B1031"
        rp.CodingSchemeDesignator = "SRT"
        rp.CodeMeaning = "Fluorodeoxyglucose F^18^"
        item.RadiopharmaceuticalCodeSequence = Sequence([rp])
        ds.RadiopharmaceuticalInformationSequence = Sequence([item])
        _geometry(ds, grid, k)
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = slopes[k]
        if info["units"] == "CNTS":
            block = ds.private_block(C.PHILIPS_PRIVATE_GROUP, C.PHILIPS_PRIVATE_CREATOR, create=True)
            block.add_new(C.PHILIPS_SUV_FACTOR_OFFSET, "DS", info["philips_suv_factor"])
            block.add_new(C.PHILIPS_ACTIVITY_FACTOR_OFFSET, "DS", info["philips_activity_factor"])
        datasets.append(_finish_slice(ds, pixels[k], PET_IMAGE_STORAGE, uid(*h.uid_seed, instance_tag or "pet", k), tweak, k))
    _store(datasets, paths, h)


def _store(datasets: list[Dataset], paths: list[Path], h: StudyHeader) -> None:
    """Save a series: one file per slice, or (``h.enhanced``) one multi-frame object at ``paths[0]``."""
    if not h.enhanced or len(datasets) < 2:
        for ds, path in zip(datasets, paths):
            _save(ds, path, h.transfer_syntax)
        return
    from highdicom.legacy import LegacyConvertedEnhancedCTImage, LegacyConvertedEnhancedPETImage

    first = datasets[0]
    cls = LegacyConvertedEnhancedCTImage if first.Modality == "CT" else LegacyConvertedEnhancedPETImage
    image = cls(datasets, first.SeriesInstanceUID, int(first.SeriesNumber),
                uid(*h.uid_seed, first.SeriesInstanceUID, "multiframe"), 1)
    _save(image, paths[0], h.transfer_syntax)


__all__ = [
    "TRANSFER_SYNTAXES", "StudyHeader", "archive_options", "ds_str", "encode", "encode_pet", "uid", "write_clutter",
    "write_ct", "write_pet",
]


# ---- archive clutter (what a hospital export holds beside the two series the pipeline needs) ----
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def _clutter_object(path: Path, h: StudyHeader, sop_class: str, modality: str, number: int, tag: str) -> Dataset:
    ds = Dataset()
    _common(ds, h, modality, uid(*h.uid_seed, tag, "series"), h.pet_start)
    del ds.ImageOrientationPatient  # neither object is a slice in patient space
    ds.SeriesNumber = number
    return _finish(ds, sop_class, uid(*h.uid_seed, tag, "instance"))


def write_clutter(folder: Path, hu: np.ndarray, ct_grid: Grid, pixels: np.ndarray, slopes: list[str],
                  pet_grid: Grid, h: StudyHeader, info: dict, name) -> int:
    """Write the archive clutter of one study into ``folder``; return the number of files written.

    A scout (LOCALIZER, one coronal image), a thick second CT series (every second slice, sharp
    kernel), a coronal reformat (DERIVED\\PRIMARY\\REFORMATTED, more images than slices would
    suggest), a non-attenuation-corrected PET (no ATTN/SCAT in CorrectedImage,
    AttenuationCorrectionMethod NONE), a MIP secondary capture and an RT structure set.
    ``name()`` gives a fresh file name. The classic series of the study stay the ones to choose.
    """
    import dataclasses

    folder.mkdir(parents=True, exist_ok=True)
    plain = dataclasses.replace(h, enhanced=False)
    nz, ny, nx = ct_grid.shape_zyx
    (sx, sy, sz), (x0, y0, z0) = ct_grid.spacing_xyz_mm, ct_grid.origin_xyz_mm
    count = 0

    def series(tag: str, number: int, image_type: list[str], **tags):
        def tweak(ds, k):
            ds.SeriesNumber, ds.ImageType = number, image_type
            for key, value in tags.items():
                setattr(ds, key, value(k) if callable(value) else value)
        return dataclasses.replace(plain, ct_series_uid=uid(*h.uid_seed, tag), pet_series_uid=uid(*h.uid_seed, tag)), tweak

    thick_grid = Grid((len(range(0, nz, 2)), ny, nx), (sx, sy, 2 * sz), (x0, y0, z0))
    hh, tweak = series("thick", 5, ["ORIGINAL", "PRIMARY", "AXIAL"], ConvolutionKernel="B70f",
                       SliceThickness=ds_str(2 * sz))
    write_ct([folder / name() for _ in range(thick_grid.shape_zyx[0])], hu[::2], thick_grid, hh, tweak, "thick")
    count += thick_grid.shape_zyx[0]
    step = max(1, ny // 8)
    coronal = hu[:, ::step, :].transpose(1, 0, 2)[:, ::-1, :]  # rows run head to feet
    cor_grid = Grid(coronal.shape, (sx, sz, step * sy), (x0, y0, z0))
    z_top = z0 + (nz - 1) * sz
    hh, tweak = series("coronal", 6, ["DERIVED", "PRIMARY", "REFORMATTED"],
                       ImageOrientationPatient=["1", "0", "0", "0", "0", "-1"],
                       ImagePositionPatient=lambda k: [ds_str(x0), ds_str(y0 + k * step * sy), ds_str(z_top)])
    write_ct([folder / name() for _ in range(coronal.shape[0])], coronal, cor_grid, hh, tweak, "coronal")
    count += coronal.shape[0]
    scout_grid = Grid((1, nz, nx), (sx, sz, sy), (x0, y0 + ny * sy / 2, z0))
    hh, tweak = series("scout", 1, ["ORIGINAL", "PRIMARY", "LOCALIZER"],
                       ImageOrientationPatient=["1", "0", "0", "0", "0", "-1"],
                       ImagePositionPatient=[ds_str(x0), ds_str(y0 + ny * sy / 2), ds_str(z_top)])
    write_ct([folder / name()], hu[::-1, ny // 2, :][None], scout_grid, hh, tweak, "scout")
    hh, tweak = series("nac", 4, ["ORIGINAL", "PRIMARY"], SeriesDescription="PET WB NAC",
                       CorrectedImage=[c for c in PET_CORRECTIONS if c not in ("ATTN", "SCAT")],
                       AttenuationCorrectionMethod="NONE")
    write_pet([folder / name() for _ in range(pet_grid.shape_zyx[0])], pixels, slopes, pet_grid, hh, info, tweak, "nac")
    count += 1 + pet_grid.shape_zyx[0]
    mip = _clutter_object(folder, h, SECONDARY_CAPTURE_STORAGE, "PT", 7, "mip")
    image = pixels.max(axis=1)[::-1].astype(np.uint16)
    mip.ImageType = ["DERIVED", "SECONDARY", "MIP"]
    mip.Rows, mip.Columns = image.shape
    mip.PixelRepresentation = 0
    mip.PixelData = np.ascontiguousarray(image).tobytes()
    _save(mip, folder / name())
    rtss = _clutter_object(folder, h, RT_STRUCTURE_SET_STORAGE, "RTSTRUCT", 8, "rtstruct")
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit"):
        if keyword in rtss:
            delattr(rtss, keyword)
    rtss.StructureSetLabel = "AUTO"
    rtss.StructureSetROISequence = Sequence([])
    _save(rtss, folder / name())
    return count + 2


def archive_options(cfg, index: int) -> dict:
    """The StudyHeader fields (transfer syntax, enhanced) of study ``index`` under ``cfg``'s archive options."""
    syntaxes = tuple(cfg.archive_transfer_syntaxes or ())
    for name in syntaxes:
        if name not in TRANSFER_SYNTAXES:
            raise ValueError(f"archive_transfer_syntaxes: unknown {name!r}; choose from {sorted(TRANSFER_SYNTAXES)}")
    every = int(cfg.archive_enhanced_every or 0)
    return {
        "transfer_syntax": syntaxes[index % len(syntaxes)] if syntaxes else "explicit_le",
        "enhanced": bool(every) and index % every == every - 1,
    }
