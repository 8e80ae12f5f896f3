"""Thin Kedro nodes of the preprocess pipeline: one per stage of the paper's section III-A.

Each per-study node takes its upstream partitions, its own stored partitions (``*_state``: the
fingerprints of earlier runs), its parameter block and the executor block, and returns
``{pseudonym: StudyOutput}``; the work itself is in :mod:`.study`, run by :mod:`.executor`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import pandas as pd

from colearn_pipeline.datasets.raw import DicomTree
from colearn_pipeline.datasets.study_partitions import OK, QUARANTINED, StudyOutput, StudyPartitions
from colearn_pipeline.dicom.discovery import Discovery, SeriesInfo, StudyFiles, select_ct_pet
from colearn_pipeline.dicom.selection import SeriesChoice, choose_series
from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.dicom.pseudonym import patient_pseudonym, short_hash
from colearn_pipeline.groundtruth.expert import find_expert_objects
from colearn_pipeline.pipelines.preprocess import study
from colearn_pipeline.pipelines.preprocess.params import (
    DiscoverParams,
    ExecutorParams,
    ExpertParams,
    GroundTruthParams,
    LabelsParams,
    ModelInputParams,
    PetToCtParams,
    PhantomQaParams,
    QualityParams,
    ReadSeriesParams,
    SuvParams,
    ThoraxExtentParams,
    ThoraxParams,
    build,
    digest,
)
from colearn_pipeline.pipelines.preprocess.stages import run_stage
from colearn_pipeline.suv import SuvPlausibility

logger = logging.getLogger(__name__)

#: Skipped files logged one by one; the rest are counted (all are in the manifest).
MAX_SKIPPED_LOGGED = 20


def _file_identity(root: str, files: list[str]) -> list:
    out = []
    for path in sorted(files):
        st = os.stat(path)
        out.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
    return out


def _beside(found: Discovery, files: list[str]) -> list[tuple[str, str]]:
    """Files skipped by the scan in the folders of ``files``: (file label, reason), named by label only.

    :attr:`Discovery.file_map` (label -> relative path) is used here to find the folders and never
    leaves this function.
    """
    folders = {os.path.dirname(os.path.relpath(f, found.root)) for f in files}
    return [(label, reason) for label, reason in found.skipped
            if os.path.dirname(found.file_map.get(label, "")) in folders and found.file_map.get(label) is not None]


def _problem_files(found: Discovery, files: StudyFiles) -> dict[str, Any]:
    """The study's skipped files (its own and the unreadable ones beside its series) and corrupt files, by label."""
    paths = [f for s in files.series.values() for f in s.files]
    skipped = list(dict.fromkeys([*files.skipped, *_beside(found, paths)]))
    return {"skipped_files": [{"file": f, "reason": r} for f, r in skipped],
            "corrupt_files": [{"file": f, "reason": r} for f, r in files.corrupt],
            "n_skipped_files": len(skipped), "n_corrupt_files": len(files.corrupt)}


def _selection_row(files: StudyFiles, choice: SeriesChoice) -> dict[str, Any]:
    n_ct = sum(s.modality == "CT" for s in files.series.values())
    n_pt = sum(s.modality == "PT" for s in files.series.values())
    return {"ct_series": choice.ct.label, "pet_series": choice.pet.label, "series_records": choice.records,
            "series_selection": f"CT {choice.ct.label} of {n_ct} CT, PET {choice.pet.label} of {n_pt} PET series"}


def _finding(finding: Any) -> Any:
    """A report finding as the stages use it: ``position_mm``, a ``kind`` word and a stated ``size_mm`` (mm, when
    a positive number); free text is dropped."""
    if not isinstance(finding, dict):
        return finding  # malformed: the tumours stage refuses it with its index
    kind = str(finding.get("kind", ""))
    out = {"position_mm": finding.get("position_mm"),
           "kind": kind if re.fullmatch(r"[A-Za-z_ -]{1,32}", kind) else "finding"}
    size = finding.get("size_mm")  # the stated longest diameter: the tumour's size cap follows it
    if isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0:
        out["size_mm"] = float(size)
    return out


def _patient_id(path: str) -> str | None:
    """PatientID of one DICOM file (kept in memory only: it becomes the patient pseudonym)."""
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID") or "")
    except Exception:  # unreadable here means no PatientID: the study is a patient of its own
        return None


def _discover_one(found: Discovery, files: StudyFiles, findings, identity: dict, params: DiscoverParams) -> StudyOutput:
    """One study's discovery record: series chosen (with every candidate's reason), problem files, findings."""
    problems = _problem_files(found, files)
    try:
        choice = choose_series(files, params.rules())
    except DicomSeriesError as exc:
        return StudyOutput(QUARANTINED, digest(identity), exc.problem, exc.file, problems)
    identity["files"] = _file_identity(found.root, choice.ct.files + choice.pet.files)
    row = {**_selection_row(files, choice), **problems, "n_findings": None if findings is None else len(findings),
           "has_report": findings is not None,  # without report: converted, tumours_unlabelled
           "patient": patient_pseudonym(_patient_id(choice.ct.files[0]), files.pseudonym, params.pseudonym_key)}
    if findings == []:
        return StudyOutput(QUARANTINED, digest(identity), "the report lists no findings: no tumour seeds",
                           "reports/", row)
    return StudyOutput(OK, digest(identity), row={**row, "findings": [_finding(f) for f in findings or []]})


def discover_studies(raw_dicom: DicomTree, raw_reports: dict[str, Any], discover: dict[str, Any]):
    """Discover the studies by tags, choose their CT and PET series, match their reports; refuse the unusable.

    Returns
    -------
    studies : dict
        ``{pseudonym: StudyOutput}`` (records only): the raw files' fingerprint, the series chosen
        with every candidate's reason, skipped and corrupt files (by label), findings.
    discovery : dict
        Skipped files (by label) and report problems, for the manifest.
    pseudonym_map : pandas.DataFrame
        Pseudonym -> StudyInstanceUID (for conf/local only; never under data/).
    file_map : pandas.DataFrame
        File label -> path relative to the DICOM folder (for conf/local only; never under data/).
    """
    params = build(DiscoverParams, discover, "preprocess.discover_studies")
    found = raw_dicom.discover(params.pseudonym_key)
    out: dict[str, StudyOutput] = {}
    for pseudonym in sorted(found.studies):
        files = found.studies[pseudonym]
        identity = {"report": raw_reports["digests"].get(files.study_uid), "params": asdict(params)}
        out[pseudonym] = _discover_one(found, files, raw_reports["findings"].get(files.study_uid), identity, params)
        if out[pseudonym].status == QUARANTINED:
            logger.warning("preprocess discover_studies: %s quarantined: %s: %s", pseudonym, out[pseudonym].file,
                           out[pseudonym].reason)
    skipped = [{"file": f, "reason": r} for f, r in found.skipped]
    for item in skipped[:MAX_SKIPPED_LOGGED]:
        logger.warning("preprocess: skipped %s: %s", item["file"], item["reason"])
    if len(skipped) > MAX_SKIPPED_LOGGED:
        logger.warning("preprocess: %d more files skipped (see the manifest)", len(skipped) - MAX_SKIPPED_LOGGED)
    known_uids = {s.study_uid for s in found.studies.values()}
    orphans = [(f, "the report's study_instance_uid matches no study in the DICOM tree")
               for uid, report_files in raw_reports.get("files", {}).items() if uid not in known_uids
               for f in report_files]
    report_problems = [*raw_reports["problems"], *orphans]
    report_labels = {f: "report-" + short_hash(f, params.pseudonym_key) for f, _ in report_problems}
    problems = [{"file": report_labels[f], "reason": r} for f, r in report_problems]
    for item in problems:
        logger.warning("preprocess: %s: %s", item["file"], item["reason"])
    logger.info("preprocess discover_studies: %d studies, %d files skipped", len(out), len(skipped))
    pseudonym_map = pd.DataFrame(
        sorted((p, s.study_uid) for p, s in found.studies.items()), columns=["pseudonym", "study_instance_uid"]
    )
    labels = {**found.file_map, **{label: f for f, label in report_labels.items()}}  # reports: reports/<name>
    file_map = pd.DataFrame(sorted(labels.items()), columns=["file", "relative_path"])
    return out, {"skipped_files": skipped, "report_problems": problems}, pseudonym_map, file_map


def _chosen(files: StudyFiles, record: dict) -> tuple[SeriesInfo, SeriesInfo]:
    """The CT and PET series that discover_studies chose (by label, from its record)."""
    by_label = {s.label: s for s in files.series.values()}
    row = record["row"]
    return by_label[row["ct_series"]], by_label[row["pet_series"]]


def read_series(raw_dicom: DicomTree, studies: StudyPartitions, stored: StudyPartitions, discover: dict,
                read: dict, executor: dict) -> dict[str, StudyOutput]:
    """Read and check the chosen CT and PET series of each study (``ct_hu`` on the CT grid, both grids recorded)."""
    key = build(DiscoverParams, discover, "preprocess.discover_studies").pseudonym_key
    tolerances = asdict(build(ReadSeriesParams, read, "preprocess.read_series"))
    found = raw_dicom.discover(key)
    redact = {p: tuple(sorted(s._identifiers)) for p, s in found.studies.items()}

    def plan(pseudonym, parts):
        files = found.studies[pseudonym]
        ct, pet = _chosen(files, parts["studies"].record)
        labels = {f: files.file_labels[f] for f in ct.files + pet.files}
        beside = [label for label, _ in _beside(found, ct.files + pet.files)]
        kwargs = dict(pseudonym=pseudonym, root=raw_dicom.root, ct_files=list(ct.files), pet_files=list(pet.files),
                      corrupt=list(files.corrupt), skipped_beside=beside, tolerances=tolerances, file_labels=labels)
        return tolerances, study.read_series_stage, kwargs

    return run_stage("read_series", {"studies": studies}, stored, plan, _executor(executor), redact)


def convert_to_suv(raw_dicom: DicomTree, series: StudyPartitions, stored: StudyPartitions, discover: dict,
                   read: dict, suv: dict, phantom_qa: dict, suv_plausibility: dict,
                   executor: dict) -> dict[str, StudyOutput]:
    """PET activity -> SUV on the PET grid (the PET series is read again for its headers).

    ``suv_plausibility`` is ``params:suv`` (conf/base/parameters_suv.yml): a header or an SUV
    volume outside its ranges quarantines the study with the tag and the value.
    """
    discover_params = build(DiscoverParams, discover, "preprocess.discover_studies")
    tolerances = asdict(build(ReadSeriesParams, read, "preprocess.read_series"))
    suv_params = build(SuvParams, suv, "preprocess.suv")
    qa = build(PhantomQaParams, phantom_qa, "preprocess.phantom_qa")
    plausibility = SuvPlausibility.from_params(suv_plausibility)
    found = raw_dicom.discover(discover_params.pseudonym_key)
    rules = discover_params.rules()

    def plan(pseudonym, parts):
        files = found.studies[pseudonym]
        _, pet, _ = select_ct_pet(files, raw_dicom.root, rules=rules)  # the same rules as discover_studies
        truth = _truth_dir(qa, pseudonym)
        kwargs = dict(pseudonym=pseudonym, root=raw_dicom.root, pet_files=list(pet.files), tolerances=tolerances,
                      suv_type=suv_params.suv_type, truth_dir=truth, qa_min_suv=qa.min_suv, plausibility=plausibility,
                      file_labels={f: files.file_labels[f] for f in pet.files}, qa_max_rel_error=qa.max_suv_rel_error)
        fingerprinted = [suv_params.suv_type, truth, qa.min_suv, qa.max_suv_rel_error, suv_plausibility]
        return fingerprinted, study.convert_to_suv_stage, kwargs

    redact = {p: tuple(sorted(s._identifiers)) for p, s in found.studies.items()}
    return run_stage("suv", {"series": series}, stored, plan, _executor(executor), redact)


def resample_pet_to_ct(series: StudyPartitions, suv_pet: StudyPartitions, stored: StudyPartitions, pet_to_ct: dict,
                       executor: dict) -> dict[str, StudyOutput]:
    """SUV onto the CT grid in physical space: one grid for CT, SUV and labels."""
    params = build(PetToCtParams, pet_to_ct, "preprocess.pet_to_ct")

    def plan(pseudonym, parts):
        kwargs = dict(suv_pet=parts["suv_pet"], geometry=parts["series"].record["row"]["ct_geometry"],
                      interpolator=params.interpolator, outside_value=params.outside_value)
        return asdict(params), study.pet_to_ct_stage, kwargs

    return run_stage("pet_to_ct", {"series": series, "suv_pet": suv_pet}, stored, plan, _executor(executor))


def segment_lungs(series: StudyPartitions, stored: StudyPartitions, lungs: dict, thorax_extent: dict,
                  executor: dict) -> dict[str, StudyOutput]:
    """Lungs by the adaptive threshold (Hu et al.), airway removed, kept in the thorax slab; per-study overrides applied."""
    params = GroundTruthParams.from_conf("lungs", lungs)
    extent_params = build(ThoraxExtentParams, thorax_extent, "preprocess.thorax_extent")
    extent = extent_params.extent()

    def plan(pseudonym, parts):
        keywords = params.for_study(pseudonym)
        row = parts["series"].record["row"]
        coverage = row.get("pet_covered_slices")
        kwargs = dict(ct_hu=parts["series"], geometry=row["ct_geometry"], keywords=keywords, extent=extent,
                      pseudonym=pseudonym, pet_covered=coverage, outside_pet=extent_params.outside_pet)
        return [keywords, extent, coverage, extent_params.outside_pet], study.lungs_stage, kwargs

    return run_stage("lungs", {"series": series}, stored, plan, _executor(executor))


def segment_mediastinum(series: StudyPartitions, lungs: StudyPartitions, stored: StudyPartitions, mediastinum: dict,
                        thorax: dict, executor: dict) -> dict[str, StudyOutput]:
    """Mediastinum between the lungs; per-study overrides applied; a study that is not a thorax is quarantined."""
    params = GroundTruthParams.from_conf("mediastinum", mediastinum)
    thorax_params = asdict(build(ThoraxParams, thorax, "preprocess.thorax"))

    def plan(pseudonym, parts):
        keywords = params.for_study(pseudonym)
        row = parts["series"].record["row"]
        kwargs = dict(pseudonym=pseudonym, ct_hu=parts["series"], lungs=parts["lungs"], keywords=keywords,
                      geometry=row["ct_geometry"], thorax=thorax_params,
                      body_part_examined=row.get("ct_body_part_examined"))
        return [keywords, thorax_params, row.get("ct_body_part_examined")], study.mediastinum_stage, kwargs

    return run_stage("mediastinum", {"series": series, "lungs": lungs}, stored, plan, _executor(executor))


def segment_tumours(studies: StudyPartitions, series: StudyPartitions, suv: StudyPartitions, lungs: StudyPartitions,
                    stored: StudyPartitions, tumours: dict, executor: dict) -> dict[str, StudyOutput]:
    """Tumours: 40 % of peak SUV grown from the report's findings in the thorax slab (the lungs stage's);
    per-study overrides applied."""
    params = GroundTruthParams.from_conf("tumours", tumours)

    def plan(pseudonym, parts):
        keywords = params.for_study(pseudonym)
        kwargs = dict(pseudonym=pseudonym, suv=parts["suv"], findings=parts["studies"].record["row"]["findings"],
                      geometry=parts["series"].record["row"]["ct_geometry"], keywords=keywords,
                      thorax_extent=parts["lungs"].record["row"].get("thorax_extent", study.WHOLE_VOLUME))
        return keywords, study.tumours_stage, kwargs

    inputs = {"suv": suv, "studies": studies, "series": series, "lungs": lungs}
    return run_stage("tumours", inputs, stored, plan, _executor(executor))


def compose_labels(raw_dicom: DicomTree, series: StudyPartitions, lungs: StudyPartitions,
                   mediastinum: StudyPartitions, tumours: StudyPartitions, stored: StudyPartitions, discover: dict,
                   read: dict, phantom_qa: dict, quality: dict, labels: dict,
                   executor: dict) -> dict[str, StudyOutput]:
    """One label volume per study (lung 1, mediastinum 2, tumour 3), its quality figures and review, and Dice
    against the phantom's truth where present. A corrected label map in ``labels.corrections_dir``
    replaces the derived one; else an expert's RTSTRUCT or SEG beside the images (``labels.expert``)
    replaces the classes it contours (the CT series is then read for its grid and slice references)."""
    qa = build(PhantomQaParams, phantom_qa, "preprocess.phantom_qa")
    quality_params = build(QualityParams, quality, "preprocess.quality")
    labels_params = build(LabelsParams, labels, "preprocess.labels")
    expert_params = build(ExpertParams, labels_params.expert, "preprocess.labels.expert")
    found: list = []

    def discovered() -> tuple[DiscoverParams, Discovery]:
        if not found:
            found.append(build(DiscoverParams, discover, "preprocess.discover_studies"))
            found.append(raw_dicom.discover(found[0].pseudonym_key))
        return found[0], found[1]

    def chosen_ct(pseudonym: str) -> SeriesInfo:
        params, tree = discovered()
        ct, _, _ = select_ct_pet(tree.studies[pseudonym], raw_dicom.root, rules=params.rules())
        return ct

    def plan(pseudonym, parts):
        truth = _truth_dir(qa, pseudonym)
        correction = correction_for(labels_params.corrections_dir, pseudonym)
        kwargs = dict(pseudonym=pseudonym, lungs=parts["lungs"], mediastinum=parts["mediastinum"],
                      tumours=parts["tumours"], geometry=parts["series"].record["row"]["ct_geometry"],
                      truth_dir=truth, hull_margin_mm=quality_params.hull_margin_mm,
                      ct_hu=parts["series"], aerated_lung_hu=quality_params.aerated_lung_hu,
                      review_ranges=quality_params.ranges(), correction=correction)
        fingerprinted = [truth, asdict(quality_params), None]
        expert = None
        if correction is None and expert_params.enabled:
            expert = expert_for_study(discovered()[1], pseudonym, chosen_ct(pseudonym),
                                      expert_params.rules_for(pseudonym), expert_params.slice_tolerance_fraction)
        if correction is not None or expert is not None:
            kwargs.update(root=raw_dicom.root, ct_files=list(chosen_ct(pseudonym).files),
                          tolerances=asdict(build(ReadSeriesParams, read, "preprocess.read_series")))
        if correction is not None:
            fingerprinted[2] = _content_digest(correction)
        if expert is not None:
            kwargs["expert"] = expert
            fingerprinted.append({**expert, "digests": [_content_digest(o["path"]) for o in expert["objects"]]})
        return fingerprinted, study.labels_stage, kwargs

    inputs = {"tumours": tumours, "lungs": lungs, "mediastinum": mediastinum, "series": series}
    return run_stage("labels", inputs, stored, plan, _executor(executor))


def expert_for_study(found: Discovery, pseudonym: str, ct: SeriesInfo, rules: dict[str, str],
                     tolerance_fraction: float) -> dict[str, Any] | None:
    """The expert contours of a study for the labels stage, or None: the RTSTRUCTs and SEGs the scan set
    aside that reference its CT series (else its frame of reference), in the study or in a "study" of
    non-image objects only (a planning system that gave its structure set a StudyInstanceUID of its own).

    Returns
    -------
    dict or None
        ``objects`` (``path``, ``kind``, ``match``, ``file``: its label), ``rules``, ``tolerance_fraction``.
    """
    aside = [label for label, _ in found.studies[pseudonym].skipped]
    aside += [label for other in found.studies.values() if not other.series for label, _ in other.skipped]
    by_path = {os.path.join(found.root, found.file_map[label]): label for label in aside if label in found.file_map}
    objects = find_expert_objects(list(by_path), ct.series_uid.split("/")[0], ct.frame_of_reference_uid)
    if not objects:
        return None
    return {"objects": [{**asdict(o), "file": by_path[o.path]} for o in objects], "rules": rules,
            "tolerance_fraction": float(tolerance_fraction)}


def correction_for(corrections_dir: str | None, pseudonym: str) -> str | None:
    """The corrected label map of a study: ``<pseudonym>.nii.gz``, ``.nii``, ``.dcm`` or a folder ``<pseudonym>/``
    holding one such file (or one SEG file); None when there is none."""
    if not corrections_dir or not os.path.isdir(corrections_dir):
        return None
    for suffix in (".nii.gz", ".nii", ".dcm"):
        path = os.path.join(corrections_dir, pseudonym + suffix)
        if os.path.isfile(path):
            return path
    folder = os.path.join(corrections_dir, pseudonym)
    if os.path.isdir(folder):
        files = sorted(f for f in os.listdir(folder) if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))
        if files:
            return os.path.join(folder, files[0])
    return None


def _content_digest(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build_model_input(studies: StudyPartitions, series: StudyPartitions, suv: StudyPartitions, labels: StudyPartitions,
                      stored: StudyPartitions, model_input: dict, executor: dict) -> dict[str, StudyOutput]:
    """Slice selection and the per-study model input (docs/architecture.md); a study without report
    (``tumours_unlabelled``) gets one only where ``model_input.include_tumours_unlabelled`` says so,
    unless an expert contoured its tumours."""
    params = build(ModelInputParams, model_input, "preprocess.model_input")

    def plan(pseudonym, parts):
        expert_tumour = "tumour" in (parts["labels"].record["row"].get("expert_classes") or [])
        unlabelled = not parts["studies"].record["row"].get("has_report", True) and not expert_tumour
        patient = parts["studies"].record["row"].get("patient") or pseudonym  # the split's unit
        kwargs = dict(pseudonym=pseudonym, ct_hu=parts["series"], suv=parts["suv"], labels=parts["labels"],
                      geometry=parts["series"].record["row"]["ct_geometry"], tumours_unlabelled=unlabelled,
                      patient=patient, **asdict(params))
        return [asdict(params), unlabelled, patient], study.model_input_stage, kwargs

    inputs = {"labels": labels, "studies": studies, "series": series, "suv": suv}
    return run_stage("model_input", inputs, stored, plan, _executor(executor))


def _executor(block: Mapping) -> ExecutorParams:
    return build(ExecutorParams, block, "preprocess.executor")


def _truth_dir(qa: PhantomQaParams, pseudonym: str) -> str | None:
    if not qa.truth_dir:
        return None
    path = os.path.join(qa.truth_dir, pseudonym)
    return path if os.path.isdir(path) else None
