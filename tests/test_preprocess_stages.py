"""The preprocess stages on a tiny phantom cohort: incremental runs, --from-nodes, a killed worker, staging.

A cohort of three ``tiny`` phantom studies is generated once; each test copies two or three of them
into its own raw folder and runs the pipeline through the project's catalog (paths moved to a
temporary folder), as ``kedro run --pipeline=preprocess`` would.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from dicom_fixtures import run_preprocess_catalog

from colearn_pipeline.pipelines.preprocess import create_pipeline
from colearn_pipeline.pipelines.preprocess.executor import KILL_HOOK_ENV, STAGING_PREFIX
from colearn_pipeline.pipelines.preprocess.manifest import PreprocessRunError
from colearn_pipeline.phantom.generate import generate_cohort

pytestmark = pytest.mark.slow

STAGE_NODES = ["discover_studies", "read_series", "convert_to_suv", "resample_pet_to_ct", "segment_lungs",
               "segment_mediastinum", "segment_tumours", "compose_labels", "build_model_input", "write_manifest",
               "build_review_gallery", "check_preprocess_outcome"]
PER_STUDY = ["read_series", "suv", "pet_to_ct", "lungs", "mediastinum", "tumours", "labels", "model_input"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("phantom")
    summary = generate_cohort(root, n_studies=3, seed=5, size="tiny", workers=2)
    return {"root": root, "studies": summary["studies"]}


def _raw(cohort, dest: Path, studies: list[dict]) -> Path:
    for sub in ("dicom", "reports", "phantom_truth"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for s in studies:
        shutil.copytree(cohort["root"] / s["dicom_dir"], dest / s["dicom_dir"])
        shutil.copy2(cohort["root"] / s["report"], dest / s["report"])
        shutil.copytree(cohort["root"] / "phantom_truth" / s["pseudonym"], dest / "phantom_truth" / s["pseudonym"])
    return dest


def _computed(log: str, stage: str) -> int:
    line = next(x for x in log.splitlines() if x.startswith(f"preprocess {stage}: ") and " studies: " in x)
    return int(line.split(" studies: ")[1].split(" computed")[0])


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".records" not in p.parts}


def test_pipeline_has_the_paper_stages_each_with_its_parameters():
    pipe = create_pipeline()
    assert sorted(n.name for n in pipe.nodes) == sorted(STAGE_NODES)
    by = {n.name: n for n in pipe.nodes}
    for upstream, downstream in [("discover_studies", "read_series"), ("read_series", "convert_to_suv"),
                                 ("convert_to_suv", "resample_pet_to_ct"), ("segment_lungs", "segment_mediastinum"),
                                 ("resample_pet_to_ct", "segment_tumours"), ("segment_mediastinum", "compose_labels"),
                                 ("segment_tumours", "compose_labels"), ("compose_labels", "build_model_input"),
                                 ("build_model_input", "write_manifest"), ("write_manifest", "build_review_gallery")]:
        assert set(by[upstream].outputs) & set(by[downstream].inputs), (upstream, downstream)
    assert "params:preprocess.tumours" in by["segment_tumours"].inputs
    assert "params:preprocess.lungs" in by["segment_lungs"].inputs
    assert {"raw_dicom", "raw_reports"} <= set(pipe.inputs())
    assert "model_input" in pipe.outputs() or "model_input" in by["build_model_input"].outputs


def test_state_entries_read_the_same_files_as_the_stage_outputs():
    catalog = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/base/catalog_preprocess.yml").read_text())
    states = [name for name in catalog if name.endswith("_state")]
    assert len(states) == len(PER_STUDY)
    for name in states:
        output = catalog[name.removesuffix("_state")]
        assert {k: v for k, v in catalog[name].items() if k != "metadata"} == \
            {k: v for k, v in output.items() if k != "metadata"}


def test_second_run_skips_unchanged_studies_and_a_new_study_is_the_only_one_processed(cohort, tmp_path):
    raw = _raw(cohort, tmp_path / "raw", cohort["studies"][:2])
    stale = tmp_path / "out" / "02_intermediate" / f"{STAGING_PREFIX}999999999-dead"
    stale.mkdir(parents=True)  # left by a run killed with SIGKILL
    first = run_preprocess_catalog(raw, tmp_path / "out", workers=2)
    assert [r["status"] for r in first["manifest"]["studies"]] == ["ok", "ok"]
    assert not stale.exists()
    before = _digest(tmp_path / "out")
    second = run_preprocess_catalog(raw, tmp_path / "out", workers=2)
    assert all(_computed(second["log"], s) == 0 for s in PER_STUDY)
    assert _digest(tmp_path / "out") == before
    assert second["manifest"]["studies"] == first["manifest"]["studies"]
    _raw(cohort, raw, cohort["studies"][2:])
    third = run_preprocess_catalog(raw, tmp_path / "out", workers=2)
    assert all(_computed(third["log"], s) == 1 for s in PER_STUDY)
    assert third["manifest"]["summary"]["ok"] == 3
    assert not list((tmp_path / "out" / "02_intermediate").glob(f"{STAGING_PREFIX}*"))


def test_from_tumour_node_recomputes_tumours_labels_and_model_input_only(cohort, tmp_path):
    raw = _raw(cohort, tmp_path / "raw", cohort["studies"][:2])
    out = tmp_path / "out"
    run_preprocess_catalog(raw, out, workers=2)
    before = _digest(out)
    tail = create_pipeline().from_nodes("segment_tumours")
    assert {n.name for n in tail.nodes} == {"segment_tumours", "compose_labels", "build_model_input",
                                            "write_manifest", "build_review_gallery", "check_preprocess_outcome"}
    pseudonym = cohort["studies"][0]["pseudonym"]
    again = run_preprocess_catalog(raw, out, workers=2, pipeline=tail,
                                   tumours={"overrides": {pseudonym: {"peak_fraction": 0.6}}})
    assert _computed(again["log"], "tumours") == 1  # only the study whose tumour parameters changed
    after = _digest(out)
    changed = {k for k in before if before[k] != after.get(k)}
    review = {k for k in changed if k.startswith("08_reporting/review")}  # the gallery: that study's strip redrawn
    assert f"08_reporting/review/{pseudonym}.png" in review
    assert review <= {f"08_reporting/review/{pseudonym}.png", "08_reporting/review/index.html",
                      "08_reporting/review_first_study.png"}
    assert changed - review == {f"02_intermediate/tumours/{pseudonym}.nii.gz", f"03_primary/labels/{pseudonym}.nii.gz",
                       f"05_model_input/{pseudonym}.npz", "08_reporting/preprocess_manifest.csv",
                       "08_reporting/preprocess_manifest.json"}
    # a full run with the same parameters then finds nothing to do
    full = run_preprocess_catalog(raw, out, workers=2, tumours={"overrides": {pseudonym: {"peak_fraction": 0.6}}})
    assert all(_computed(full["log"], s) == 0 for s in PER_STUDY)


def _kill_one_worker(cohort, tmp_path, monkeypatch, *, earlier_kept, **run_kwargs):
    """Two studies preprocessed, then the tumours stage re-run with the victim's worker SIGKILLed (the
    test hook, as the out-of-memory killer would). Checks that only the victim failed and that its
    ``earlier_kept`` output plus tumours/labels/model input from the first run are untouched; returns
    ``(out, victim, other, manifest rows)``."""
    import json

    raw = _raw(cohort, tmp_path / "raw", cohort["studies"][:2])
    out = tmp_path / "out"
    run_preprocess_catalog(raw, out, workers=2)
    before = _digest(out)
    victim, other = (s["pseudonym"] for s in cohort["studies"][:2])
    monkeypatch.setenv(KILL_HOOK_ENV, f"tumours:{victim}")
    with pytest.raises(PreprocessRunError, match=f"1 studies failed.*{victim}"):
        run_preprocess_catalog(raw, out, workers=2, tumours={"peak_fraction": 0.6}, **run_kwargs)
    after = _digest(out)
    for rel in (f"02_intermediate/tumours/{victim}.nii.gz", f"03_primary/labels/{victim}.nii.gz",
                f"05_model_input/{victim}.npz", f"02_intermediate/{earlier_kept}/{victim}.nii.gz"):
        assert after[rel] == before[rel], rel  # the earlier run's outputs are still there, unchanged
    assert after[f"05_model_input/{other}.npz"] != before[f"05_model_input/{other}.npz"]  # the other went on
    rows = {r["pseudonym"]: r for r in json.loads((out / "08_reporting/preprocess_manifest.json").read_text())["studies"]}
    assert rows[other]["status"] == "ok" and rows[victim]["status"] == "failed"
    assert not list((out / "02_intermediate").glob(f"{STAGING_PREFIX}*/tumours/*"))
    return out, victim, rows


def test_killed_worker_fails_its_study_only_and_keeps_its_earlier_outputs(cohort, tmp_path, monkeypatch):
    out, victim, rows = _kill_one_worker(cohort, tmp_path, monkeypatch, earlier_kept="ct_hu")
    assert "worker died" in rows[victim]["reason"]
    assert "attempt 2" in rows[victim]["reason"]  # retried once on a fresh worker
    monkeypatch.delenv(KILL_HOOK_ENV)
    healed = run_preprocess_catalog(out.parent / "raw", out, workers=2, tumours={"peak_fraction": 0.6})
    assert _computed(healed["log"], "tumours") == 1 and healed["manifest"]["summary"]["ok"] == 2


def test_dead_dask_worker_fails_its_study_only_and_keeps_its_earlier_outputs(cohort, tmp_path, monkeypatch):
    """The same on a 2-worker Dask LocalCluster: the victim fails as a worker failure (KilledWorker)."""
    from colearn_pipeline.pipelines.preprocess import executor

    try:
        _, victim, rows = _kill_one_worker(cohort, tmp_path, monkeypatch, earlier_kept="lungs", executor={"kind": "dask"})
    finally:
        for key in list(executor._DASK):
            executor._close_dask(key)
    assert "worker died (KilledWorker)" in rows[victim]["reason"]


def test_stage_records_found_from_another_working_folder(tmp_path, monkeypatch):
    """Kedro makes only path/filepath/filename absolute: records_dir is relative to path, so a notebook
    in notebooks/ (another working folder) still finds every study's record of model_input."""
    import numpy as np
    from kedro.framework.context.context import _convert_paths_to_absolute_posix
    from kedro.io import DataCatalog

    from colearn_pipeline.datasets import StudyOutput

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/base/catalog_preprocess.yml").read_text())
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    entries = _convert_paths_to_absolute_posix(project, {"model_input": conf["model_input"]})
    staged = tmp_path / "staging" / "model_input.npz"
    staged.parent.mkdir()
    np.savez(staged, labels=np.zeros((1, 2, 2), np.uint8))
    monkeypatch.chdir(project)
    DataCatalog.from_config(entries).save("model_input", {"study-0000000001": StudyOutput(
        "ok", "fp", row={"slices_kept": 1}, staged={"model_input": str(staged)})})
    assert (project / "data/05_model_input/.records/model_input/study-0000000001.json").is_file()
    monkeypatch.chdir(project / "notebooks")
    loaded = DataCatalog.from_config(entries).load("model_input")
    assert list(loaded) == ["study-0000000001"] and loaded.records["study-0000000001"]["status"] == "ok"
    assert loaded["study-0000000001"].fingerprint == "fp"


def _discover_block() -> dict:
    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/base/parameters_preprocess.yml").read_text())
    return conf["preprocess"]["discover_studies"]


def test_series_selection_block_is_strict_and_mirrors_the_rules():
    from colearn_pipeline.dicom.selection import SelectionRules
    from colearn_pipeline.pipelines.preprocess.params import DiscoverParams, ParameterError, build

    block = _discover_block()
    assert build(DiscoverParams, block, "preprocess.discover_studies").rules() == SelectionRules()
    extra = {**block, "series_selection": {**block["series_selection"], "prefer_enhanced": True}}
    with pytest.raises(ParameterError, match="series_selection.prefer_enhanced"):
        build(DiscoverParams, extra, "preprocess.discover_studies")
    missing = {**block, "series_selection": {k: v for k, v in block["series_selection"].items() if k != "ct_max_tilt_deg"}}
    with pytest.raises(ParameterError, match="series_selection.ct_max_tilt_deg"):
        build(DiscoverParams, missing, "preprocess.discover_studies")


def test_read_series_reads_the_series_chosen_by_a_conf_override(tmp_path):
    """A second corrected PET (fewer slices) is chosen only when an override names it; read_series reads it."""
    import json

    import pydicom
    from dicom_fixtures import pet_suv_tags, preprocess_catalog, write_thorax_study
    from kedro.runner import SequentialRunner
    from pydicom.uid import generate_uid

    from colearn_pipeline.dicom import discover, pseudonymise

    raw = tmp_path / "raw"
    suv_tags = pet_suv_tags()

    def pet_extra(ds, k):
        suv_tags(ds, k)
        ds.SeriesNumber = 3

    s = write_thorax_study(raw / "dicom" / "a", reports_dir=raw / "reports", study_uid=generate_uid(),
                           pet_extra=pet_extra)
    (raw / "dicom" / "a" / "pet2").mkdir()
    second = generate_uid()
    for k, path in enumerate(s["pet_files"][:9]):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesNumber = second, 9
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(raw / "dicom" / "a" / "pet2" / f"{k}.dcm")
    pseudonym = pseudonymise(s["study_uid"])
    series = discover(raw / "dicom").studies[pseudonym].series.values()
    ct = next(i.label for i in series if i.modality == "CT")
    pet2 = next(i.label for i in series if i.modality == "PT" and i.n_slices == 9)
    rules = dict(_discover_block()["series_selection"], overrides={pseudonym: {"ct": ct, "pet": pet2}})
    pipe = create_pipeline().to_nodes("read_series")
    rows = {}
    for name, change in (("default", {}), ("override", {"discover_studies": {"series_selection": rules}})):
        catalog, _ = preprocess_catalog(raw, tmp_path / name, **change)
        SequentialRunner().run(pipe, catalog)
        records = tmp_path / name / "02_intermediate" / ".records"
        rows[name] = {stage: json.loads((records / stage / f"{pseudonym}.json").read_text())["row"]
                      for stage in ("studies", "read_series")}
    assert rows["default"]["read_series"]["pet_shape_zyx"][0] == len(s["pet_files"])
    assert rows["default"]["studies"]["pet_series"] != pet2
    assert rows["override"]["read_series"]["pet_shape_zyx"][0] == 9
    assert rows["override"]["studies"]["pet_series"] == pet2
    assert {r["reason"] for r in rows["override"]["studies"]["series_records"] if r["chosen"]} == \
        {"per-study override in conf"}
