"""``colearn-suv``: convert the PET series in a folder to SUV NIfTI volumes.

Usage::

    colearn-suv PET_FOLDER --out suv.nii.gz [--suv-type bw|lbm|bsa|ibw] [--params FILE]

The folder is searched recursively and files are grouped by their tags (Modality ``PT``,
SeriesInstanceUID), never by names. Each PET series is read with
:func:`colearn_pipeline.dicom.read_series` (slices sorted along the normal, per-slice rescale,
geometry from the positions), converted with :func:`colearn_pipeline.suv.suv_conversion` and
written on the PET's own grid. With several PET series the outputs are ``<stem>_<k>.nii.gz``,
``k = 1, 2, ...`` in order of SeriesNumber. For each series the convention met and the factor(s)
used are printed. The plausibility ranges (weight, height, dose, half-life, SUV values) are
:data:`BUILTIN_PARAMS`, the same values as the ``suv`` block of ``conf/base/parameters_suv.yml``
(the pipeline's ``params:suv``; a test keeps the two equal), so the command works from any folder;
``--params FILE`` reads a complete ``suv`` block from FILE instead. Each output is written
to a temporary file beside it and renamed, so a failed series leaves no partial file. The exit
status is 0 when every series was converted, 1 otherwise (each failure is printed with the tag
it concerns and the value), 2 on a usage error (a missing or bad ``--params`` file, ``--out`` not .nii/.nii.gz).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import yaml

from colearn_pipeline.suv.conversion import SUV_TYPES, SuvConversion, suv_conversion, to_suv
from colearn_pipeline.suv.errors import SuvError
from colearn_pipeline.suv.plausibility import SuvPlausibility

#: SOP classes that are one-slice-per-file PET images (PET Image Storage).
PET_IMAGE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.128",)
#: Suffixes of a NIfTI path that ``--out`` may carry.
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: The ``suv`` block used when ``--params`` is not given: equal to conf/base/parameters_suv.yml
#: (tests/test_cli_defaults.py compares them), so the command needs no project folder.
BUILTIN_PARAMS: dict = {
    "weight_kg": [20.0, 300.0],
    "height_m": [0.5, 2.5],
    "dose_mbq": [25.0, 1000.0],
    "dose_unit": "auto",
    "half_life_relative_tolerance": 0.01,
    "radionuclides": {
        "F-18": {"half_life_s": 6586.2, "codes": ["C-111A1", "77004003", "^18^Fluorine"]},
        "Ga-68": {"half_life_s": 4062.6, "codes": ["C-131A1", "35337001", "^68^Gallium"]},
        "C-11": {"half_life_s": 1221.8, "codes": ["40565003", "^11^Carbon"]},
        "N-13": {"half_life_s": 597.9, "codes": ["21576001", "^13^Nitrogen"]},
        "O-15": {"half_life_s": 122.24, "codes": ["129504001", "^15^Oxygen"]},
        "Cu-64": {"half_life_s": 45721.0, "codes": ["3932008", "^64^Copper"]},
        "Rb-82": {"half_life_s": 75.45, "codes": ["C-159A2", "79197006", "^82^Rubidium"]},
        "Zr-89": {"half_life_s": 282240.0, "codes": ["C-168A4", "63360001", "^89^Zirconium"]},
    },
    "suv_range": [-5.0, 500.0],
    "body_median_suv": [0.2, 5.0],
    "slice_ratio_max": 3.0,
    "slice_window": 2,
    "slice_min_body_fraction": 0.1,
    "body_threshold_fraction_of_mean": 0.5,
}


# ---------------------------------------------------------------------------------------------
# Discovery by tags. Kept minimal and self-contained here; the preprocess pipeline has its own
# study-level discovery in colearn_pipeline.dicom and the two may later be unified.


@dataclass(frozen=True)
class PetSeriesFiles:
    """The files of one PET series found in a folder."""

    series_uid: str
    series_number: int | None
    description: str
    files: tuple[str, ...]


def find_pet_series(folder: str | os.PathLike) -> tuple[list[PetSeriesFiles], list[str]]:
    """Group the PET image files under ``folder`` by SeriesInstanceUID.

    Parameters
    ----------
    folder : path-like
        Searched recursively; non-DICOM files and non-PET series are skipped.

    Returns
    -------
    series : list of PetSeriesFiles
        Sorted by SeriesNumber (then UID).
    skipped : list of str
        One line per skipped file that looked like a PET file but could not be used.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[str, list[str]] = {}
    meta: dict[str, tuple[int | None, str]] = {}
    skipped: list[str] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
            continue  # not DICOM, or unreadable: not ours to judge here
        if str(ds.get("Modality", "")).strip().upper() != "PT":
            continue
        sop = str(ds.get("SOPClassUID", "")).strip()
        if sop and sop not in PET_IMAGE_SOP_CLASSES:
            skipped.append(f"{path.name}: SOPClassUID {sop} is not single-slice PET Image Storage")
            continue
        uid = str(ds.get("SeriesInstanceUID", "")).strip()
        if not uid:
            skipped.append(f"{path.name}: no SeriesInstanceUID (0020,000E)")
            continue
        groups.setdefault(uid, []).append(str(path))
        if uid not in meta:
            number = ds.get("SeriesNumber")
            try:
                series_number = int(number) if number not in (None, "") else None
            except (TypeError, ValueError):
                series_number = None
            meta[uid] = (series_number, str(ds.get("SeriesDescription", "") or "").strip())
    series = [
        PetSeriesFiles(uid, meta[uid][0], meta[uid][1], tuple(files)) for uid, files in groups.items()
    ]
    series.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))
    return series, skipped


# ---------------------------------------------------------------------------------------------


def output_paths(out: str | os.PathLike, n_series: int) -> list[Path]:
    """``out`` itself for one series, else ``<stem>_<k><suffix>`` for k = 1..n."""
    out = Path(out)
    if n_series == 1:
        return [out]
    suffix = nifti_suffix(out)
    stem = out.name[: len(out.name) - len(suffix)]
    return [out.with_name(f"{stem}_{k}{suffix}") for k in range(1, n_series + 1)]


def describe_factors(conversion: SuvConversion) -> str:
    """One line describing the factor(s) used."""
    f = conversion.slice_factors
    if np.allclose(f, f[0], rtol=1e-12, atol=0.0):
        return f"factor {f[0]:.9g} (all {f.size} slices)"
    return f"factors {f.min():.9g} .. {f.max():.9g} over {f.size} slices ({np.unique(f).size} distinct)"


def nifti_suffix(path: str | os.PathLike) -> str:
    """``.nii.gz`` or ``.nii``; raises ValueError for any other name."""
    name = Path(path).name
    suffix = next((s for s in NIFTI_SUFFIXES if name.endswith(s) and len(name) > len(s)), "")
    if not suffix:
        raise ValueError(f"--out {path}: needs a NIfTI extension ({' or '.join(NIFTI_SUFFIXES)})")
    return suffix


def load_plausibility(path: str | os.PathLike | None) -> SuvPlausibility:
    """The ``suv`` block of a parameters YAML file (:data:`BUILTIN_PARAMS` when ``path`` is None).

    Raises ValueError naming the file.
    """
    if path is None:
        return SuvPlausibility.from_params(BUILTIN_PARAMS)
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"parameters file {path} not found (--params FILE needs a top-level 'suv' block as in "
            "conf/base/parameters_suv.yml; without --params the built-in values are used)"
        )
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or "suv" not in data:
        raise ValueError(f"parameters file {path} has no top-level 'suv' block")
    try:
        return SuvPlausibility.from_params(data["suv"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def convert_series(
    series: PetSeriesFiles, out_path: Path, suv_type: str, label: str, plausibility: SuvPlausibility
) -> SuvConversion:
    """Read one PET series, convert to SUV (checked against ``plausibility``) and write NIfTI atomically."""
    import SimpleITK as sitk

    from colearn_pipeline.dicom import read_series

    volume = read_series(list(series.files), label)
    conversion = suv_conversion(volume.datasets, suv_type, source=label, plausibility=plausibility)
    suv = to_suv(volume.array, conversion, plausibility=plausibility, source=label)
    image = volume.to_sitk(suv)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial{nifti_suffix(out_path)}")
    try:
        sitk.WriteImage(image, str(partial), True)
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return conversion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colearn-suv",
        description="Convert the PET series in a folder to SUV NIfTI volumes on the PET's own grid.",
    )
    parser.add_argument(
        "pet_folder", metavar="PET_FOLDER", help="folder with the PET DICOM files (searched recursively)"
    )
    parser.add_argument("--out", required=True, help="output NIfTI path (suffixed _1, _2, ... for several series)")
    parser.add_argument("--suv-type", default="bw", choices=SUV_TYPES, help="SUV normalisation (default bw)")
    parser.add_argument(
        "--params",
        default=None,
        help="YAML file with a complete 'suv' plausibility block (default: built-in, as conf/base/parameters_suv.yml)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``colearn-suv``; returns the exit status."""
    from colearn_pipeline.dicom import DicomSeriesError

    args = build_parser().parse_args(argv)
    try:
        nifti_suffix(args.out)
        plausibility = load_plausibility(args.params)
    except ValueError as exc:
        print(f"colearn-suv: {exc}", file=sys.stderr)
        return 2
    folder = Path(args.pet_folder)
    if not folder.is_dir():
        print(f"colearn-suv: {folder} is not a folder", file=sys.stderr)
        return 1
    series_list, skipped = find_pet_series(folder)
    for line in skipped:
        print(f"colearn-suv: skipped {line}", file=sys.stderr)
    if not series_list:
        print(f"colearn-suv: no PET image series (Modality PT) found under {folder}", file=sys.stderr)
        return 1
    failures = 0
    for k, (series, out_path) in enumerate(zip(series_list, output_paths(args.out, len(series_list))), start=1):
        number = "?" if series.series_number is None else str(series.series_number)
        label = f"PET series {k}/{len(series_list)} (SeriesNumber {number})"
        try:
            conversion = convert_series(series, out_path, args.suv_type, label, plausibility)
        except (SuvError, DicomSeriesError) as exc:
            failures += 1
            print(f"colearn-suv: FAILED {exc}", file=sys.stderr)
            continue
        where = os.path.relpath(os.path.dirname(series.files[0]), folder)
        print(f"{label}: {len(series.files)} slices in {where} -> {out_path}")
        print(f"  SUV{conversion.suv_type}: {conversion.convention}")
        print(f"  reference time: {conversion.reference_time_source}")
        print(f"  {describe_factors(conversion)}")
        for note in conversion.details.get("notes", []):
            print(f"  note: {note}")
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
