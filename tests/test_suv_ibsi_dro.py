"""IBSI-SUV conformance: all 17 digital reference objects through ``colearn-suv``.

The objects live in ``tests/data/ibsi_suv/`` (read through ``real_data``). Missing data is a failure,
not a skip: this is the conformance check.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from real_data import IBSI_SUV_EXPECTED_CSV, data_file

from colearn_pipeline.suv.cli import main

#: The project's plausibility ranges: the conformance run goes through them as users' runs do.
PARAMS = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_suv.yml"

CASES = (
    "DRO_0_0", "DRO_1_0", "DRO_2_0", "DRO_2_1", "DRO_2_2", "DRO_2_3", "DRO_2_4", "DRO_2_5",
    "DRO_3_0", "DRO_3_1", "DRO_3_2", "DRO_3_3", "DRO_3_4", "DRO_4_0", "DRO_4_1", "DRO_4_2", "DRO_5_0",
)  # fmt: skip
#: Two decimals: |measured - expected| must round away to 0 at the second decimal.
TWO_DECIMALS = 0.005 + 1e-9
#: DRO_2_3 (CM2ML) stores truncated integers with slope 0.01; the README allows 2 % there and
#: gives what an exact implementation measures (min, median, max), which we also check to two
#: decimals. The minimum (0.19 vs 0.20, one stored integer step) is outside 2 % by the data's flaw.
QUANTISED_CASE = "DRO_2_3"
QUANTISED_RELATIVE_TOLERANCE = 0.02
QUANTISED_EXACT = (0.19, 0.98, 3.98)


@pytest.fixture(scope="module")
def expected() -> dict[str, dict[str, str]]:
    with open(data_file(IBSI_SUV_EXPECTED_CSV), newline="", encoding="utf-8") as fh:
        rows = {row["ID"]: row for row in csv.DictReader(fh)}
    assert sorted(rows) == sorted(CASES), f"DRO_list.csv cases changed: {sorted(rows)}"
    return rows


@pytest.fixture(scope="module")
def dro_root(ibsi_suv_root) -> Path:
    return ibsi_suv_root


def _measure(dro_root: Path, case: str, out_dir: Path, capsys) -> tuple[tuple[float, float, float], str, sitk.Image]:
    out = out_dir / f"{case}.nii.gz"
    status = main([str(dro_root / case / "PT"), "--out", str(out), "--params", str(PARAMS)])
    printed = capsys.readouterr().out
    assert status == 0, f"colearn-suv failed on {case}: {printed}"
    image = sitk.ReadImage(str(out))
    mask_image = sitk.ReadImage(str(dro_root / case / "mask" / "DRO_mask.nii.gz"))
    assert image.GetSize() == mask_image.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), mask_image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), mask_image.GetOrigin(), atol=1e-6)
    suv = sitk.GetArrayFromImage(image).astype(np.float64)
    mask = sitk.GetArrayFromImage(mask_image) > 0
    values = suv[mask]
    return (float(values.min()), float(np.median(values)), float(values.max())), printed, image


@pytest.mark.parametrize("case", CASES)
def test_dro_matches_reference(case, dro_root, expected, tmp_path, capsys):
    (smin, smed, smax), printed, _ = _measure(dro_root, case, tmp_path, capsys)
    row = expected[case]
    want = (float(row["SUVmin_expected"]), float(row["SUVmed_expected"]), float(row["SUVmax_expected"]))
    got = (smin, smed, smax)
    assert "SUVbw:" in printed and "factor" in printed, printed
    if case == QUANTISED_CASE:
        for name, g, exact in zip(("min", "median", "max"), got, QUANTISED_EXACT):
            assert abs(g - exact) <= TWO_DECIMALS, f"{case} {name}: {g:.4f} != exact-implementation {exact}"
        for name, g, w in zip(("median", "max"), got[1:], want[1:]):
            assert abs(g - w) <= QUANTISED_RELATIVE_TOLERANCE * w, f"{case} {name}: {g:.4f} not within 2% of {w}"
    else:
        for name, g, w in zip(("min", "median", "max"), got, want):
            assert abs(g - w) <= TWO_DECIMALS, f"{case} {name}: measured {g:.4f}, expected {w:.2f}"


def test_cli_writes_pet_grid_and_suffixes_several_series(dro_root, tmp_path, capsys):
    """Several PET series in one folder -> suffixed outputs, each on its own PET grid."""
    status = main([str(dro_root), "--out", str(tmp_path / "suv.nii.gz"), "--suv-type", "bw", "--params", str(PARAMS)])
    printed = capsys.readouterr().out
    assert status == 0
    outputs = sorted(tmp_path.glob("suv_*.nii.gz"))
    assert len(outputs) == len(CASES)
    assert not (tmp_path / "suv.nii.gz").exists()
    assert printed.count("reference time:") == len(CASES)
    image = sitk.ReadImage(str(outputs[0]))
    assert image.GetSize() == (256, 256, 20)
    np.testing.assert_allclose(image.GetSpacing(), (4.0, 4.0, 4.0))
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel())


def test_cli_suv_type_lbm_scales_by_lbm_over_weight(dro_root, tmp_path, capsys):
    """SUVlbm = SUVbw * LBM/W (James 128, sex O -> mean); DRO_0_0: W 70 kg, H 1.75 m.

    Hand value: male 1.10*70 - 128*(70/175)^2 = 56.52, female 1.07*70 - 148*0.16 = 51.22, mean 53.87.
    """
    (bw_min, bw_med, bw_max), _, _ = _measure(dro_root, "DRO_0_0", tmp_path, capsys)
    out = tmp_path / "lbm.nii.gz"
    assert main([str(dro_root / "DRO_0_0"), "--out", str(out), "--suv-type", "lbm", "--params", str(PARAMS)]) == 0
    assert "SUVlbm" in capsys.readouterr().out
    lbm = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).astype(np.float64)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(dro_root / "DRO_0_0" / "mask" / "DRO_mask.nii.gz"))) > 0
    ratio = 53.87 / 70.0
    assert ratio < 0.95  # the check below can fail
    np.testing.assert_allclose(np.max(lbm[mask]), bw_max * ratio, rtol=1e-6)
    np.testing.assert_allclose(np.median(lbm[mask]), bw_med * ratio, rtol=1e-6)


def test_cli_no_pet_series_fails(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert main([str(tmp_path), "--out", str(tmp_path / "suv.nii.gz"), "--params", str(PARAMS)]) == 1
    assert "no PET image series" in capsys.readouterr().err
