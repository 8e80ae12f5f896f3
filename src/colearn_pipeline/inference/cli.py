"""``colearn-predict``: segment PET-CT studies from their DICOM files with a trained net.

``colearn-predict STUDY_DIR_OR_FILES --model MODEL [MODEL ...] --out OUT_DIR`` reads every study
found in the folder (or the files) by its tags, segments every thorax slice and writes, per study
named by its pseudonym, the labels on the CT grid (NIfTI), a DICOM SEG, a DICOM SR of the tumours'
PET figures (``--rtstruct``: also an RT Structure Set), the uncertainty maps (NIfTI) and a JSON +
CSV summary. MODEL is a bundle file or an MLflow model URI (``runs:/<id>/model``,
``models:/<name>/<version>``); several MODELs are an ensemble whose softmax outputs are averaged,
``--tta flip`` adds flipped views of every slice.
The exit status is 0 when every study was segmented, 1 when a study was set aside (the reason is
printed), 2 for a bad model or bad arguments.

``colearn-predict --study data/05_model_input/<p>.npz --model M --out pred.nii.gz`` still maps
one model-input NPZ's slices back onto its CT grid.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from colearn_pipeline.inference.segment import TTA_VIEWS

#: The ``predict`` section used when ``--params`` is not given: equal to conf/base/parameters_predict.yml
#: (tests/test_cli_defaults.py compares them), so the command works from any folder.
BUILTIN_PARAMS: dict = {
    "studies_dir": "data/01_raw/predict/dicom",
    "model": "data/06_models/colearn/model.pt",
    "pseudonym_key": "colearn-pipeline",
    "staging_dir": "data/07_model_output/predict",
    "device": "auto",
    "batch_size": 8,
    "series_validation": {"orientation_tolerance": 1.0e-4, "duplicate_tolerance_mm": 1.0e-3,
                          "spacing_relative_tolerance": 0.01, "inplane_tolerance_mm": 0.01},
    "suv_type": "bw",
    "pet_interpolator": "linear",
    "pet_outside_value": 0.0,
    "thorax": {"margin_mm": 20.0, "lungs": {}},
    "seg": {"series_number": 9901, "series_description": "colearn-pipeline segmentation", "content_label": "COLEARN"},
    "formats": ["seg"],
    "rtstruct": {"series_number": 9903, "series_description": "colearn-pipeline contours", "label": "COLEARN"},
    "sr": {"series_number": 9902, "series_description": "colearn-pipeline PET measurements"},
    "inference": {"engine": "onnxruntime", "channels_last": True, "bf16": False, "tta": "none", "chunk_slices": 32,
                  "num_threads": None},
    "uncertainty": {"low_confidence_entropy": 0.5},
}


def read_params(path: str | os.PathLike | None) -> dict:
    """The ``predict`` section of a parameters YAML file, or :data:`BUILTIN_PARAMS` when ``path`` is None."""
    if path is None:
        return copy.deepcopy(BUILTIN_PARAMS)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameters file {path} not found (--params needs a YAML file with a 'predict' block)")
    return dict((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("predict") or {})


def _input_root(inputs: Sequence[str], stack) -> str:
    """One folder to discover: the folder given, or a temporary folder linking the files given."""
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        return inputs[0]
    missing = [p for p in inputs if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"input {missing[0]} is neither a folder nor a file")
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="colearn-predict-"))
    for i, p in enumerate(inputs):
        os.symlink(os.path.abspath(p), os.path.join(tmp, f"{i:05d}_{Path(p).name}"))
    return tmp


def _predict_npz(args, ensemble) -> int:
    from colearn_pipeline.inference.segment import (
        labels_to_ct_volume,
        predict_model_input,
        write_label_nifti,
    )

    if len(ensemble.models) != 1:
        print("colearn-predict: error: --study takes one --model", file=sys.stderr)
        return 2
    model, bundle = ensemble.models[0], ensemble.bundle
    with np.load(args.study, allow_pickle=False) as npz:
        study = {k: npz[k] for k in npz.files}
    labels = predict_model_input(model, study, args._device, args.batch_size)
    out = write_label_nifti(labels_to_ct_volume(labels, study), study, args.out)
    counts = np.bincount(labels.ravel(), minlength=4)
    print(f"{out}: {bundle['net']} labels on the CT grid {tuple(int(v) for v in study['ct_shape_zyx'])};"
          f" predicted pixels per class {counts.tolist()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="colearn-predict", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="STUDY_DIR_OR_FILES", help="a study folder (any layout) or DICOM files")
    p.add_argument("--model", required=True, nargs="+",
                   help="bundle file, runs:/<id>/model or models:/<name>/<version>; several: an ensemble")
    p.add_argument("--out", required=True, help="output folder (or the output NIfTI with --study)")
    p.add_argument("--study", help="a model-input NPZ instead of DICOM (labels of its slices only)")
    p.add_argument("--params", help="parameters YAML with a 'predict' section (default: built-in, as conf/base)")
    p.add_argument("--device", default=None, help="auto (CUDA if available), cpu, cuda:0, ... (default: params)")
    p.add_argument("--batch-size", type=int, default=None, help="slices per forward pass (default: params)")
    p.add_argument("--rtstruct", action="store_true",
                   help="also write an RT Structure Set (one ROI per class and per tumour component) beside the SEG")
    p.add_argument("--tta", choices=sorted(TTA_VIEWS), default=None,
                   help="test-time augmentation: flip averages the flipped views of each slice (default: params)")
    return p


def _report(rows: list[dict], out: Path) -> None:
    for r in rows:
        if r["status"] == "ok":
            paths = r["_paths"]
            dicom = "".join(f"\n  {name:<9}{paths[key]}" for key, name in (("seg", "SEG:"), ("sr", "SR:"),
                                                                                ("rtstruct", "RTSTRUCT:"))
                            if key in paths)
            print(f"{r['pseudonym']}: thorax slices {r['thorax_slices']}, {r['n_tumours']} tumour component(s), "
                  f"{r['tumour_ml']} mL{dicom}\n  summary: {paths['summary_json']} "
                  f"({paths['summary_csv'].name})\n  labels:  {paths['labels']}\n"
                  f"  uncertainty: {paths['uncertainty']} ({paths['disagreement'].name})")
        else:
            print(f"colearn-predict: {r['pseudonym']}: {r['file']}: {r['reason']}", file=sys.stderr)
    print(f"manifest: {out / 'manifest.csv'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    import contextlib
    import logging

    from colearn_pipeline.datasets._atomic import atomic_write
    from colearn_pipeline.inference.cohort import manifest_table, predict_folder
    from colearn_pipeline.inference.models import ModelLoadError, load_ensemble
    from colearn_pipeline.inference.segment import (
        InferenceOptions,
        apply_threads,
        prepare_model,
    )
    from colearn_pipeline.training.loop import resolve_device

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.inputs and not args.study:
        print("colearn-predict: error: give a study folder or DICOM files (or --study NPZ)", file=sys.stderr)
        return 2
    try:
        params = read_params(args.params)
        options = InferenceOptions.from_mapping(params.get("inference"), tta=args.tta,
                                                batch_size=args.batch_size or params.get("batch_size"))
        apply_threads(options)
        device = resolve_device(args.device or params.get("device", "auto"))
        ensemble = load_ensemble(args.model, device, lambda m, b: prepare_model(m, options, b["input_hw"], device))
    except (FileNotFoundError, ModelLoadError, ValueError, RuntimeError, KeyError) as exc:
        print(f"colearn-predict: error: {exc}", file=sys.stderr)
        return 2
    args._device = device
    args.batch_size = options.batch_size
    if args.study:
        return _predict_npz(args, ensemble)
    formats = list(params.get("formats") or ["seg"])
    inference = {**dict(params.get("inference") or {}), "tta": options.tta}
    params = {**params, "batch_size": args.batch_size, "inference": inference, "_device": device,
              "formats": formats + ["rtstruct"] if args.rtstruct and "rtstruct" not in formats else formats}
    out = Path(args.out)
    with contextlib.ExitStack() as stack:
        try:
            root = _input_root(args.inputs, stack)
        except FileNotFoundError as exc:
            print(f"colearn-predict: error: {exc}", file=sys.stderr)
            return 2
        try:
            rows, found = predict_folder(root, ensemble, params, out)
        except ValueError as exc:  # a bad predict.formats
            print(f"colearn-predict: error: {exc}", file=sys.stderr)
            return 2
    if not rows:
        why = f"; {len(found.skipped)} files skipped, e.g. {found.skipped[0][1]}" if found.skipped else ""
        print(f"colearn-predict: error: no DICOM study found in the input{why}", file=sys.stderr)
        return 1
    table = manifest_table(rows)
    atomic_write(out / "manifest.csv", lambda tmp: table.to_csv(tmp, index=False))
    _report(rows, out)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
