"""Segment every study under a folder: read, segment, export; a bad study is set aside with its reason.

Used by ``colearn-predict`` and by the ``predict`` Kedro pipeline. Each study's outputs are
written into one folder, in their final format, named by pseudonym only:
``<pseudonym>.nii.gz`` (labels on the CT grid), ``<pseudonym>.seg.dcm`` (DICOM SEG),
``<pseudonym>.sr.dcm`` (the tumours' PET figures as a TID 1500 DICOM SR referencing the SEG),
``<pseudonym>.summary.json`` and ``<pseudonym>.summary.csv``; with ``formats: [seg, rtstruct]`` also
``<pseudonym>.rtstruct.dcm`` (RT Structure Set, :mod:`.rtstruct`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from colearn_pipeline import __version__
from colearn_pipeline.datasets._atomic import atomic_write
from colearn_pipeline.dicom.discovery import Discovery, StudyFiles, discover
from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.dicom.pseudonym import DEFAULT_PSEUDONYM_KEY
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.inference.dicom_headers import HeaderError
from colearn_pipeline.inference.ensemble import component_uncertainty, tumour_components
from colearn_pipeline.inference.models import ModelEnsemble
from colearn_pipeline.inference.rtstruct import label_map_rtstruct
from colearn_pipeline.inference.seg import LabelMapError, build_seg, seg_sources, write_seg
from colearn_pipeline.inference.segment import InferenceOptions, segment_volume_ensemble
from colearn_pipeline.inference.sr import build_sr
from colearn_pipeline.inference.study import load_study
from colearn_pipeline.inference.summary import summarise_labels, summary_table

logger = logging.getLogger(__name__)

#: Output file suffixes, per output.
OUTPUT_SUFFIXES = {"labels": ".nii.gz", "seg": ".seg.dcm", "sr": ".sr.dcm", "summary_json": ".summary.json",
                   "summary_csv": ".summary.csv", "uncertainty": ".uncertainty.nii.gz",
                   "disagreement": ".disagreement.nii.gz"}
#: The RT Structure Set's suffix, written when ``predict.formats`` names ``rtstruct``.
RTSTRUCT_SUFFIX = ".rtstruct.dcm"
#: What ``predict.formats`` may name; the SEG is always written (the default).
DICOM_FORMATS = ("seg", "rtstruct")
#: Default of ``predict.uncertainty.low_confidence_entropy`` (conf/base/parameters_predict.yml).
LOW_CONFIDENCE_ENTROPY = 0.5
#: Manifest columns.
MANIFEST_COLUMNS = ["pseudonym", "status", "reason", "file", "series_selection", "suv_convention",
                    "ct_shape_zyx", "thorax_slices", "n_tumours", "tumour_ml", "seconds"]


def algorithm_identification(bundle: Mapping[str, Any], provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The SEG's algorithm identification: the net, its version (package + training fingerprint), the MLflow run."""
    source = str(provenance.get("source") or "")
    return {
        "name": f"colearn-pipeline {bundle['net']}",
        "version": f"{__version__} fingerprint {str(bundle.get('fingerprint', ''))[:16] or '-'}",
        "source": "colearn-pipeline",
        "parameters": {
            "net": bundle["net"],
            "mlflow_run_id": provenance.get("mlflow_run_id") or "-",
            "model_uri": source if source.startswith(("runs:/", "models:/")) else "-",
            "epochs": bundle.get("epochs", "-"),
            "input_hw": "x".join(str(v) for v in bundle["input_hw"]),
            "ensemble_members": provenance.get("members", 1),
            "tta": provenance.get("tta", "none"),
        },
    }


def _add_uncertainty(summary: dict, labels: np.ndarray, maps: Mapping[str, np.ndarray], threshold: float) -> None:
    """Each tumour component's uncertainty (same numbering as summarise_labels) and the study's count of
    low-confidence components, into ``summary``."""
    components, ids = tumour_components(labels, LABELS["tumour"])
    for tumour, extra in zip(summary["tumours"], component_uncertainty(components, ids, maps, threshold),
                             strict=True):
        tumour["uncertainty"] = extra
    summary["low_confidence_tumours"] = sum(t["uncertainty"]["low_confidence"] for t in summary["tumours"])


def segment_study(root: str, study: StudyFiles, ensemble: ModelEnsemble, params: Mapping[str, Any],
                  out_dir: str | os.PathLike) -> dict:
    """Read, segment and export one study into ``out_dir``; return its manifest row (raises on bad input)."""
    options = InferenceOptions.from_mapping(params.get("inference"), batch_size=params.get("batch_size"))
    bundle, provenance = ensemble.bundle, {**ensemble.provenance, "tta": options.tta}
    data = load_study(root, study, params)
    ct = data.ct
    predicted = segment_volume_ensemble(ensemble.models, ct.array, data.suv_ct, data.slice_index,
                                        bundle["input_hw"], options, params.get("_device", "cpu"))
    labels = predicted.labels
    summary = summarise_labels(labels, data.suv_ct, ct.spacing_xyz_mm, ct.origin_xyz_mm, ct.direction,
                               uncertainty=predicted.entropy)
    summary = {"study": data.pseudonym, "net": bundle["net"], "model": provenance.get("mlflow_run_id") or "file",
               "ensemble_members": provenance["members"], "tta": options.tta,
               "thorax_slices": [int(data.slice_index[0]), int(data.slice_index[-1])], **summary}
    threshold = float(dict(params.get("uncertainty") or {}).get("low_confidence_entropy", LOW_CONFIDENCE_ENTROPY))
    _add_uncertainty(summary, labels, predicted.uncertainty_maps(), threshold)
    seg_conf, algorithm = dict(params.get("seg") or {}), algorithm_identification(bundle, provenance)
    seg = build_seg(labels, ct.datasets, algorithm=algorithm, source_files=ct.files,
                    series_number=int(seg_conf.get("series_number", 9901)),
                    series_description=str(seg_conf.get("series_description", "colearn-pipeline segmentation")),
                    content_label=str(seg_conf.get("content_label", "COLEARN")), software_version=__version__)
    out = Path(out_dir)
    paths = {k: out / f"{data.pseudonym}{s}" for k, s in OUTPUT_SUFFIXES.items()}
    from colearn_pipeline.datasets import NiftiDataset

    NiftiDataset(str(paths["labels"])).save(ct.to_sitk(labels))
    NiftiDataset(str(paths["uncertainty"])).save(ct.to_sitk(predicted.entropy))
    NiftiDataset(str(paths["disagreement"])).save(ct.to_sitk(predicted.disagreement))
    write_seg(seg, paths["seg"])
    write_seg(study_sr(seg, ct, summary, algorithm, params), paths["sr"])
    if "rtstruct" in output_formats(params):
        paths["rtstruct"] = out / f"{data.pseudonym}{RTSTRUCT_SUFFIX}"
        write_seg(study_rtstruct(labels, ct, algorithm, params), paths["rtstruct"])
    atomic_write(paths["summary_json"], lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    table = summary_table(data.pseudonym, summary)
    atomic_write(paths["summary_csv"], lambda tmp: table.to_csv(tmp, index=False))
    return {
        "series_selection": data.selection, "suv_convention": data.suv_convention,
        "ct_shape_zyx": list(ct.shape_zyx), "thorax_slices": f"{data.slice_index[0]}-{data.slice_index[-1]}",
        "n_tumours": summary["n_tumours"], "tumour_ml": summary["tumour_ml"], "_paths": paths,
    }


def study_sr(seg, ct, summary: Mapping[str, Any], algorithm: Mapping[str, Any], params: Mapping[str, Any]):
    """The study's TID 1500 SR: the summary's tumour figures, referencing the SEG's Tumour segment."""
    sr_conf = dict(params.get("sr") or {})
    figures = {"components": summary["tumours"], "totals": summary["tumour_totals"]}
    return build_sr(seg, seg_sources(ct.datasets, ct.files), figures, tumour_segment=LABELS["tumour"],
                    geometry=(ct.spacing_xyz_mm, ct.origin_xyz_mm, ct.direction),
                    suv_type=str(params.get("suv_type", "bw")), algorithm=algorithm,
                    series_number=int(sr_conf.get("series_number", 9902)),
                    series_description=str(sr_conf.get("series_description", "colearn-pipeline PET measurements")),
                    software_version=__version__)


def study_rtstruct(labels: np.ndarray, ct, algorithm: Mapping[str, Any], params: Mapping[str, Any]):
    """The study's RT Structure Set: one ROI per class and per tumour component (``predict.rtstruct``)."""
    conf = dict(params.get("rtstruct") or {})
    return label_map_rtstruct(labels, ct.datasets, algorithm=algorithm,
                              series_number=int(conf.get("series_number", 9903)),
                              series_description=str(conf.get("series_description", "colearn-pipeline contours")),
                              label=str(conf.get("label", "COLEARN")))


def output_formats(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The DICOM outputs ``params["formats"]`` names (default ``["seg"]``; the SEG is always among them).

    Raises
    ------
    ValueError
        An unknown format, or a list without ``seg``.
    """
    formats = tuple(str(f).lower() for f in (params.get("formats") or ["seg"]))
    unknown = sorted(set(formats) - set(DICOM_FORMATS))
    if unknown or "seg" not in formats:
        raise ValueError(f"predict.formats: {list(formats)}: choose from {list(DICOM_FORMATS)}, seg always included")
    return formats


def predict_folder(root: str | os.PathLike, ensemble: ModelEnsemble, params: Mapping[str, Any],
                   out_dir: str | os.PathLike) -> tuple[list[dict], Discovery]:
    """Segment every study found under ``root`` (by tags) into ``out_dir``; never raises for bad input.

    ``ensemble`` holds one net or several (:func:`colearn_pipeline.inference.models.load_ensemble`);
    ``params`` are the ``predict`` parameters (``inference``, ``uncertainty``, ...).

    Returns
    -------
    rows : list of dict
        One per study: ``pseudonym``, ``status`` (``"ok"`` / ``"quarantined"``), ``reason``,
        ``file`` and the study's figures; ``"_paths"`` (output paths) on ok rows.
    discovery : Discovery
        What the scan found (``skipped`` files, for a message when no study is found).
    """
    root = os.fspath(root)
    output_formats(params)  # a bad list is the caller's error, not each study's
    found = discover(root, key=str(params.get("pseudonym_key") or DEFAULT_PSEUDONYM_KEY))
    rows = []
    for pseudonym in sorted(found.studies):
        study = found.studies[pseudonym]
        start = time.perf_counter()
        row: dict[str, Any] = {"pseudonym": pseudonym, "status": "quarantined", "reason": "", "file": ""}
        try:
            row.update(segment_study(root, study, ensemble, params, out_dir))
            row["status"] = "ok"
        except (DicomSeriesError, LabelMapError) as exc:
            row.update(reason=study.redact(exc.problem), file=study.redact(exc.file))
        except HeaderError as exc:  # no object can be written into the study (e.g. no StudyInstanceUID)
            row.update(reason=study.redact(f"DICOM header: {exc}"), file="-")
        except Exception as exc:  # one study's unexpected failure must not stop the others
            logger.debug("study %s failed", pseudonym, exc_info=True)
            row.update(reason=study.redact(f"unexpected {type(exc).__name__}: {exc}"), file="-")
        row["seconds"] = round(time.perf_counter() - start, 3)
        rows.append(row)
        if row["status"] == "ok":
            logger.info("predict: %s ok: slices %s, %d tumour components, %.1f s", pseudonym,
                        row["thorax_slices"], row["n_tumours"], row["seconds"])
        else:
            logger.warning("predict: %s quarantined: %s: %s", pseudonym, row["file"], row["reason"])
    return rows, found


def manifest_table(rows: list[dict]) -> pd.DataFrame:
    """The manifest as a table (:data:`MANIFEST_COLUMNS`, private keys dropped)."""
    clean = [{c: (str(r[c]) if isinstance(r.get(c), list) else r.get(c)) for c in MANIFEST_COLUMNS} for r in rows]
    return pd.DataFrame(clean, columns=MANIFEST_COLUMNS).replace({np.nan: None})
