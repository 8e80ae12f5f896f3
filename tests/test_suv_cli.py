"""``colearn-suv`` follows the pipeline's rules: plausibility from conf, finite SUV, clear usage errors.

Input: the IBSI-SUV object DRO_0_0 (W 70 kg, 368.08 MBq F-18, SUV 0.2..4 in its mask), copied and
edited to be implausible. Missing reference data is a failure, as in test_suv_ibsi_dro.py.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from test_suv_ibsi_dro import PARAMS

from colearn_pipeline.suv.cli import main

CASE = "DRO_0_0"


@pytest.fixture(scope="module")
def dro_pet(ibsi_suv_root) -> Path:
    """The 20 PET slices of DRO_0_0 (the session's unpacked copy: edit copies only)."""
    folder = ibsi_suv_root / CASE / "PT"
    assert len(list(folder.iterdir())) == 20
    return folder


def _edited_copy(dro_pet: Path, out: Path, **values) -> Path:
    """DRO_0_0 with header values changed on every slice (the raw copy is left untouched)."""
    out.mkdir()
    for path in sorted(dro_pet.iterdir()):
        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            if keyword == "RadionuclideTotalDose":
                ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = value
            else:
                setattr(ds, keyword, value)
        ds.save_as(out / path.name)
    return out


def test_plausible_series_converts(dro_pet, tmp_path, capsys):
    assert main([str(dro_pet), "--out", str(tmp_path / "suv.nii.gz"), "--params", str(PARAMS)]) == 0
    assert (tmp_path / "suv.nii.gz").is_file()
    assert not list(tmp_path.glob(".*partial*")), "temporary file left behind"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"PatientWeight": 500}, "PatientWeight (0010,1030): 500 -> 500 kg is outside the plausible 20..300 kg"),
        ({"PatientWeight": 1.75}, "PatientWeight (0010,1030): 1.75 -> 1.75 kg is outside"),
        ({"RadionuclideTotalDose": 9.46}, "RadionuclideTotalDose (0018,1074): 9.46 read as MBq is 9.46 MBq"),
        ({"RescaleSlope": 0}, "RescaleSlope (0028,1053) must be > 0 and finite, got 0.0"),  # refused by the DICOM reader
        ({"RescaleSlope": 1e30}, "SUV: maximum"),
    ],
)
def test_implausible_series_fails_naming_tag_and_value(dro_pet, tmp_path, capsys, values, expected):
    folder = _edited_copy(dro_pet, tmp_path / "pet", **values)
    out = tmp_path / "out" / "suv.nii.gz"
    assert main([str(folder), "--out", str(out), "--params", str(PARAMS)]) == 1
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (out.parent.exists() and any(out.parent.iterdir())), "nothing written for a refused series"


def test_output_without_extension_is_a_usage_error(dro_pet, tmp_path, capsys):
    assert main([str(dro_pet), "--out", str(tmp_path / "suv"), "--params", str(PARAMS)]) == 2
    assert "needs a NIfTI extension (.nii.gz or .nii)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_missing_or_bad_params_file_is_a_usage_error(dro_pet, tmp_path, capsys):
    assert main([str(dro_pet), "--out", str(tmp_path / "suv.nii.gz"), "--params", str(tmp_path / "none.yml")]) == 2
    assert "none.yml not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yml"
    bad.write_text("suv:\n  weight_kg: [20, 300]\n")
    assert main([str(dro_pet), "--out", str(tmp_path / "suv.nii.gz"), "--params", str(bad)]) == 2
    assert "missing keys" in capsys.readouterr().err
