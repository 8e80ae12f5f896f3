"""What every per-study stage node does: fingerprint, skip unchanged studies, run the rest, report.

A study's fingerprint in a stage is a hash of the stage's name and version, its parameters for that
study (per-study overrides included) and the fingerprints of its upstream partitions -- which go
back to the raw files (path, size, modification time) and the report. A study whose stored
record of the stage carries the same fingerprint (and whose files are on disk) is left alone.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from colearn_pipeline.datasets.study_partitions import (
    FAILED,
    OK,
    QUARANTINED,
    UNCHANGED,
    StudyOutput,
    StudyPartition,
    StudyPartitions,
)
from colearn_pipeline.pipelines.preprocess.executor import make_task, run_tasks, staging_folder
from colearn_pipeline.pipelines.preprocess.params import ExecutorParams, digest

logger = logging.getLogger(__name__)

#: Bump when a stage's code changes its outputs, so stored partitions are recomputed.
STAGE_VERSION = 3

#: ``plan(pseudonym, upstream partitions by input name) -> (parameters to fingerprint, func, kwargs)``.
Plan = Callable[[str, Mapping[str, StudyPartition]], tuple[Any, Callable[..., dict], dict[str, Any]]]


def _upstream_status(pseudonym: str, inputs: Mapping[str, StudyPartitions]) -> StudyOutput | None:
    """The study's output when an upstream stage did not give it usable partitions, else None."""
    for name, partitions in inputs.items():
        record = partitions.records.get(pseudonym)
        if record is None or (record.get("status") == OK and pseudonym not in partitions):
            return StudyOutput(FAILED, reason=f"no {name} output: run the upstream stage", file="-")
        if record.get("status") == QUARANTINED:
            return StudyOutput(QUARANTINED, fingerprint=record.get("fingerprint"), reason=record.get("reason", ""),
                               file=record.get("file", ""))
        if record.get("status") == FAILED:
            return StudyOutput(FAILED, reason=f"{name}: {record.get('reason', '')}", file=record.get("file", "-"))
    return None


def run_stage(stage: str, inputs: Mapping[str, StudyPartitions], stored: StudyPartitions, plan: Plan,
              executor: ExecutorParams, redact: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, StudyOutput]:
    """Run one stage over every study of its first input.

    Parameters
    ----------
    stage : str
        Stage name (fingerprints, staging folders, log lines, ``t_<stage>_s`` manifest fields).
    inputs : mapping
        Upstream stage partitions by name; the first one lists the studies.
    stored : StudyPartitions
        This stage's stored partitions (records with fingerprints) from earlier runs.
    plan : callable
        Parameters to fingerprint, the worker function and its keyword arguments for one study.
    executor : ExecutorParams
    redact : mapping, optional
        Pseudonym -> identifiers to remove from that study's messages.

    Returns
    -------
    dict
        ``{pseudonym: StudyOutput}`` for the stage's dataset to commit.
    """
    first = next(iter(inputs.values()))
    outputs: dict[str, StudyOutput] = {}
    tasks, fingerprints = [], {}
    staging = staging_folder(executor)
    for pseudonym in sorted(first.records):
        upstream = _upstream_status(pseudonym, inputs)
        if upstream is not None:
            outputs[pseudonym] = upstream
            continue
        parts = {name: p[pseudonym] for name, p in inputs.items()}
        params, func, kwargs = plan(pseudonym, parts)
        fingerprint = digest({"stage": stage, "version": STAGE_VERSION, "params": params,
                              "upstream": {n: p.fingerprint for n, p in parts.items()}})
        old = stored.records.get(pseudonym) or {}
        if old.get("fingerprint") == fingerprint and (
            (old.get("status") == OK and pseudonym in stored) or old.get("status") == QUARANTINED
        ):
            outputs[pseudonym] = StudyOutput(UNCHANGED, fingerprint=fingerprint)
            continue
        fingerprints[pseudonym] = fingerprint
        tasks.append(make_task(pseudonym, stage, func, kwargs, str(staging / stage / pseudonym),
                               (redact or {}).get(pseudonym, ())))
    results = run_tasks(tasks, executor)
    for task in tasks:
        result = results[task.pseudonym]
        if result["status"] != OK:
            shutil.rmtree(task.staging_dir, ignore_errors=True)  # e.g. what a killed worker left
        outputs[task.pseudonym] = StudyOutput(
            result["status"], fingerprint=fingerprints[task.pseudonym] if result["status"] != FAILED else None,
            reason=result["reason"], file=result["file"], row=result["row"], staged=result["staged"],
        )
        _log(stage, task.pseudonym, outputs[task.pseudonym])
    if not any(o.status == OK for o in outputs.values()):
        _rmdir_chain(staging / stage)
    counts = {s: sum(o.status == s for o in outputs.values()) for s in (OK, UNCHANGED, QUARANTINED, FAILED)}
    logger.info("preprocess %s: %d studies: %d computed ok, %d unchanged, %d quarantined, %d failed", stage,
                len(outputs), counts[OK], counts[UNCHANGED], counts[QUARANTINED], counts[FAILED])
    return outputs


def _log(stage: str, pseudonym: str, out: StudyOutput) -> None:
    if out.status == OK:
        logger.info("preprocess %s: %s ok, %.1f s", stage, pseudonym, out.row.get(f"t_{stage}_s", float("nan")))
    elif out.status == QUARANTINED:
        logger.warning("preprocess %s: %s quarantined: %s: %s", stage, pseudonym, out.file, out.reason)
    else:
        logger.error("preprocess %s: %s failed: %s", stage, pseudonym, out.reason)


def _rmdir_chain(folder: Path) -> None:
    for path in (folder, folder.parent):
        try:
            path.rmdir()
        except OSError:
            return
