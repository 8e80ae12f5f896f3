"""Time colearn-predict on one study, DICOM folder -> SEG, stage by stage, on the CPU.

For one study folder (e.g. a paper-size phantom study) the script times, in one process: discovery,
reading the CT and PET series, SUV, PET -> CT resampling, the thorax extent (lungs), the model
input (resize to the net's input, standardise), the net(s) over every thorax slice, labels and
uncertainty back onto the CT grid, the summary, building and writing the DICOM SEG and writing the
NIfTI outputs. Each stage is printed in wall seconds, as a ratio to reading the CT series alone
(measured in the same run: the figure to compare on a shared machine) and in CPU seconds of this
process; the load average before and after, and the peak resident memory (``getrusage``).

``--old`` also times the net stage (first member) as it ran before the speed work (``predict_labels``:
PyTorch, autograd on, contiguous memory format, argmax of the logits) on the same input, and
``--torch`` with the torch engine (inference mode, channels_last), each with the labels' agreement
with the configured engine (``predict.inference.engine``, ``--engine``).
``--bf16-slices N`` times bfloat16 autocast on N slices against float32 and prints the agreement
of the argmax labels; ``--compile-slices N`` does the same for ``torch.compile``.

Usage::

    .venv/bin/python -m colearn_pipeline.phantom.cli --size paper --studies 1 /tmp/paper
    .venv/bin/python benchmarks/predict.py /tmp/paper/dicom --width 64 --old          # paper width
    .venv/bin/python benchmarks/predict.py /tmp/paper/dicom --width 8 --old
    .venv/bin/python benchmarks/predict.py /tmp/paper/dicom --width 64 --members 3 --tta flip

Without ``--model`` the nets are untrained co-learning nets of ``--width`` (depth 4, ``--input``
256x256, the paper's), one seed per member: the time does not depend on the weights.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from colearn_pipeline.dicom.discovery import discover, select_ct_pet
from colearn_pipeline.dicom.grid import resample_to_reference
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.evaluation.metrics import predict_labels
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.inference.cohort import algorithm_identification
from colearn_pipeline.inference.ensemble import (
    combine_samples,
    component_uncertainty,
    tumour_components,
)
from colearn_pipeline.inference.models import load_ensemble
from colearn_pipeline.inference.seg import build_seg, write_seg
from colearn_pipeline.inference.segment import (
    ENGINES,
    TTA_VIEWS,
    InferenceOptions,
    model_input,
    prepare_model,
    softmax_samples,
)
from colearn_pipeline.inference.study import thorax_slices
from colearn_pipeline.inference.summary import summarise_labels
from colearn_pipeline.models import build_model
from colearn_pipeline.suv import suv_conversion, to_suv
from colearn_pipeline.training.inputs import resize_labels_nearest
from colearn_pipeline.training.loop import MODEL_FORMAT, load_model

REPO = Path(__file__).resolve().parents[1]
KIB_PER_GIB = 2**20


class Stages:
    """Wall and CPU seconds of named stages."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], object]):
        """Call ``fn`` and record its wall and process CPU seconds under ``name``; return its result."""
        cpu, start = time.process_time(), time.perf_counter()
        out = fn()
        self.wall[name] = time.perf_counter() - start
        self.cpu[name] = time.process_time() - cpu
        return out


def untrained_bundles(width: int, input_size: int, members: int) -> list[dict]:
    """Bundles of untrained co-learning nets (depth 4), one seed per member."""
    bundles = []
    for seed in range(members):
        torch.manual_seed(seed)
        net = build_model("colearn", width=width)
        bundles.append({"format": MODEL_FORMAT, "net": "colearn", "model_kwargs": {"width": width},
                        "state_dict": net.state_dict(), "input_hw": [input_size, input_size], "epochs": 0})
    return bundles


def load_nets(args, options: InferenceOptions, tmp: str):
    """The ensemble of ``--model`` or of untrained nets (saved to ``tmp`` and loaded as a user's would be)."""
    refs = args.model
    if not refs:
        refs = []
        for i, bundle in enumerate(untrained_bundles(args.width, args.input, args.members)):
            torch.save(bundle, Path(tmp) / f"member{i}.pt")
            refs.append(str(Path(tmp) / f"member{i}.pt"))
    return load_ensemble(refs, "cpu", lambda m, b: prepare_model(m, options, b["input_hw"]))


def read_study(stages: Stages, study_dir: str, params: dict):
    """Discovery, reading, SUV, resampling and thorax, each timed; returns (pseudonym, ct, suv_ct, index, ref)."""
    found = stages.run("discovery", lambda: discover(study_dir, key=params["pseudonym_key"]))
    (pseudonym, study), = found.studies.items()
    ct_info, pet_info, _ = select_ct_pet(study, study_dir)
    tol = dict(params.get("series_validation") or {})
    start = time.perf_counter()
    read_series(ct_info.files, pseudonym, root=study_dir, **tol)
    reference = time.perf_counter() - start
    ct, pet = stages.run("read CT + PET series", lambda: (
        read_series(ct_info.files, pseudonym, root=study_dir, **tol),
        read_series(pet_info.files, pseudonym, root=study_dir, **tol)))
    suv = stages.run("SUV", lambda: to_suv(pet.array, suv_conversion(pet.datasets, suv_type=params["suv_type"],
                                                                       source=pseudonym)))
    suv_ct = stages.run("resample PET -> CT grid", lambda: resample_to_reference(
        pet.to_sitk(suv), ct.to_sitk(), params["pet_interpolator"], float(params["pet_outside_value"])))
    import SimpleITK as sitk

    suv_ct = sitk.GetArrayFromImage(suv_ct).astype(np.float32)
    index = stages.run("thorax extent (lungs)", lambda: thorax_slices(
        ct.array, ct.spacing_xyz_mm, margin_mm=float(params["thorax"]["margin_mm"]),
        superior_at_high_z=bool(ct.direction[8] >= 0), lung_params=params["thorax"].get("lungs")))
    return pseudonym, ct, suv_ct, index, reference


def run_nets(stages: Stages, ensemble, x: np.ndarray, options: InferenceOptions):
    """The net stage in chunks, as segment_volume_ensemble runs it; returns the combined output."""
    warm = x[: min(len(x), options.batch_size)]
    softmax_samples(ensemble.models, warm, options)  # oneDNN builds its kernels on the first call
    chunk = options.chunk_slices

    def net():
        parts = [combine_samples(softmax_samples(ensemble.models, x[i : i + chunk], options))
                 for i in range(0, len(x), chunk)]
        return (np.concatenate([p.labels for p in parts]), np.concatenate([p.entropy for p in parts]),
                np.concatenate([p.disagreement for p in parts]))

    views = len(ensemble.models) * len(TTA_VIEWS[options.tta])
    return stages.run(f"net(s): {len(x)} slices x {views} samples", net)


def old_net(stages: Stages, bundle: dict, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The net stage before the speed work (first member, PyTorch, contiguous float32, autograd on)."""
    model = load_model(bundle, "cpu")
    predict_labels(model, x[:batch_size], batch_size)
    return stages.run("net, old path (autograd on, contiguous)", lambda: predict_labels(model, x, batch_size))


def torch_net(stages: Stages, model: torch.nn.Module, x: np.ndarray, options: InferenceOptions) -> np.ndarray:
    """The net stage (first member) with the torch engine: inference mode, channels_last."""
    softmax_samples([model], x[: options.batch_size], options)
    return stages.run("net, torch engine (channels_last)",
                      lambda: combine_samples(softmax_samples([model], x, options)).labels)


def variant_check(name: str, model: torch.nn.Module, x: np.ndarray, options: InferenceOptions,
                  transform: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                  variant: InferenceOptions | None = None) -> str:
    """Seconds per slice of float32 and of a variant on ``x``, and the agreement of their argmax labels."""
    variant_model = transform(copy.deepcopy(model)) if transform else model
    variant = variant or options
    times, labels = [], []
    for m, o in ((model, options), (variant_model, variant)):
        start = time.perf_counter()
        softmax_samples([m], x, o)  # warm-up on the same shapes (for torch.compile: the compilation)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        labels.append(softmax_samples([m], x, o)[0].argmax(1))
        times.append((time.perf_counter() - start) / len(x))
        times.append(warm)
    agree = float((labels[0] == labels[1]).mean())
    return (f"{name} on {len(x)} slices: float32 {times[0]:.3f} s/slice, {name} {times[2]:.3f} s/slice "
            f"({times[2] / times[0]:.2f}x; first call {times[3]:.1f} s); argmax agreement {agree:.5f}")


def write_outputs(stages: Stages, ct, labels, maps, ensemble, tmp: str, pseudonym: str) -> float:
    """Build and write the SEG, write the NIfTI outputs; returns the SEG's size in MB."""
    from colearn_pipeline.datasets import NiftiDataset

    seg = stages.run("build SEG", lambda: build_seg(
        labels, ct.datasets, algorithm=algorithm_identification(ensemble.bundle, ensemble.provenance)))
    path = stages.run("write SEG", lambda: write_seg(seg, Path(tmp) / f"{pseudonym}.seg.dcm"))

    def nifti():
        for name, volume in (("labels", labels), *maps.items()):
            NiftiDataset(str(Path(tmp) / f"{pseudonym}.{name}.nii.gz")).save(ct.to_sitk(volume))

    stages.run("write NIfTI (labels, 2 uncertainty maps)", nifti)
    return path.stat().st_size / 1e6


def report(stages: Stages, reference: float, header: list[str]) -> None:
    """Print the header lines and every stage: wall seconds, ratio to the reference, CPU seconds."""
    for line in header:
        print(line)
    print(f"reference: read the CT series alone {reference:.2f} s")
    print(f"  {'stage':<44s} {'wall s':>8s} {'x ref':>7s} {'CPU s':>7s}")
    for name, wall in stages.wall.items():
        print(f"  {name:<44s} {wall:8.2f} {wall / reference:7.1f} {stages.cpu[name]:7.1f}")
    compared = [k for k in stages.wall if k.startswith("net, ")]  # the net stage by other paths
    main_stages = [k for k in stages.wall if k not in compared]
    wall = sum(stages.wall[k] for k in main_stages)
    cpu = sum(stages.cpu[k] for k in main_stages)
    print(f"  {'total (DICOM folder -> SEG)':<44s} {wall:8.2f} {wall / reference:7.1f} {cpu:7.1f}")
    net = next(k for k in main_stages if k.startswith("net(s)"))
    for name in compared:
        other_wall = wall - stages.wall[net] + stages.wall[name]
        other_cpu = cpu - stages.cpu[net] + stages.cpu[name]
        print(f"  {'total with the ' + name.removeprefix('net, '):<44s} {other_wall:8.2f} "
              f"{other_wall / reference:7.1f} {other_cpu:7.1f}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study_dir")
    p.add_argument("--model", nargs="+", help="bundle files or MLflow URIs (default: untrained nets)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--input", type=int, default=256, help="input rows and columns of the untrained nets")
    p.add_argument("--members", type=int, default=1, help="untrained nets in the ensemble")
    p.add_argument("--tta", choices=sorted(TTA_VIEWS), default="none")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--engine", choices=ENGINES, default=None, help="inference engine (default: params)")
    p.add_argument("--old", action="store_true", help="also time the net stage as it ran before the speed work")
    p.add_argument("--torch", action="store_true", help="also time the net stage with the torch engine")
    p.add_argument("--slices", type=int, default=0,
                   help="segment only the first N thorax slices (to time a large ensemble; 0: all)")
    p.add_argument("--bf16-slices", type=int, default=0, help="time bf16 autocast on this many slices")
    p.add_argument("--compile-slices", type=int, default=0, help="time torch.compile on this many slices")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    params = yaml.safe_load((REPO / "conf/base/parameters_predict.yml").read_text())["predict"]
    options = InferenceOptions.from_mapping(params["inference"], tta=args.tta, batch_size=args.batch_size,
                                            channels_last=not args.no_channels_last, engine=args.engine)
    torch_options = dataclasses.replace(options, engine="torch")
    stages = Stages()
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        ensemble = load_nets(args, options, tmp)
        pseudonym, ct, suv_ct, index, reference = read_study(stages, args.study_dir, params)
        thorax = index.size
        index = index[: args.slices] if args.slices else index
        input_hw = ensemble.bundle["input_hw"]
        x = stages.run("model input (resize, standardise)", lambda: model_input(ct.array, suv_ct, index, input_hw))
        small, entropy, disagreement = run_nets(stages, ensemble, x, options)
        rows, cols = ct.shape_zyx[1:]
        labels, maps = np.zeros(ct.shape_zyx, np.uint8), {"uncertainty": np.zeros(ct.shape_zyx, np.float32),
                                                          "disagreement": np.zeros(ct.shape_zyx, np.float32)}

        def to_ct_grid():
            labels[index] = resize_labels_nearest(small, rows, cols)
            maps["uncertainty"][index] = resize_labels_nearest(entropy, rows, cols)
            maps["disagreement"][index] = resize_labels_nearest(disagreement, rows, cols)

        stages.run("labels + uncertainty -> CT grid", to_ct_grid)

        def summary():
            s = summarise_labels(labels, suv_ct, ct.spacing_xyz_mm, ct.origin_xyz_mm, ct.direction)
            components, ids = tumour_components(labels, LABELS["tumour"])
            return s, component_uncertainty(components, ids, {"entropy": maps["uncertainty"],
                                                              "disagreement": maps["disagreement"]}, 0.5)

        n_tumours = len(stages.run("summary (components, SUV, uncertainty)", summary)[1])
        size_mb = write_outputs(stages, ct, labels, maps, ensemble, tmp, pseudonym)
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_GIB
        extra = []
        net = prepare_model(load_model(ensemble.bundle, "cpu"), torch_options)
        same = len(ensemble.models) == 1 and options.tta == "none"
        for flag, name, fn in ((args.old, "old path", lambda: old_net(stages, ensemble.bundle, x, args.batch_size)),
                               (args.torch, "torch engine", lambda: torch_net(stages, net, x, torch_options))):
            if flag:
                other = fn()
                if same:
                    extra.append(f"{name} vs {options.engine}: argmax agreement {float((other == small).mean()):.5f}")
        if args.bf16_slices:
            extra.append(variant_check("bf16 autocast", net, x[: args.bf16_slices], torch_options,
                                       variant=dataclasses.replace(torch_options, bf16=True)))
        if args.compile_slices:
            extra.append(variant_check("torch.compile", net, x[: args.compile_slices], torch_options,
                                       transform=torch.compile))
    bundle = ensemble.bundle
    header = [
        (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
         f"threads {torch.get_num_threads()}; load average (1 min) before {load_before[0]:.1f}, "
         f"after {os.getloadavg()[0]:.1f}"),
        (f"study {pseudonym}: CT {ct.shape_zyx}, {index.size} of {thorax} thorax slices segmented, "
         f"{n_tumours} tumour components; {len(ensemble.models)} x {bundle['net']} width "
         f"{bundle['model_kwargs'].get('width')} input {bundle['input_hw']}, tta {options.tta}, "
         f"batch {options.batch_size}, channels_last {options.channels_last}; SEG {size_mb:.1f} MB"),
        f"peak resident memory (getrusage, new path) {peak_gib:.2f} GiB",
    ]
    report(stages, reference, header)
    for line in extra:
        print(line)


if __name__ == "__main__":
    main()
