"""Benchmark of the ground truth (lungs, mediastinum, tumours) against an earlier commit's code.

Prints, in one run, on the same phantom studies (paper size by default) and one core:

* seconds per function (``segment_lungs``, ``segment_mediastinum``, ``segment_tumours`` and
  ``derive_labels``, the whole ground truth; best of ``--repeats``) for the reference commit's
  code and for this checkout's, and the ratio new / old: CPU seconds of the process (one thread,
  so one core's time, and little affected by other processes on a shared machine) and wall
  seconds;
* the peak memory each function allocates (``tracemalloc``, which numpy reports to) and each
  worker's peak resident memory (the study's arrays included);
* the Dice of every class of the new output against the old, and of each against the phantom's
  truth labels.

The reference code is taken from git (``git archive <commit> src``) into a temporary folder; each
implementation runs in its own subprocess with its own ``PYTHONPATH``, ``OMP_NUM_THREADS=1`` and
one SimpleITK thread. The phantom cohort is written to a temporary folder unless ``--cohort`` names
one.

Usage::

    .venv/bin/python benchmarks/groundtruth.py                          # 2 paper-size studies vs e2589bd
    .venv/bin/python benchmarks/groundtruth.py --studies 1 --size demo --repeats 1
    .venv/bin/python benchmarks/groundtruth.py --cohort /tmp/gt-paper --old e2589bd

Measured (2026-11-25, 2 paper-size studies 86 and 92 x 512 x 512, seed 20190523, shared 2-core
machine at load 9, CPU seconds of one thread, mean): ``segment_lungs`` 3.91 -> 0.54 s (0.14x),
``segment_mediastinum`` 2.16 -> 1.77 s (0.82x, through the shared morphology helpers only),
``segment_tumours`` 0.02 s both, ``derive_labels`` 7.00 -> 2.43 s (0.35x); tracemalloc peak of
``segment_lungs`` 602-644 -> 136-166 MiB; every class's Dice new vs old 1.0000 (identical masks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("lung", "mediastinum", "tumour")
FUNCTIONS = ("segment_lungs", "segment_mediastinum", "segment_tumours", "derive_labels")

#: Runs inside each implementation's subprocess: times and masks of every study.
_WORKER = r"""
import json, resource, sys, time, tracemalloc
from pathlib import Path
import numpy as np
import SimpleITK as sitk
sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
import colearn_pipeline
from colearn_pipeline.groundtruth.labels import LABELS
from colearn_pipeline.groundtruth.lungs import segment_lungs
from colearn_pipeline.groundtruth.mediastinum import segment_mediastinum
from colearn_pipeline.groundtruth.pipeline import derive_labels
from colearn_pipeline.groundtruth.tumours import segment_tumours

inputs, out, repeats = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
assert Path(colearn_pipeline.__file__).is_relative_to(Path(sys.argv[4]).resolve()), colearn_pipeline.__file__

def run_all(ct, suv, seeds, sp):
    lungs, info = segment_lungs(ct, sp, return_info=True)
    med = segment_mediastinum(ct, lungs, sp, airway_mask=info["airway_mask"])
    tum, _ = segment_tumours(suv, seeds, sp)
    return lungs, med, tum

for path in sorted(inputs.glob("*.npz")):
    d = np.load(path)
    ct, suv, seeds, sp = d["ct"], d["suv"], [tuple(s) for s in d["seeds"]], tuple(float(v) for v in d["spacing"])
    lungs, med, tum = run_all(ct, suv, seeds, sp)
    airway = segment_lungs(ct, sp, return_info=True)[1]["airway_mask"]
    calls = {
        "segment_lungs": lambda: segment_lungs(ct, sp, return_info=True),
        "segment_mediastinum": lambda: segment_mediastinum(ct, lungs, sp, airway_mask=airway),
        "segment_tumours": lambda: segment_tumours(suv, seeds, sp),
        "derive_labels": lambda: derive_labels(ct, suv, seeds, sp),
    }
    seconds, wall, peak_mib = {}, {}, {}
    for name, call in calls.items():
        seconds[name] = wall[name] = float("inf")
        for _ in range(repeats):
            start, start_wall = time.process_time(), time.perf_counter()
            call()
            seconds[name] = min(seconds[name], time.process_time() - start)
            wall[name] = min(wall[name], time.perf_counter() - start_wall)
        tracemalloc.start()
        call()
        peak_mib[name] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    labels = derive_labels(ct, suv, seeds, sp)[0]
    np.savez_compressed(out / path.name, lung=lungs, mediastinum=med, tumour=tum, labels=labels)
    print(json.dumps({"study": path.stem, "shape": list(ct.shape), "seconds": seconds, "wall": wall, "peak_mib": peak_mib,
                      "lung_value": LABELS["lung"], "mediastinum_value": LABELS["mediastinum"],
                      "tumour_value": LABELS["tumour"]}), flush=True)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"peak_rss_mib": rss}), flush=True)
"""


def write_inputs(raw: Path, folder: Path, max_studies: int | None) -> int:
    """CT, SUV on the CT grid, report seeds and truth labels of every phantom study, as ``.npz``."""
    import SimpleITK as sitk

    from colearn_pipeline.dicom import resample_to_reference
    from colearn_pipeline.groundtruth.phantom_qa import (
        find_ct_studies, read_ct, report_seeds_zyx, truth_folders,
    )

    reports = {}
    for path in sorted((raw / "reports").glob("*.json")):
        report = json.loads(path.read_text())
        reports[report["study_instance_uid"]] = report
    truths = truth_folders(raw)
    n = 0
    for uid, study in sorted(find_ct_studies(raw / "dicom").items()):
        if uid not in reports or uid not in truths or (max_studies is not None and n >= max_studies):
            continue
        ct = read_ct(study, raw / "dicom")
        truth_dir = truths[uid]
        truth = resample_to_reference(sitk.ReadImage(str(truth_dir / "labels.nii.gz")), ct, "nearest")
        suv = resample_to_reference(sitk.Cast(sitk.ReadImage(str(truth_dir / "suv.nii.gz")), sitk.sitkFloat32), ct)
        np.savez(folder / f"{truth_dir.name}.npz", ct=sitk.GetArrayFromImage(ct), suv=sitk.GetArrayFromImage(suv),
                 truth=sitk.GetArrayFromImage(truth).astype(np.uint8), seeds=np.array(report_seeds_zyx(reports[uid], ct)),
                 spacing=np.array(ct.GetSpacing()))
        n += 1
    return n


def run_worker(src: Path, inputs: Path, out: Path, repeats: int) -> tuple[list[dict], float]:
    """Run :data:`_WORKER` with ``src`` first on the path; return its per-study rows and peak RSS."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _WORKER, str(inputs), str(out), str(repeats), str(src)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker on {src} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [r for r in rows if "study" in r], rows[-1]["peak_rss_mib"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", type=Path, help="phantom raw folder (dicom/, reports/, phantom_truth/)")
    parser.add_argument("--studies", type=int, default=2, help="phantom studies to generate / use")
    parser.add_argument("--size", default="paper", help="phantom size when generating: tiny, demo or paper")
    parser.add_argument("--seed", type=int, default=20190523, help="phantom cohort seed")
    parser.add_argument("--old", default="e2589bd", help="git commit of the reference code")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per function (best is kept)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="colearn-bench-gt-"))
    try:
        raw = args.cohort
        if raw is None:
            from colearn_pipeline.phantom import generate_cohort

            raw = tmp / "01_raw"
            generate_cohort(raw, n_studies=args.studies, seed=args.seed, size=args.size)
        inputs = tmp / "inputs"
        inputs.mkdir()
        if write_inputs(raw, inputs, args.studies) == 0:
            print(f"no phantom study with CT, report and truth in {raw}")
            return 1
        old_root = tmp / "old"
        old_root.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive.stdout, check=True)
        results = {}
        for name, src in (("old", old_root / "src"), ("new", ROOT / "src")):
            start = time.perf_counter()
            results[name] = run_worker(src, inputs, tmp / f"out_{name}", args.repeats)
            print(f"{name}: {src} ran in {time.perf_counter() - start:.0f} s")
        report(results, inputs, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: dict, inputs: Path, tmp: Path, args) -> None:
    """Print the timing, memory and Dice tables."""
    (old_rows, old_rss), (new_rows, new_rss) = results["old"], results["new"]
    print(f"reference: {args.old}; 1 core (OMP_NUM_THREADS=1, 1 SimpleITK thread); best of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
    print(f"{'study':<18} {'shape':<12} {'function':<20} {'old cpu':>7} {'new cpu':>7} {'new/old':>7} "
          f"{'old wall':>8} {'new wall':>8} {'old MiB':>7} {'new MiB':>7}")
    for old, new in zip(old_rows, new_rows):
        for f in FUNCTIONS:
            print(f"{old['study']:<18} {'x'.join(map(str, old['shape'])):<12} {f:<20} {old['seconds'][f]:7.2f} "
                  f"{new['seconds'][f]:7.2f} {new['seconds'][f] / old['seconds'][f]:7.2f} {old['wall'][f]:8.2f} "
                  f"{new['wall'][f]:8.2f} {old['peak_mib'][f]:7.0f} {new['peak_mib'][f]:7.0f}")
    for f in FUNCTIONS:
        o = np.mean([r["seconds"][f] for r in old_rows])
        n = np.mean([r["seconds"][f] for r in new_rows])
        print(f"mean {f:<20} old {o:6.2f} s  new {n:6.2f} s  new/old {n / o:.2f}  (CPU seconds, one thread)")
    print(f"peak RSS of the worker (study arrays included): old {old_rss:.0f} MiB, new {new_rss:.0f} MiB")
    print(f"{'study':<18} {'class':<12} {'new vs old':>10} {'old vs truth':>12} {'new vs truth':>12}")
    for old in old_rows:
        truth = np.load(inputs / f"{old['study']}.npz")["truth"]
        o = np.load(tmp / "out_old" / f"{old['study']}.npz")
        n = np.load(tmp / "out_new" / f"{old['study']}.npz")
        for c in CLASSES:
            value = old[f"{c}_value"]
            t = truth == value
            print(f"{old['study']:<18} {c:<12} {dice(n[c], o[c]):10.4f} {dice(o['labels'] == value, t):12.4f} "
                  f"{dice(n['labels'] == value, t):12.4f}")


if __name__ == "__main__":
    sys.exit(main())
