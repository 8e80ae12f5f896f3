"""Time colearn-predict's stages on one study (e.g. a paper-size phantom study) on the CPU.

Prints, for one study folder: discovery, DICOM read + SUV + PET->CT resampling, thorax extent
(lung segmentation), the net over every thorax slice, the DICOM SEG, the writes; and each stage's
ratio to reading the CT series alone (measured in the same run: the figure to compare on a
shared machine). Renders the SEG over its CT (from the SEG's own frames) to ``--png``.

Usage::

    .venv/bin/python -m colearn_pipeline.phantom.cli --size paper --studies 1 /tmp/x
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/predict.py /tmp/x/dicom --width 8 --png /tmp/seg_overlay.png

Without ``--model`` a co-learning net of ``--width`` (depth 3, 64x64 input) is trained for
``--epochs`` on the true labels of another phantom cohort (``--train-on``, e.g.
``colearn-phantom --size demo --studies 2 --seed 2 /tmp/train``) or else on synthetic slices
(timing does not depend on the weights; the overlay does).
"""

from __future__ import annotations

import sys
import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from colearn_pipeline.dicom.discovery import discover
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.inference.cohort import algorithm_identification
from colearn_pipeline.inference.figure import seg_overlay_png
from colearn_pipeline.inference.models import load_bundle
from colearn_pipeline.inference.seg import build_seg, write_seg
from colearn_pipeline.inference.segment import segment_volume
from colearn_pipeline.inference.study import load_study
from colearn_pipeline.training import assemble_slices, load_model, train_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic-slice fixture lives with the tests
from synthetic_studies import synthetic_study  # noqa: E402


def tiny_net(width: int, epochs: int) -> dict:
    names = [f"study-{i:010x}" for i in range(4)]
    data = assemble_slices({n: synthetic_study(n, n_slices=6, size=64, seed=i) for i, n in enumerate(names)}, names)
    bundle, _ = train_model("colearn", {"width": width, "depth": 3}, data,
                            dict(seed=0, epochs=epochs, batch_size=6, learning_rate=0.05, l2_lambda=0.0, progress=False))
    return bundle


def phantom_net(root: str, width: int, epochs: int, size: int = 64) -> dict:
    """A net trained on other phantom studies' true labels (``colearn-phantom`` output at ``root``)."""
    import numpy as np
    import SimpleITK as sitk

    from colearn_pipeline.dicom.grid import resize_slices
    from colearn_pipeline.training.inputs import network_input, resize_labels_nearest

    params = yaml.safe_load((REPO / "conf/base/parameters_predict.yml").read_text())["predict"]
    found = discover(Path(root) / "dicom")
    xs, ys = [], []
    for pseudonym, study in sorted(found.studies.items()):
        data = load_study(Path(root) / "dicom", study, params)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(root) / "phantom_truth" / pseudonym / "labels.nii.gz")))
        idx = data.slice_index
        xs.append(network_input(resize_slices(data.ct.array[idx], (size, size)),
                                resize_slices(data.suv_ct[idx], (size, size))))
        ys.append(resize_labels_nearest(truth[idx].astype(np.uint8), size, size))
    train = {"x": np.concatenate(xs), "y": np.concatenate(ys)}
    bundle, history = train_model("colearn", {"width": width, "depth": 3}, train,
                                  dict(seed=0, epochs=epochs, batch_size=8, learning_rate=0.05, l2_lambda=0.0,
                                       progress=False))
    print(f"trained on {len(train['x'])} slices of {len(xs)} phantom studies: "
          f"train accuracy {history[-1]['train_accuracy']:.3f} after {epochs} epochs")
    return bundle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study_dir")
    p.add_argument("--model", help="bundle file or MLflow URI (default: train a small net)")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--train-on", help="a colearn-phantom cohort (other studies) to train the net on its true labels")
    p.add_argument("--png", default="/tmp/seg_overlay.png")
    args = p.parse_args()
    params = yaml.safe_load((REPO / "conf/base/parameters_predict.yml").read_text())["predict"]
    if args.model:
        bundle = load_bundle(args.model)[0]
    elif args.train_on:
        bundle = phantom_net(args.train_on, args.width, args.epochs)
    else:
        bundle = tiny_net(args.width, args.epochs)
    model = load_model(bundle, "cpu")
    t = {}
    start = time.perf_counter()
    found = discover(args.study_dir)
    t["discover"] = time.perf_counter() - start
    (pseudonym, study), = found.studies.items()
    ct_files = max((s for s in study.series.values() if s.modality == "CT"), key=lambda s: len(s.files)).files
    start = time.perf_counter()
    read_series(ct_files, pseudonym)
    reference = time.perf_counter() - start
    start = time.perf_counter()
    data = load_study(args.study_dir, study, {**params, "thorax": {"margin_mm": params["thorax"]["margin_mm"]}})
    t["read + SUV + resample + thorax"] = time.perf_counter() - start
    start = time.perf_counter()
    labels = segment_volume(model, data.ct.array, data.suv_ct, data.slice_index, bundle["input_hw"],
                            batch_size=8, device="cpu")
    t[f"net over {data.slice_index.size} thorax slices"] = time.perf_counter() - start
    start = time.perf_counter()
    seg = build_seg(labels, data.ct.datasets, algorithm=algorithm_identification(bundle, {"source": "benchmark"}))
    t["build SEG"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = write_seg(seg, Path(tmp) / f"{pseudonym}.seg.dcm")
        t["write SEG"] = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        png, z = seg_overlay_png(path, data.ct.array, data.ct.datasets, args.png)
    total = sum(t.values())
    print(f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, load {os.getloadavg()[0]:.1f}")
    print(f"study {pseudonym}: CT {data.ct.shape_zyx}, net {bundle['net']} width {bundle['model_kwargs'].get('width')}"
          f" input {bundle['input_hw']}; SEG {len(seg.PerFrameFunctionalGroupsSequence)} frames, {size_mb:.1f} MB")
    print(f"reference: read the CT series alone {reference:.2f} s")
    for stage, seconds in t.items():
        print(f"  {stage:<40s} {seconds:7.2f} s   {seconds / reference:6.2f} x reference")
    print(f"  {'total':<40s} {total:7.2f} s   {total / reference:6.2f} x reference")
    print(f"overlay: {png} (CT slice {z})")


if __name__ == "__main__":
    main()
