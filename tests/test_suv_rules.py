"""Unit tests of the SUV rules on hand-built PET headers (no pixel data)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from colearn_pipeline.suv import (
    REF_BACKCOMPUTED,
    REF_EARLIEST_ACQ,
    REF_GE_PRIVATE,
    REF_SERIES,
    SuvError,
    average_count_rate_time_s,
    body_surface_area_m2,
    frame_decay_factor,
    ideal_body_weight_kg,
    lean_body_mass_kg,
    suv_conversion,
)

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")  # bad values on purpose

F18_HALF_LIFE_S = 6586.2
GA68_HALF_LIFE_S = 4057.7
DOSE_BQ = 370.0e6
WEIGHT_KG = 70.0
HEIGHT_M = 1.75
UPTAKE_S = 3600.0  # injection 10:00:00, scan 11:00:00


def pet(n: int = 3, **overrides) -> list[Dataset]:
    """A BQML / START F-18 series of ``n`` headers; keyword overrides apply to every slice
    (``None`` deletes); ``rp_<Keyword>`` overrides the radiopharmaceutical item."""
    out = []
    for i in range(n):
        ds = Dataset()
        ds.Modality = "PT"
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.SeriesDate = "20250101"
        ds.SeriesTime = "110000"
        ds.AcquisitionDate = "20250101"
        ds.AcquisitionTime = "110000"
        ds.FrameReferenceTime = 150000.0
        ds.ActualFrameDuration = 300000
        ds.PatientWeight = WEIGHT_KG
        ds.PatientSize = HEIGHT_M
        ds.PatientSex = "M"
        ds.RescaleSlope = 1.0
        ds.RescaleIntercept = 0.0
        ds.InstanceNumber = i + 1
        item = Dataset()
        item.RadionuclideTotalDose = DOSE_BQ
        item.RadionuclideHalfLife = F18_HALF_LIFE_S
        item.RadiopharmaceuticalStartDateTime = "20250101100000"
        item.RadiopharmaceuticalStartTime = "100000"
        for key, value in overrides.items():
            if key.startswith("rp_"):
                target, key = item, key[3:]
            else:
                target = ds
            if value is None:
                if key in target:
                    delattr(target, key)
            else:
                setattr(target, key, value)
        ds.RadiopharmaceuticalInformationSequence = Sequence([item])
        ds.filename = f"/some/where/slice_{i:03d}.dcm"
        out.append(ds)
    return out


def bw_factor(uptake_s: float = UPTAKE_S, half_life_s: float = F18_HALF_LIFE_S) -> float:
    return WEIGHT_KG * 1000.0 / (DOSE_BQ * math.exp(-math.log(2) / half_life_s * uptake_s))


# --------------------------------------------------------------------------- basic BQML / START


def test_bqml_start_series_time():
    conv = suv_conversion(pet(), source="study-x")
    assert conv.units == "BQML" and conv.decay_correction == "START" and conv.suv_type == "bw"
    assert conv.reference_time_source == REF_SERIES
    assert conv.slice_factors.dtype == np.float64 and conv.slice_factors.shape == (3,)
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)
    assert conv.details["dose_bq"] == DOSE_BQ and conv.details["weight_kg"] == WEIGHT_KG
    assert conv.details["half_life_s"] == F18_HALF_LIFE_S


def test_dose_in_mbq_detected():
    conv = suv_conversion(pet(rp_RadionuclideTotalDose=370.0))
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)
    assert conv.details["dose_bq"] == pytest.approx(DOSE_BQ)
    assert any("MBq" in note for note in conv.details["notes"])


def test_weight_in_grams_detected():
    conv = suv_conversion(pet(PatientWeight=70000.0))
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)
    assert conv.details["weight_kg"] == pytest.approx(WEIGHT_KG)
    assert any("grams" in note for note in conv.details["notes"])


def test_ga68_half_life_from_header():
    ga = suv_conversion(pet(rp_RadionuclideHalfLife=GA68_HALF_LIFE_S)).slice_factors
    f18 = suv_conversion(pet()).slice_factors
    np.testing.assert_allclose(ga, bw_factor(half_life_s=GA68_HALF_LIFE_S), rtol=1e-12)
    assert ga[0] > f18[0] * 1.1  # faster decay -> smaller decayed dose -> larger factor


def test_injection_time_only_uses_series_date():
    conv = suv_conversion(pet(rp_RadiopharmaceuticalStartDateTime=None))
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)
    assert "RadiopharmaceuticalStartTime" in conv.convention


def test_midnight_crossing():
    series = pet(
        rp_RadiopharmaceuticalStartDateTime=None,
        rp_RadiopharmaceuticalStartTime="233000",
        SeriesDate="20250102",
        SeriesTime="003000",
        AcquisitionDate="20250102",
        AcquisitionTime="003000",
    )
    conv = suv_conversion(series)
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)
    np.testing.assert_allclose(conv.details["uptake_s"], UPTAKE_S)
    assert any("day before" in note for note in conv.details["notes"])


def test_start_datetime_across_midnight():
    conv = suv_conversion(
        pet(rp_RadiopharmaceuticalStartDateTime="20250101233000", SeriesDate="20250102", SeriesTime="003000",
            AcquisitionDate="20250102", AcquisitionTime="003000")
    )
    np.testing.assert_allclose(conv.details["uptake_s"], UPTAKE_S)


# --------------------------------------------------------------------------- decay correction


def test_admin_uses_dose_as_administered():
    conv = suv_conversion(pet(DecayCorrection="ADMIN"))
    np.testing.assert_allclose(conv.slice_factors, WEIGHT_KG * 1000.0 / DOSE_BQ, rtol=1e-12)
    assert conv.decay_correction == "ADMIN"


def test_admin_does_not_need_half_life():
    conv = suv_conversion(pet(DecayCorrection="ADMIN", rp_RadionuclideHalfLife=None))
    np.testing.assert_allclose(conv.slice_factors, WEIGHT_KG * 1000.0 / DOSE_BQ, rtol=1e-12)


def test_none_decays_each_slice_from_its_acquisition():
    series = pet(2, DecayCorrection="NONE", CorrectedImage=["ATTN"], ActualFrameDuration=600000)
    series[1].AcquisitionTime = "111000"  # 10 min later
    conv = suv_conversion(series)
    lam = math.log(2) / F18_HALF_LIFE_S
    duration = 600.0
    frame = lam * duration / (1 - math.exp(-lam * duration))
    expected = [
        WEIGHT_KG * 1000.0 / DOSE_BQ * frame * math.exp(lam * t) for t in (UPTAKE_S, UPTAKE_S + 600.0)
    ]
    np.testing.assert_allclose(conv.slice_factors, expected, rtol=1e-12)
    assert conv.slice_factors[1] / conv.slice_factors[0] == pytest.approx(math.exp(lam * 600.0))


def test_none_without_frame_duration_raises():
    with pytest.raises(SuvError, match=r"ActualFrameDuration \(0018,1242\)"):
        suv_conversion(pet(DecayCorrection="NONE", ActualFrameDuration=None))


# --------------------------------------------------------------------------- reference time order


def test_ge_private_scan_datetime_wins():
    series = pet(AcquisitionTime="113000", SeriesTime="113000")
    for ds in series:
        ds.add_new((0x0009, 0x0010), "LO", "GEMS_PETD_01")
        ds.add_new((0x0009, 0x100D), "DT", "20250101110000")
    conv = suv_conversion(series)
    assert conv.reference_time_source == REF_GE_PRIVATE
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)


def test_ge_tag_of_another_creator_is_ignored():
    series = pet()
    for ds in series:
        ds.add_new((0x0009, 0x0010), "LO", "SOME OTHER VENDOR")
        ds.add_new((0x0009, 0x100D), "DT", "20250101103000")
    conv = suv_conversion(series)
    assert conv.reference_time_source == REF_SERIES
    assert any("ignored" in note for note in conv.details["notes"])


def test_series_time_after_acquisition_backcomputes_per_slice():
    # frame of 600 s starting 11:05 whose reference point is 300 s in: reference = 11:00 + T_ave
    series = pet(SeriesTime="113000", AcquisitionTime="110500", FrameReferenceTime=300000.0,
                 ActualFrameDuration=600000)
    conv = suv_conversion(series)
    assert conv.reference_time_source == REF_BACKCOMPUTED
    lam = math.log(2) / F18_HALF_LIFE_S
    t_ave = math.log(lam * 600 / (1 - math.exp(-lam * 600))) / lam
    np.testing.assert_allclose(conv.details["uptake_s"], UPTAKE_S + t_ave, rtol=1e-9)  # datetime: microseconds
    assert 298.0 < t_ave < 299.0  # T/2 - lambda T^2 / 24


def test_series_time_after_acquisition_without_frame_times_uses_earliest_acquisition():
    series = pet(SeriesTime="113000", FrameReferenceTime=None)
    series[0].AcquisitionTime = "110500"
    conv = suv_conversion(series)
    assert conv.reference_time_source == REF_EARLIEST_ACQ
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)


# --------------------------------------------------------------------------- units


def _philips(series, element: int, value: str) -> list[Dataset]:
    for ds in series:
        ds.add_new((0x7053, 0x0010), "LO", "Philips PET Private Group")
        ds.add_new((0x7053, 0x1000 | element), "DS", value)
    return series


def test_cnts_suv_scale_factor():
    series = _philips(pet(Units="CNTS", PatientWeight=None), 0x00, "0.0005")
    conv = suv_conversion(series)
    np.testing.assert_allclose(conv.slice_factors, 0.0005)
    assert "(7053,1000)" in conv.convention


def test_cnts_activity_scale_factor_then_bqml():
    series = _philips(pet(Units="CNTS"), 0x09, "0.5")
    conv = suv_conversion(series)
    np.testing.assert_allclose(conv.slice_factors, 0.5 * bw_factor(), rtol=1e-12)
    assert "(7053,1009)" in conv.convention


def test_cnts_zero_factors_raise():
    series = _philips(_philips(pet(Units="CNTS"), 0x00, "0.0"), 0x09, "0")
    with pytest.raises(SuvError, match=r"7053,1000.*7053,1009"):
        suv_conversion(series)


def test_bqml_ignores_philips_tags():
    series = _philips(_philips(pet(), 0x00, "123.0"), 0x09, "7.0")
    conv = suv_conversion(series)
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)
    assert any("ignored" in note for note in conv.details["notes"])


def test_gml_bw_is_identity_and_needs_no_weight():
    conv = suv_conversion(pet(Units="GML", PatientWeight=None, rp_RadionuclideTotalDose=None))
    np.testing.assert_allclose(conv.slice_factors, 1.0)


@pytest.mark.parametrize(
    ("suv_type", "sex", "size_kg"),
    [
        ("LBMJAMES128", "M", 1.10 * 70 - 128 * (70 / 175) ** 2),
        ("LBMJAMES128", "F", 1.07 * 70 - 148 * (70 / 175) ** 2),
        ("IBW", "O", 0.5 * ((48.0 + 1.06 * 23) + (45.5 + 0.91 * 23))),
    ],
)
def test_gml_body_size_back_to_bw(suv_type, sex, size_kg):
    conv = suv_conversion(pet(Units="GML", SUVType=suv_type, PatientSex=sex))
    np.testing.assert_allclose(conv.slice_factors, WEIGHT_KG / size_kg, rtol=1e-12)


def test_cm2ml_back_to_bw_and_round_trip():
    conv = suv_conversion(pet(Units="CM2ML", SUVType="BSA"))
    bsa_cm2 = 0.007184 * 175**0.725 * 70**0.425 * 1e4
    np.testing.assert_allclose(conv.slice_factors, WEIGHT_KG * 1000 / bsa_cm2, rtol=1e-12)
    np.testing.assert_allclose(suv_conversion(pet(Units="CM2ML"), "bsa").slice_factors, 1.0, rtol=1e-12)


@pytest.mark.parametrize(("stored", "requested"), [("LBMJAMES128", "lbm"), ("IBW", "ibw")])
def test_gml_round_trip(stored, requested):
    conv = suv_conversion(pet(Units="GML", SUVType=stored, PatientSex="F"), requested)
    np.testing.assert_allclose(conv.slice_factors, 1.0, rtol=1e-12)


# Hand values for W = 70 kg, H = 175 cm (worked on paper, not by the code under test):
#   LBM James M: 1.10*70 - 128*(70/175)^2 = 77 - 20.48 = 56.52;  F: 74.9 - 23.68 = 51.22
#   LBM Morgan M: 77 - 120*0.16 = 57.8
#   LBM Janmahasatian (BMI 22.857): M 648900/11617.14 = 55.857;  F 648900/14357.14 = 45.197
#   IBW Devine M: 48 + 1.06*23 = 72.38;  F: 45.5 + 0.91*23 = 66.43
#   BSA Du Bois: 0.007184 * 175^0.725 * 70^0.425 = 1.84814 m^2
HAND_LBM_M, HAND_LBM_F, HAND_IBW_M, HAND_IBW_F, HAND_BSA_M2 = 56.52, 51.22, 72.38, 66.43, 1.84814


@pytest.mark.parametrize(
    ("requested", "ratio"),
    [("lbm", HAND_LBM_M / 70.0), ("bsa", HAND_BSA_M2 * 1e4 / 70000.0), ("ibw", HAND_IBW_M / 70.0)],
)
def test_output_types_from_bqml(requested, ratio):
    bw = suv_conversion(pet()).slice_factors
    conv = suv_conversion(pet(), requested)
    np.testing.assert_allclose(conv.slice_factors, bw * ratio, rtol=1e-5)
    assert conv.suv_type == requested


def test_body_size_formulas_known_values():
    assert lean_body_mass_kg(70, 175, "M") == pytest.approx(HAND_LBM_M, abs=1e-9)
    assert lean_body_mass_kg(70, 175, "F") == pytest.approx(HAND_LBM_F, abs=1e-9)
    assert lean_body_mass_kg(70, 175, "O") == pytest.approx((HAND_LBM_M + HAND_LBM_F) / 2, abs=1e-9)
    assert lean_body_mass_kg(70, 175, "M", "morgan") == pytest.approx(57.8, abs=1e-9)
    assert lean_body_mass_kg(70, 175, "M", "janma") == pytest.approx(55.857, abs=1e-3)
    assert lean_body_mass_kg(70, 175, "F", "janma") == pytest.approx(45.197, abs=1e-3)
    assert ideal_body_weight_kg(175, "M") == pytest.approx(HAND_IBW_M, abs=1e-9)
    assert ideal_body_weight_kg(175, "O") == pytest.approx((HAND_IBW_M + HAND_IBW_F) / 2, abs=1e-9)
    assert body_surface_area_m2(70, 175) == pytest.approx(HAND_BSA_M2, abs=1e-5)


def test_frame_terms_limits():
    lam = math.log(2) / F18_HALF_LIFE_S
    assert average_count_rate_time_s(np.array([0.0]), lam)[0] == 0.0
    # series expansion: T/2 - lambda T^2 / 24
    assert average_count_rate_time_s(np.array([300.0]), lam)[0] == pytest.approx(150.0 - lam * 300**2 / 24, abs=1e-3)
    assert frame_decay_factor(np.array([0.0]), lam)[0] == 1.0
    assert frame_decay_factor(np.array([600.0]), lam)[0] == pytest.approx(1 + lam * 300, rel=1e-3)


# --------------------------------------------------------------------------- errors name the tag


@pytest.mark.parametrize(
    ("overrides", "tag"),
    [
        ({"PatientWeight": None}, r"PatientWeight \(0010,1030\)"),
        ({"PatientWeight": 0.0}, r"PatientWeight \(0010,1030\)"),
        ({"PatientWeight": -70.0}, r"PatientWeight \(0010,1030\)"),
        ({"rp_RadionuclideTotalDose": None}, r"RadionuclideTotalDose \(0018,1074\)"),
        ({"rp_RadionuclideTotalDose": 0.0}, r"RadionuclideTotalDose \(0018,1074\)"),
        ({"rp_RadionuclideTotalDose": -3.7e8}, r"RadionuclideTotalDose \(0018,1074\)"),
        ({"rp_RadionuclideTotalDose": 5.0e5}, r"RadionuclideTotalDose \(0018,1074\)"),  # 0.5 MBq? 500 GBq?
        ({"rp_RadionuclideHalfLife": None}, r"RadionuclideHalfLife \(0018,1075\)"),
        ({"rp_RadionuclideHalfLife": 0.0}, r"RadionuclideHalfLife \(0018,1075\)"),
        ({"Units": "PROPCNTS"}, r"Units \(0054,1001\)"),
        ({"Units": None}, r"Units \(0054,1001\)"),
        ({"DecayCorrection": "LATER"}, r"DecayCorrection \(0054,1102\)"),
        ({"DecayCorrection": None}, r"DecayCorrection \(0054,1102\)"),
        ({"rp_RadiopharmaceuticalStartDateTime": "20250101120000"}, r"RadiopharmaceuticalStartDateTime \(0018,1078\)"),
        ({"rp_RadiopharmaceuticalStartDateTime": "20241231100000"}, r"RadiopharmaceuticalStartDateTime.*absurd uptake"),
        (
            {"rp_RadiopharmaceuticalStartDateTime": None, "rp_RadiopharmaceuticalStartTime": None},
            r"RadiopharmaceuticalStartTime \(0018,1072\)",
        ),
        ({"rp_RadiopharmaceuticalStartDateTime": "2025xx"}, r"RadiopharmaceuticalStartDateTime \(0018,1078\)"),
        ({"SeriesTime": "99x"}, r"SeriesTime \(0008,0031\)"),
        ({"Modality": "CT"}, r"Modality \(0008,0060\)"),
        ({"Units": "GML", "SUVType": "BSA"}, r"SUVType \(0054,1006\)"),
        ({"Units": "CNTS"}, r"7053,1000"),
    ],
)
def test_errors_name_the_tag_source_and_file(overrides, tag):
    with pytest.raises(SuvError, match=tag) as info:
        suv_conversion(pet(**overrides), source="study-0123456789 / PET")
    message = str(info.value)
    assert message.startswith("study-0123456789 / PET: slice_000.dcm:")
    assert "/some/where" not in message  # base name only


@pytest.mark.parametrize(
    ("requested", "overrides", "tag"),
    [
        ("lbm", {"PatientSize": None}, r"PatientSize \(0010,1020\)"),
        ("lbm", {"PatientSize": 175.0}, r"PatientSize \(0010,1020\).*metres"),
        ("ibw", {"PatientSex": None}, r"PatientSex \(0010,0040\)"),
        ("ibw", {"PatientSex": "X"}, r"PatientSex \(0010,0040\)"),
        ("lbm", {"PatientWeight": 250.0, "PatientSize": 1.60}, r"PatientWeight.*not positive"),
    ],
)
def test_body_size_errors_name_the_tag(requested, overrides, tag):
    with pytest.raises(SuvError, match=tag):
        suv_conversion(pet(**overrides), requested)


def test_slices_disagreeing_on_units_raise_naming_the_file():
    series = pet()
    series[2].Units = "GML"
    with pytest.raises(SuvError, match=r"slice_002\.dcm: Units \(0054,1001\): differs"):
        suv_conversion(series)


def test_unknown_suv_type_and_empty_input():
    with pytest.raises(SuvError, match="suv_type"):
        suv_conversion(pet(), "mbw")
    with pytest.raises(SuvError, match="no datasets"):
        suv_conversion([], source="s")


def test_suv_error_survives_pickling():
    error = SuvError("missing", tag="PatientWeight (0010,1030)", source="study-1", file="a.dcm")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == "study-1: a.dcm: PatientWeight (0010,1030): missing"
    assert copy.tag == error.tag and isinstance(copy, ValueError)


def test_details_hold_no_dates():
    conv = suv_conversion(pet())
    text = repr(conv.details) + conv.convention + conv.reference_time_source
    assert "2025" not in text


def test_to_suv_applies_per_slice_factors():
    from colearn_pipeline.suv import to_suv

    series = pet(2, DecayCorrection="NONE", CorrectedImage=["ATTN"])
    series[1].AcquisitionTime = "111000"
    conv = suv_conversion(series)
    volume = np.ones((2, 3, 4))
    suv = to_suv(volume, conv)
    assert suv.dtype == np.float32
    np.testing.assert_allclose(suv[:, 0, 0], conv.slice_factors, rtol=1e-6)
    assert suv[1, 0, 0] > suv[0, 0, 0]
    with pytest.raises(ValueError, match="slice factors"):
        to_suv(np.ones((3, 3, 4)), conv)


def test_private_tags_read_as_unknown_vr_bytes():
    """Implicit-VR files without a private dictionary give the Philips/GE values as raw bytes (UN)."""
    series = pet(Units="CNTS")
    for ds in series:
        ds.add_new((0x7053, 0x1009), "UN", b"0.5 ")
    np.testing.assert_allclose(suv_conversion(series).slice_factors, 0.5 * bw_factor(), rtol=1e-12)
    series = pet(AcquisitionTime="113000", SeriesTime="113000")
    for ds in series:
        ds.add_new((0x0009, 0x100D), "UN", b"20250101110000\x00")
    conv = suv_conversion(series)
    assert conv.reference_time_source == REF_GE_PRIVATE
    np.testing.assert_allclose(conv.slice_factors, bw_factor(), rtol=1e-12)


def test_cnts_bad_philips_value_names_the_tag():
    series = pet(Units="CNTS")
    for ds in series:
        ds.add_new((0x7053, 0x1000), "UN", b"abc")
    with pytest.raises(SuvError, match=r"Philips private \(7053,1000\)"):
        suv_conversion(series)


def test_blank_private_bytes_count_as_absent():
    series = pet(Units="CNTS")
    for ds in series:
        ds.add_new((0x7053, 0x1000), "UN", b"\x00\x00")
        ds.add_new((0x7053, 0x1009), "UN", b"0.5")
    assert "(7053,1009)" in suv_conversion(series).convention


def test_admin_injection_after_acquisition_raises():
    with pytest.raises(SuvError, match=r"RadiopharmaceuticalStartDateTime \(0018,1078\): injection is after"):
        suv_conversion(pet(DecayCorrection="ADMIN", rp_RadiopharmaceuticalStartDateTime="20250101120000"))
