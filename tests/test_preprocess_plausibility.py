"""SUV plausibility in the pipeline (issue 11): an implausible PET header quarantines its study
with the DICOM tag and the value in the reason; a plausible study next to them comes out ok.

One small cohort run once through the project's catalog (``params:suv`` from
conf/base/parameters_suv.yml, as Kedro loads it).
"""

from __future__ import annotations

import re

import pytest
from dicom_fixtures import pet_suv_tags, run_preprocess_catalog, write_thorax_study

from colearn_pipeline.dicom import pseudonymise
from colearn_pipeline.pipelines.preprocess import create_pipeline


def _slope_1e38(ds, k):
    pet_suv_tags()(ds, k)
    ds.RescaleSlope = "1e38"


CASES = {
    "good": {},
    "weight_500kg": {"pet_extra": pet_suv_tags(weight_kg=500.0)},
    "dose_mci": {"pet_extra": pet_suv_tags(dose_bq=10.0)},  # 10 mCi written as a bare number
    "slope_1e38": {"pet_extra": _slope_1e38},
    # a plausible 30 MBq in the header, the pixels written for 370 MBq: every SUV 12x too high
    "body_median": {"pet_extra": pet_suv_tags(dose_bq=3.0e7)},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    pseudonyms = {}
    for key, kw in CASES.items():
        study = write_thorax_study(raw / "dicom" / key, reports_dir=raw / "reports", **kw)
        pseudonyms[key] = pseudonymise(study["study_uid"])
    result = run_preprocess_catalog(raw, tmp_path_factory.mktemp("out"), workers=0)
    rows = {r["pseudonym"]: r for r in result["manifest"]["studies"]}
    return {key: rows[p] for key, p in pseudonyms.items()}


def test_suv_parameters_are_a_node_input():
    node = next(n for n in create_pipeline().nodes if n.name == "convert_to_suv")
    assert "params:suv" in node.inputs


def test_plausible_study_is_ok(run):
    assert run["good"]["status"] == "ok", run["good"]
    assert run["good"]["reason"] == "" and run["good"]["suv_units"] == "BQML"


@pytest.mark.parametrize(("key", "needles"), [
    ("weight_500kg", ["PatientWeight (0010,1030)", "500", "suv.weight_kg"]),
    ("dose_mci", ["RadionuclideTotalDose (0018,1074)", "10", "mCi"]),
    ("slope_1e38", ["RescaleSlope (0028,1053)", "1e+38"]),
    ("body_median", ["body median", "suv.body_median_suv", "RadionuclideTotalDose (0018,1074) -> 30 MBq"]),
])
def test_implausible_header_quarantined_with_tag_and_value(run, key, needles):
    row = run[key]
    assert row["status"] == "quarantined", row
    for needle in needles:
        assert needle in row["reason"], row["reason"]
    assert re.fullmatch(r"file-[0-9a-f]{10}", row["file"]), row["file"]  # a label, never a raw file name
