"""Split by patient end to end: discover turns PatientID into a patient pseudonym, and the split
node keeps two studies of one patient on one side (holdout and K-fold)."""

import re
from pathlib import Path

import pytest
import yaml
from dicom_fixtures import write_thorax_study

from colearn_pipeline.datasets.raw import DicomTree, ReportsDataset
from colearn_pipeline.datasets.study_partitions import StudyPartition
from colearn_pipeline.dicom.pseudonym import patient_pseudonym
from colearn_pipeline.pipelines.preprocess.nodes import discover_studies
from colearn_pipeline.pipelines.train_eval.nodes import split_studies
from colearn_pipeline.training.split import check_split

REPO = Path(__file__).resolve().parents[1]
#: study folder -> PatientID: two studies (baseline and follow-up) of one patient, one of another
COHORT = {"jane-2019": "PID-0007", "jane-2020": "PID-0007", "john-2019": "PID-0008"}


@pytest.fixture(scope="module")
def discovered(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    for folder, patient_id in COHORT.items():
        write_thorax_study(raw / "dicom" / folder, reports_dir=raw / "reports", patient_id=patient_id)
    params = yaml.safe_load((REPO / "conf/base/parameters_preprocess.yml").read_text())["preprocess"]
    reports = ReportsDataset(str(raw / "reports")).load()
    studies, *_ = discover_studies(DicomTree(str(raw / "dicom"), {}), reports, params["discover_studies"])
    return studies, params["discover_studies"]["pseudonym_key"]


def test_discover_writes_the_patient_pseudonym_never_the_id(discovered):
    studies, key = discovered
    patients = {p: out.row["patient"] for p, out in studies.items()}
    assert len(patients) == 3 and all(re.fullmatch(r"patient-[0-9a-f]{10}", v) for v in patients.values())
    assert sorted(patients.values()).count(patient_pseudonym("PID-0007", "-", key)) == 2
    assert patient_pseudonym("PID-0008", "-", key) in patients.values()
    assert not any("PID-" in str(v) for out in studies.values() for v in out.row.values())


def _partitions(studies, n_more):
    """Model-input partitions as the split sees them: names and records (no arrays loaded)."""
    parts = {f"{p}.npz": StudyPartition(p, {}, {"row": {"patient": out.row["patient"]}}) for p, out in studies.items()}
    for i in range(n_more):  # other patients, one study each
        name = f"study-{i:010x}"
        parts[f"{name}.npz"] = StudyPartition(name, {}, {"row": {"patient": f"patient-{i + 100:010x}"}})
    return parts


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", ["holdout", "kfold"])
def test_split_node_keeps_a_patients_studies_on_one_side(discovered, mode, seed):
    studies, key = discovered
    split = split_studies(_partitions(studies, 9), {"mode": mode, "seed": seed, "test_fraction": 0.2, "n_folds": 2,
                                                    "k": 3})
    check_split(split)
    jane = [p for p, out in studies.items() if out.row["patient"] == patient_pseudonym("PID-0007", "-", key)]
    assert len(jane) == 2
    for part in split["outer"]:
        assert (set(jane) <= set(part["test"])) or (set(jane) <= set(part["train"])), part
        assert any(set(jane) <= set(f) for f in part["folds"]) or set(jane) <= set(part["test"])
    assert set(split["patients"].values()) == {out.row["patient"] for out in studies.values()} | {
        f"patient-{i + 100:010x}" for i in range(9)}
