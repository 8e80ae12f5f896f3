"""Implausible PET headers and SUV volumes are refused naming the tag and the value (issue 11);
the FrameReferenceTime-0 post-processed series takes the earliest acquisition (issue 10).

Expected SUV factors are hand values: ``W_g / (D * exp(-ln2 / T_half * uptake_s))``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from test_suv_rules import DOSE_BQ, F18_HALF_LIFE_S, UPTAKE_S, bw_factor, pet

from colearn_pipeline.suv import (
    REF_BACKCOMPUTED,
    REF_EARLIEST_ACQ,
    SuvError,
    SuvPlausibility,
    check_suv_values,
    suv_conversion,
    to_suv,
)
from colearn_pipeline.suv.cli import load_plausibility

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")

PARAMS_FILE = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_suv.yml"


@pytest.fixture(scope="module")
def plaus() -> SuvPlausibility:
    """The project's defaults, as the pipeline and colearn-suv use them."""
    return load_plausibility(PARAMS_FILE)


def _nuclide(code: str, meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "SRT", meaning
    return Sequence([item])


F18_CODE = _nuclide("C-111A1", "^18^Fluorine")
GA68_CODE = _nuclide("C-131A1", "^68^Gallium")


# --------------------------------------------------------------------------- parameters


def test_conf_defaults_load_and_are_the_documented_ranges(plaus):
    assert plaus.weight_kg == (20.0, 300.0) and plaus.dose_mbq == (25.0, 1000.0) and plaus.dose_unit == "auto"
    assert plaus.radionuclide_for(["c-111a1"]).half_life_s == 6586.2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.update(weight_kgs=[20, 300]), r"unknown keys \['weight_kgs'\]"),
        (lambda p: p.pop("dose_mbq"), r"missing keys \['dose_mbq'\]"),
        (lambda p: p.update(dose_unit="Ci"), "dose_unit"),
        (lambda p: p.update(weight_kg=[300, 20]), "weight_kg"),
        (lambda p: p.update(radionuclides={"F-18": {"half_life_s": 6586.2}}), "radionuclides.F-18"),
    ],
)
def test_from_params_refuses_unknown_missing_and_bad_keys(edit, message):
    import yaml

    params = yaml.safe_load(PARAMS_FILE.read_text())["suv"]
    edit(params)
    with pytest.raises(ValueError, match=message):
        SuvPlausibility.from_params(params)


# --------------------------------------------------------------------------- implausible headers


@pytest.mark.parametrize(
    ("overrides", "tag", "value"),
    [
        ({"PatientWeight": 500.0}, r"PatientWeight \(0010,1030\)", r"500 .*20\.\.300 kg"),
        ({"PatientWeight": 1.75}, r"PatientWeight \(0010,1030\)", r"1\.75 .*height in metres"),
        ({"PatientWeight": 12.0}, r"PatientWeight \(0010,1030\)", r"12 -> 12 kg"),
        ({"rp_RadionuclideTotalDose": 9.46}, r"RadionuclideTotalDose \(0018,1074\)", r"9\.46 .*only as mCi \(350\.02 MBq\)"),
        ({"rp_RadionuclideTotalDose": 3.7e9}, r"RadionuclideTotalDose \(0018,1074\)", r"3\.7e\+09 read as Bq is 3700 MBq"),
        (
            {"rp_RadionuclideHalfLife": 109.77, "rp_RadionuclideCodeSequence": F18_CODE},
            r"RadionuclideHalfLife \(0018,1075\)",
            r"109\.77 s is not the half-life of F-18",
        ),
        (
            {"rp_RadionuclideHalfLife": F18_HALF_LIFE_S, "rp_RadionuclideCodeSequence": GA68_CODE},
            r"RadionuclideHalfLife \(0018,1075\)",
            r"6586\.2 s is not the half-life of Ga-68",
        ),
        ({"rp_RadionuclideHalfLife": 1000.0}, r"RadionuclideHalfLife \(0018,1075\)", r"1000 s matches no radionuclide"),
        ({"RescaleSlope": 0.0}, r"RescaleSlope \(0028,1053\)", r"0\.0 is not a finite positive slope"),
        ({"RescaleSlope": float("inf")}, r"RescaleSlope \(0028,1053\)", r"inf is not a finite positive slope"),
    ],
)
def test_implausible_header_names_tag_and_value(plaus, overrides, tag, value):
    with pytest.raises(SuvError, match=f"{tag}: .*{value}") as info:
        suv_conversion(pet(**overrides), source="study-0123456789 / PET", plausibility=plaus)
    assert str(info.value).startswith("study-0123456789 / PET: slice_000.dcm: ")


def test_height_outside_range_names_tag_and_value_for_body_size_suv(plaus):
    with pytest.raises(SuvError, match=r"PatientSize \(0010,1020\): 175 is not a height in metres \(0\.5\.\.2\.5 m"):
        suv_conversion(pet(PatientSize=175.0), "lbm", plausibility=plaus)


def test_plausible_values_pass_with_hand_factors(plaus):
    """Defaults accept a normal study, grams and IBSI's Ga-68 half-life (4057.7 s vs 4062.6 s)."""
    np.testing.assert_allclose(suv_conversion(pet(), plausibility=plaus).slice_factors, bw_factor(), rtol=1e-12)
    grams = suv_conversion(pet(PatientWeight=70000.0), plausibility=plaus)
    np.testing.assert_allclose(grams.slice_factors, bw_factor(), rtol=1e-12)
    ga = suv_conversion(
        pet(rp_RadionuclideHalfLife=4057.7, rp_RadionuclideCodeSequence=GA68_CODE), plausibility=plaus
    )
    np.testing.assert_allclose(ga.slice_factors, bw_factor(half_life_s=4057.7), rtol=1e-12)


def test_dose_in_mci_accepted_when_conf_names_the_unit(plaus):
    mci = SuvPlausibility(**{**plaus.__dict__, "dose_unit": "mCi"})
    conv = suv_conversion(pet(rp_RadionuclideTotalDose=9.46), plausibility=mci)
    assert conv.details["dose_bq"] == pytest.approx(350.02e6)
    np.testing.assert_allclose(conv.slice_factors, bw_factor() * DOSE_BQ / 350.02e6, rtol=1e-12)
    assert any("mCi" in note for note in conv.details["notes"])


def test_several_radiopharmaceutical_items_first_with_a_dose_is_used():
    series = pet()
    empty = Dataset()
    empty.RadionuclideHalfLife = 1000.0  # no dose: skipped
    for ds in series:
        ds.RadiopharmaceuticalInformationSequence = Sequence([empty, ds.RadiopharmaceuticalInformationSequence[0]])
    conv = suv_conversion(series)
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)
    assert any("2 items: item 2 (the first with a RadionuclideTotalDose)" in n for n in conv.details["notes"])


# --------------------------------------------------------------------------- SUV values


def _uniform_body(value: float) -> np.ndarray:
    volume = np.zeros((3, 8, 8))
    volume[:, 2:6, 2:6] = value
    return volume


def test_suv_values_non_finite_out_of_range_and_body_median(plaus):
    conv = suv_conversion(pet())
    rescaled = _uniform_body(1.0 / bw_factor())  # SUV 1 in the body
    assert check_suv_values(to_suv(rescaled, conv), plaus) == pytest.approx(1.0, rel=1e-6)
    bad = rescaled.copy()
    bad[1, 3, 3] = np.nan
    with pytest.raises(SuvError, match=r"SUV: 1 non-finite values, first in slice 1 \(PatientWeight"):
        to_suv(bad, conv, plausibility=plaus, source="s")
    with pytest.raises(SuvError, match=r"SUV: maximum 1e\+38 in slice 0 outside the physical range -5\.\.500"):
        to_suv(rescaled * 1e38, conv, plausibility=plaus)
    with pytest.raises(SuvError, match=r"SUV: body median 37 outside 0\.2\.\.5 .*RadionuclideTotalDose"):
        to_suv(rescaled * 37.0, conv, plausibility=plaus)
    with pytest.raises(SuvError, match="SUV: the PET series is empty: every voxel is 0 or below"):  # issue 11
        to_suv(np.zeros((3, 4, 4)), conv, plausibility=plaus)


# --------------------------------------------------------------------------- time rules (issue 10)


def test_post_processed_series_with_frame_reference_time_zero_uses_earliest_acquisition():
    """SeriesTime 45 min after AcquisitionTime, FrameReferenceTime 0, frame 180 s: the reference is
    the acquisition start 11:00 (uptake 3600 s), not 11:00 + T_ave (89.86 s later, SUV +0.95 %)."""
    series = pet(SeriesTime="114500", FrameReferenceTime=0.0, ActualFrameDuration=180000)
    conv = suv_conversion(series)
    assert conv.reference_time_source == REF_EARLIEST_ACQ
    hand = 70000.0 / (370e6 * math.exp(-math.log(2) / 6586.2 * 3600.0))
    assert hand == pytest.approx(0.000276336682, rel=1e-9)
    np.testing.assert_allclose(conv.slice_factors, hand, rtol=1e-12)
    assert any("FrameReferenceTime 0 ms" in n and "QIBA" in n for n in conv.details["notes"])


def test_frame_reference_time_inconsistent_with_duration_uses_earliest_acquisition():
    series = pet(SeriesTime="114500", FrameReferenceTime=60000.0, ActualFrameDuration=180000)
    conv = suv_conversion(series)
    assert conv.reference_time_source == REF_EARLIEST_ACQ
    np.testing.assert_allclose(conv.slice_factors, bw_factor(UPTAKE_S), rtol=1e-12)


def test_consistent_frame_reference_time_still_backcomputed():
    """Frame 180 s starting 11:02, FrameReferenceTime 210 s: reference 11:02 + 89.858 - 210 s."""
    series = pet(SeriesTime="114500", AcquisitionTime="110200", FrameReferenceTime=210000.0, ActualFrameDuration=180000)
    conv = suv_conversion(series)
    assert conv.reference_time_source == REF_BACKCOMPUTED
    np.testing.assert_allclose(conv.details["uptake_s"], UPTAKE_S + 120.0 + 89.85792 - 210.0, atol=1e-4)


# --------------------------------------------------------------------------- enhanced multi-frame timing


def _enhanced_pet(decay_correction: str) -> Dataset:
    """Three beds of 300 s starting 11:00, 11:05, 11:10; injection 10:00; decay reference 10:58."""
    from datetime import datetime, timedelta

    lam = math.log(2) / F18_HALF_LIFE_S
    t_ave_s = math.log(lam * 300 / (1 - math.exp(-lam * 300))) / lam  # 149.605 s
    ds = pet(1, DecayCorrection=decay_correction, SeriesTime="113000", AcquisitionTime=None, FrameReferenceTime=None,
             ActualFrameDuration=None, RescaleSlope=None, RescaleIntercept=None)[0]  # fmt: skip
    ds.DecayCorrectionDateTime = "20250101105800"
    ds.NumberOfFrames = 3
    ds.filename = "/hidden/folder/enhanced_pet.dcm"
    frames = []
    for k in range(3):
        start = datetime(2025, 1, 1, 11, 0, 0) + timedelta(seconds=300 * k)
        content, transform, group = Dataset(), Dataset(), Dataset()
        content.FrameAcquisitionDateTime = start.strftime("%Y%m%d%H%M%S.%f")
        content.FrameReferenceDateTime = (start + timedelta(seconds=t_ave_s)).strftime("%Y%m%d%H%M%S.%f")
        content.FrameAcquisitionDuration = 300000.0
        transform.RescaleSlope, transform.RescaleIntercept = float(k + 1), 0.0
        group.FrameContentSequence = Sequence([content])
        group.PixelValueTransformationSequence = Sequence([transform])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    return ds


def test_enhanced_frames_start_backcomputed_to_the_decay_reference():
    from colearn_pipeline.suv import frame_headers

    headers = frame_headers(_enhanced_pet("START"))
    assert [float(h.RescaleSlope) for h in headers] == [1.0, 2.0, 3.0]
    conv = suv_conversion(headers)
    assert conv.reference_time_source == REF_BACKCOMPUTED
    np.testing.assert_allclose(conv.slice_factors, bw_factor(UPTAKE_S - 120.0), rtol=1e-8)  # every bed to 10:58


def test_enhanced_frames_none_decay_each_bed_from_its_start():
    from colearn_pipeline.suv import frame_headers

    conv = suv_conversion(frame_headers(_enhanced_pet("NONE"), source="study-1"))
    lam = math.log(2) / F18_HALF_LIFE_S
    frame_term = lam * 300 / (1 - math.exp(-lam * 300))
    hand = [70000.0 / DOSE_BQ * frame_term * math.exp(lam * (UPTAKE_S + 300 * k)) for k in range(3)]
    np.testing.assert_allclose(conv.slice_factors, hand, rtol=1e-12)


def test_enhanced_frame_errors_name_the_frame():
    from colearn_pipeline.suv import frame_headers

    ds = _enhanced_pet("NONE")
    del ds.PerFrameFunctionalGroupsSequence[1].FrameContentSequence[0].FrameAcquisitionDuration
    with pytest.raises(SuvError, match=r"study-1: enhanced_pet\.dcm#frame2: ActualFrameDuration \(0018,1242\)"):
        suv_conversion(frame_headers(ds), source="study-1")


def _body_series(n_slices: int = 20) -> np.ndarray:
    """A body (SUV 1) in air, with a smooth rise to SUV 4 over the upper slices (a brain-like change)."""
    suv = np.zeros((n_slices, 16, 16))
    level = 1.0 + 3.0 / (1.0 + np.exp(-(np.arange(n_slices) - 14) / 1.5))
    suv[:, 4:12, 4:12] = level[:, None, None]
    return suv


def test_slice_continuity_passes_a_smooth_change_and_names_a_rescaled_slice(plaus):
    """Issue 25: one slice 10x its neighbours (an outlier RescaleSlope) is refused with the slice and its label."""
    from colearn_pipeline.suv import check_slice_continuity

    suv = _body_series()
    factors = np.full(suv.shape[0], 2.5e-4)
    labels = [f"file-{k:02d}" for k in range(suv.shape[0])]
    check_slice_continuity(suv, factors, plaus, source="s", slice_labels=labels)  # smooth: passes
    edge = suv.copy()
    edge[12:] = 8.0 * (edge[12:] > 0)  # an organ starting at slice 12 (a brain): high on one side only
    edge[12] = 2.0 * (edge[12] > 0)  # ... and a partial-volume slice between
    check_slice_continuity(edge, factors, plaus, source="s", slice_labels=labels)
    for z, scale in ((6, 10.0), (1, 10.0), (18, 0.1)):  # middle, second, last but one slice
        bad = suv.copy()
        bad[z] *= scale
        with pytest.raises(SuvError, match=rf"slice {z} \(file-{z:02d}\): body median SUV .* by more than a factor 3"):
            check_slice_continuity(bad, factors, plaus, source="s", slice_labels=labels)
    jumpy = factors.copy()
    jumpy[9] *= 5
    with pytest.raises(SuvError, match=r"slice 9 \(file-09\): SUV factor 0.00125 departs") as err:
        check_slice_continuity(suv, jumpy, plaus, source="s", slice_labels=labels)
    assert err.value.file == "file-09"
    with pytest.raises(ValueError, match="slice_ratio_max must be a factor above 1"):
        SuvPlausibility.from_params({**yaml.safe_load(PARAMS_FILE.read_text())["suv"], "slice_ratio_max": 1.0})
