"""Identifier sweep (issue 11): patient names planted everywhere never reach an output, the log or MLflow.

Studies carry patient names and birth dates in every place an archive puts them: PatientName
(ASCII, Latin-1, two-character CJK), series and study descriptions ("PET Smith John 31.12.1945"),
institution, operators and physicians, folder and file names ("Doe, Jane (1930-05-15)/pet/jane doe
PT0009.dcm"), report file names and report free text, and one unusable report named after the
patient. ``kedro run --pipeline=preprocess`` runs on them with an MLflow SQLite store in the temporary
project; every file it wrote under data/ (the raw input aside), the captured console log, mlflow.db and
the MLflow artifacts are searched for every name and date form, in several encodings and any case.
Only conf/local (git-ignored: the pseudonym and file-label maps) may hold them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from dicom_fixtures import FIXTURE_QUALITY, write_thorax_study
from pydicom.uid import generate_uid
from test_train_eval_e2e import copy_project, kedro

pytestmark = pytest.mark.slow

TEST_ENV = """
preprocess: {executor: {workers: 0}, model_input: {model_size: [32, 32]}}
mlflow: {enabled: true, experiment_name: identifier-sweep, log_models: false}
"""

#: Per study: folder, PatientName, charset, birth date (DICOM DA), the forms to search for.
PATIENTS = [
    ("Doe, Jane (1930-05-15)", "Doe^Jane", "ISO_IR 192", "19300515",
     ["Doe", "Jane", "1930-05-15", "15.05.1930", "19300515"]),
    ("SMITH_JOHN_311245", "Smith^John", "ISO_IR 192", "19451231",
     ["Smith", "John", "31.12.1945", "1945-12-31", "19451231", "311245"]),
    ("Müller Jürgen", "Müller^Jürgen", "ISO_IR 100", "19521103",
     ["Müller", "Jürgen", "Mueller", "19521103", "03.11.1952"]),
    ("王小明 病例", "王^小明", "ISO_IR 192", "19400229", ["王小明", "小明", "19400229", "1940-02-29"]),
]


def _plant(folder: str, name: str, charset: str, birth: str):
    family, given = name.split("^")
    day = f"{birth[6:]}.{birth[4:6]}.{birth[:4]}"

    def tags(ds, k, modality):
        ds.SpecificCharacterSet = charset
        ds.PatientName, ds.PatientBirthDate = name, birth
        ds.PatientID = f"{family.upper()}{birth}"
        ds.OtherPatientNames = f"{given.lower()} {family.lower()}"
        ds.SeriesDescription = f"{modality} {family} {given} {day}"
        ds.StudyDescription = f"PET-CT {family.upper()}, {given} *{day}"
        ds.InstitutionName = f"Praxis {family}"
        ds.OperatorsName = name
        ds.PerformingPhysicianName = f"{family}^{given}"
        ds.ReferringPhysicianName = f"Dr. {family}"
        ds.ImageComments = f"patient {given} {family} born {day}"
        ds.AccessionNumber = f"{family[:3]}{birth[2:]}"
    return tags, day


def _write_study(raw: Path, folder: str, name: str, charset: str, birth: str) -> None:
    from dicom_fixtures import pet_suv_tags

    tags, day = _plant(folder, name, charset, birth)
    family, given = name.split("^")
    suv_tags = pet_suv_tags()

    def pet_extra(ds, k):
        suv_tags(ds, k)
        tags(ds, k, "PET")

    study = write_thorax_study(raw / "dicom" / folder, reports_dir=raw / "reports", study_uid=generate_uid(),
                               patient_name=name, ct_extra=lambda ds, k: tags(ds, k, "CT"), pet_extra=pet_extra)
    for k, path in enumerate(study["pet_files"]):  # raw file names with the patient's name
        path.rename(path.with_name(f"{given.lower()} {family.lower()} PT{k:04d}.dcm"))
    report = json.loads(study["report"].read_text())
    for finding in report["findings"]:
        finding["text"] = f"primary tumour of {given} {family} (*{day}), right lung"
    study["report"].unlink()
    (raw / "reports" / f"{family}, {given} {birth}.json").write_text(json.dumps(report, ensure_ascii=False))


def _forms() -> list[str]:
    forms = {f for *_, extra in PATIENTS for f in extra}
    return sorted(forms | {f.upper() for f in forms} | {f.lower() for f in forms})


def _found(data: bytes, forms: list[str]) -> list[str]:
    hits = []
    lowered = data.lower()
    for form in forms:
        for encoding in ("utf-8", "latin-1", "utf-16-le"):
            try:
                needle = form.lower().encode(encoding)
            except UnicodeEncodeError:
                continue
            if needle in lowered or json.dumps(form)[1:-1].lower().encode() in lowered:
                hits.append(f"{form} ({encoding})")
                break
    return hits


def _searchable(path: Path) -> bytes:
    """A file's bytes; of a PNG (the review gallery's strips) its text chunks: compressed pixels are noise
    in which a three-letter name such as "doe" turns up by chance, and a name drawn into pixels is no byte
    string to find anyway (the gallery draws pseudonyms only)."""
    if path.suffix != ".png":
        return path.read_bytes()
    from PIL import Image

    with Image.open(path) as image:
        return json.dumps(image.text, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    env = yaml.safe_load(TEST_ENV)
    env["preprocess"]["quality"] = dict(FIXTURE_QUALITY)  # the fixture thorax is 5 cm tall: its own volume ranges
    root = copy_project(tmp_path_factory.mktemp("project"), yaml.safe_dump(env), "parameters.yml")
    raw = root / "data" / "01_raw"
    for layer in ("02_intermediate", "03_primary", "05_model_input", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    for folder, name, charset, birth, _ in PATIENTS:
        _write_study(raw, folder, name, charset, birth)
    (raw / "reports" / "Report Jane Doe 15.05.1930.json").write_text("{not json")  # unusable, named after her
    proc = kedro(root, "run", "--env", "test", "--pipeline=preprocess", timeout=600)
    return root, proc.stdout + proc.stderr


def test_names_and_dates_reach_no_output_log_or_mlflow(swept):
    root, log = swept
    manifest = json.loads((root / "data" / "08_reporting" / "preprocess_manifest.json").read_text())
    assert manifest["summary"]["ok"] == len(PATIENTS), [(r["status"], r["reason"]) for r in manifest["studies"]]
    assert manifest["report_problems"] and re.fullmatch(r"report-[0-9a-f]{10}", manifest["report_problems"][0]["file"])
    forms = _forms()
    searched = {"console log": log.encode()}
    outputs = [p for p in (root / "data").rglob("*") if p.is_file() and "01_raw" not in p.parts]
    tracking = [p for folder in ("mlruns", "mlartifacts") for p in (root / folder).rglob("*") if p.is_file()]
    assert (root / "mlflow.db").is_file() and outputs
    for path in [*outputs, root / "mlflow.db", *tracking]:
        searched[str(path.relative_to(root))] = _searchable(path)
        searched[f"name of {path.relative_to(root)}"] = str(path.relative_to(root)).encode()
    leaks = {where: hits for where, data in searched.items() if (hits := _found(data, forms))}
    assert not leaks, leaks
    local = {p.name for p in (root / "conf" / "local").iterdir()}
    assert {"pseudonym_map.csv", "file_map.csv"} <= local  # the maps back live in git-ignored conf/local only
    assert _found((root / "conf" / "local" / "file_map.csv").read_bytes(), forms)  # the search does find them


def test_maps_back_are_private_catalog_entries():
    """The pseudonym and file-label maps go to conf/local only and are never logged to MLflow."""
    import yaml
    from kedro.io import DataCatalog

    from colearn_pipeline.hooks import private_datasets

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/base/catalog_preprocess.yml").read_text())
    for name in ("preprocess_pseudonym_map", "preprocess_file_map"):
        assert conf[name]["filepath"].startswith("conf/local/") and conf[name]["metadata"]["private"] is True
    catalog = DataCatalog.from_config({k: v for k, v in conf.items() if k.endswith("_map") or k == "model_input"})
    assert private_datasets(catalog) == {"preprocess_pseudonym_map", "preprocess_file_map"}
