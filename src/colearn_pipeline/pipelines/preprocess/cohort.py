"""The cohort: discover studies, plan one job per study, run the jobs in worker processes."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from colearn_pipeline.dicom.discovery import Discovery, discover, select_ct_pet
from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.dicom.pseudonym import DEFAULT_PSEUDONYM_KEY
from colearn_pipeline.pipelines.preprocess.study import StudyJob, process_study

logger = logging.getLogger(__name__)

#: Skipped files logged one by one; the rest are counted (all are in the manifest).
MAX_SKIPPED_LOGGED = 20


def read_reports(reports_dir: str | os.PathLike) -> tuple[dict[str, list[dict]], list[tuple[str, str]]]:
    """Read every ``*.json`` report and index its findings by StudyInstanceUID.

    Parameters
    ----------
    reports_dir : path-like
        ``data/01_raw/reports``; a missing folder means no reports.

    Returns
    -------
    findings : dict
        StudyInstanceUID -> findings (reports of the same study are concatenated).
    problems : list of (str, str)
        Report files that could not be used, with the reason (file names only).
    """
    out: dict[str, list[dict]] = {}
    problems: list[tuple[str, str]] = []
    folder = Path(reports_dir)
    if not folder.is_dir():
        return out, problems
    for path in sorted(folder.glob("*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            uid = str(report["study_instance_uid"]).strip()
            findings = report.get("findings") or []
            if not isinstance(findings, list):
                raise TypeError("'findings' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append((f"reports/{path.name}", f"unusable report ({type(exc).__name__}: {exc})"))
            continue
        out.setdefault(uid, []).extend(findings)
    return out, problems


def plan_cohort(params: Mapping[str, Any], staging_dir: str) -> tuple[list[StudyJob], list[dict], Discovery, list]:
    """Discover the studies and build one :class:`StudyJob` per usable study.

    Parameters
    ----------
    params : mapping
        The ``preprocess`` parameters (``raw_dicom_dir``, ``reports_dir``, ``phantom_truth_dir``,
        ``pseudonym_key``, ...).
    staging_dir : str
        Per-run staging folder (a sub-folder per study is used).

    Returns
    -------
    jobs : list of StudyJob
    quarantined : list of dict
        Manifest rows of studies refused at study level (no PET, different frames, ...).
    discovery : Discovery
    report_problems : list of (str, str)
    """
    root = str(params["raw_dicom_dir"])
    found = discover(root, key=str(params.get("pseudonym_key") or DEFAULT_PSEUDONYM_KEY))
    reports, report_problems = read_reports(params.get("reports_dir", ""))
    truth_root = params.get("phantom_truth_dir")
    jobs: list[StudyJob] = []
    quarantined: list[dict] = []
    for pseudonym in sorted(found.studies):
        study = found.studies[pseudonym]
        try:
            ct, pet, note = select_ct_pet(study, root)
        except DicomSeriesError as exc:
            quarantined.append(
                {"pseudonym": pseudonym, "status": "quarantined", "reason": exc.problem, "file": exc.file}
            )
            continue
        truth = Path(truth_root) / pseudonym if truth_root else None
        folders = {os.path.relpath(os.path.dirname(f), root) for f in ct.files + pet.files}
        beside = [study.redact(f) for f, _ in found.skipped if os.path.dirname(f) in folders]
        jobs.append(
            StudyJob(
                pseudonym=pseudonym,
                root=root,
                ct_files=list(ct.files),
                pet_files=list(pet.files),
                selection=note,
                findings=reports.get(study.study_uid),
                truth_dir=str(truth) if truth is not None and truth.is_dir() else None,
                staging_dir=str(Path(staging_dir) / pseudonym),
                params=dict(params),
                corrupt=[(study.redact(f), study.redact(r)) for f, r in study.corrupt],
                identifiers=sorted(study._identifiers),
                skipped_beside=beside,
            )
        )
    return jobs, quarantined, found, report_problems


def run_jobs(
    jobs: Iterable[StudyJob],
    workers: int = 1,
    progress: Callable[[int, int, dict], None] | None = None,
) -> list[dict]:
    """Run :func:`process_study` over the jobs, ``workers`` processes at a time.

    Parameters
    ----------
    jobs : iterable of StudyJob
    workers : int
        0 runs the studies one after the other in this process (debugging); 1 or more uses a
        ``ProcessPoolExecutor`` of that many fresh (spawned) processes, each holding one study in
        memory at a time.
    progress : callable, optional
        ``progress(done, total, row)`` after each study.

    Returns
    -------
    list of dict
        Manifest rows in the order of ``jobs``.
    """
    jobs = list(jobs)
    total = len(jobs)
    rows: list[dict | None] = [None] * total
    if int(workers) <= 0 or total == 0:
        for i, job in enumerate(jobs):
            rows[i] = process_study(job)
            if progress:
                progress(i + 1, total, rows[i])  # type: ignore[arg-type]
        return rows  # type: ignore[return-value]
    context = multiprocessing.get_context("spawn")  # clean workers: no inherited memory or threads
    with ProcessPoolExecutor(max_workers=min(int(workers), total), mp_context=context) as pool:
        futures = {pool.submit(process_study, job): i for i, job in enumerate(jobs)}
        for done, fut in enumerate(as_completed(futures), start=1):
            i = futures[fut]
            try:
                rows[i] = fut.result()
            except Exception as exc:  # a worker that died (e.g. killed for memory)
                rows[i] = {
                    "pseudonym": jobs[i].pseudonym, "status": "quarantined", "file": "-",
                    "reason": f"worker failed ({type(exc).__name__}: {exc})",
                }
            if progress:
                progress(done, total, rows[i])  # type: ignore[arg-type]
    return rows  # type: ignore[return-value]


def log_progress(done: int, total: int, row: dict) -> None:
    """One log line per study, naming only the pseudonym."""
    if row.get("status") == "ok":
        logger.info(
            "preprocess [%d/%d] %s ok: %s slices, %.1f s", done, total, row["pseudonym"],
            row.get("slices_kept"), row.get("seconds", float("nan")),
        )
    else:
        logger.warning(
            "preprocess [%d/%d] %s quarantined: %s: %s", done, total, row["pseudonym"], row.get("file"), row.get("reason")
        )


def run_cohort(params: Mapping[str, Any], staging_dir: str) -> tuple[list[dict], dict]:
    """Discover, plan and process the cohort.

    Returns
    -------
    rows : list of dict
        One manifest row per study (sorted by pseudonym), staged outputs under ``"_staged"``.
    extra : dict
        ``skipped_files`` (file, reason), ``report_problems``, ``seconds``, ``study_uids``
        (pseudonym -> StudyInstanceUID, for the optional local map only).
    """
    start = time.perf_counter()
    jobs, quarantined, found, report_problems = plan_cohort(params, staging_dir)
    for row in quarantined:
        logger.warning("preprocess: %s quarantined: %s: %s", row["pseudonym"], row["file"], row["reason"])
    logger.info(
        "preprocess: %d studies found, %d to process, %d refused at study level, %d files skipped, workers=%s",
        len(found.studies), len(jobs), len(quarantined), len(found.skipped), params.get("workers", 1),
    )
    rows = run_jobs(jobs, int(params.get("workers", 1)), log_progress) + quarantined
    rows.sort(key=lambda r: r["pseudonym"])
    identifiers = set().union(*(s._identifiers for s in found.studies.values())) if found.studies else set()

    def redact(text: str) -> str:
        for ident in sorted(identifiers, key=len, reverse=True):
            text = text.replace(ident, "<redacted>")
        return text

    for f, r in found.skipped[:MAX_SKIPPED_LOGGED]:
        logger.warning("preprocess: skipped %s: %s", redact(f), r)
    if len(found.skipped) > MAX_SKIPPED_LOGGED:
        logger.warning("preprocess: %d more files skipped (see the manifest)", len(found.skipped) - MAX_SKIPPED_LOGGED)
    for f, r in report_problems:
        logger.warning("preprocess: %s: %s", f, r)
    extra = {
        "skipped_files": [{"file": redact(f), "reason": r} for f, r in found.skipped],
        "report_problems": [{"file": f, "reason": r} for f, r in report_problems],
        "seconds": round(time.perf_counter() - start, 3),
        "study_uids": {p: s.study_uid for p, s in found.studies.items()},
    }
    return rows, extra
