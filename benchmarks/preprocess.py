"""Benchmark of the preprocess pipeline against SimpleITK reading the same series.

Prints, in one run:

* the time SimpleITK alone (``ImageSeriesReader``, the same CT and PET files) takes per study;
* the pipeline's studies per second with 1 and with 2 workers, and its time per study divided
  by SimpleITK's read time (the ratio: how much the validation, SUV, resampling, ground truth,
  resizing and writing cost on top of reading the pixels);
* the peak resident memory of each worker process;
* the speed-up from 1 to 2 workers.

Usage::

    .venv/bin/python benchmarks/preprocess.py                       # phantom cohort, 4 demo studies
    .venv/bin/python benchmarks/preprocess.py --studies 6 --size tiny
    .venv/bin/python benchmarks/preprocess.py --cohort data/01_raw  # an existing raw folder

The pipeline part is :func:`colearn_pipeline.pipelines.preprocess.cohort.run_cohort` (discovery,
per-study processing in worker processes, staged outputs); the catalog's final compressed
writes are not included.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import yaml  # noqa: E402

from colearn_pipeline.dicom.discovery import discover, select_ct_pet  # noqa: E402
from colearn_pipeline.pipelines.preprocess.cohort import run_cohort  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _params(raw: Path, workers: int) -> dict:
    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_preprocess.yml").read_text())["preprocess"]
    params.update(
        raw_dicom_dir=str(raw / "dicom"), reports_dir=str(raw / "reports"),
        phantom_truth_dir=str(raw / "phantom_truth"), pseudonym_map_path=None, workers=workers,
    )
    return params


def _sorted_by_position(files: list[str]) -> list[str]:
    """Files in slice order (headers read with pydicom, outside the timed part)."""
    def key(path: str) -> float:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        return float(np.asarray(ds.ImagePositionPatient, dtype=float) @ np.cross(iop[:3], iop[3:]))

    return sorted(files, key=key)


def simpleitk_read_seconds(raw: Path, repeats: int) -> tuple[float, int]:
    """Best-of-``repeats`` time for SimpleITK to read every study's CT and PET series."""
    found = discover(raw / "dicom")
    series = []
    for study in found.studies.values():
        try:
            ct, pet, _ = select_ct_pet(study)
        except ValueError:
            continue
        series += [_sorted_by_position(ct.files), _sorted_by_position(pet.files)]
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for files in series:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            sitk.GetArrayViewFromImage(reader.Execute())
        best = min(best, time.perf_counter() - start)
    return best, len(series) // 2


def pipeline_run(raw: Path, workers: int) -> dict:
    """Run the cohort once; return seconds, ok studies and each worker's peak memory."""
    staging = tempfile.mkdtemp(prefix="colearn-bench-")
    try:
        start = time.perf_counter()
        rows, _ = run_cohort(_params(raw, workers), staging)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ok = [r for r in rows if r["status"] == "ok"]
    stages = {k: float(np.mean([r[k] for r in ok])) for k in ok[0] if k.startswith("t_")} if ok else {}
    peaks: dict[int, float] = {}
    for r in ok:
        peaks[r["worker_pid"]] = max(peaks.get(r["worker_pid"], 0.0), r["peak_rss_mb"])
    cpu = float(sum(r["cpu_seconds"] for r in ok))
    return {"seconds": seconds, "ok": len(ok), "stages": stages, "cpu": cpu, "studies": len(rows), "peaks_mb": sorted(peaks.values()),
            "quarantined": [(r["pseudonym"], r["reason"]) for r in rows if r["status"] != "ok"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", type=Path, help="raw folder with dicom/ and reports/ (default: generate a phantom)")
    parser.add_argument("--studies", type=int, default=4, help="phantom studies to generate")
    parser.add_argument("--size", default="demo", help="phantom size: tiny, demo or paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="SimpleITK read repeats (best is kept)")
    args = parser.parse_args(argv)
    logging.getLogger("colearn_pipeline").setLevel(logging.ERROR)

    tmp = None
    raw = args.cohort
    if raw is None:
        from colearn_pipeline.phantom import generate_cohort

        tmp = Path(tempfile.mkdtemp(prefix="colearn-bench-cohort-"))
        raw = tmp / "01_raw"
        start = time.perf_counter()
        generate_cohort(raw, n_studies=args.studies, seed=args.seed, size=args.size)
        print(f"phantom cohort: {args.studies} {args.size} studies written in {time.perf_counter() - start:.1f} s")
    try:
        read_s, n_read = simpleitk_read_seconds(raw, args.repeats)
        runs = {w: pipeline_run(raw, w) for w in (1, 2)}
        n_ok = runs[1]["ok"]
        if n_ok == 0:
            print("no study finished:", runs[1]["quarantined"])
            return 1
        read_per_study = read_s / max(n_read, 1)
        print(f"cohort: {raw}  studies: {runs[1]['studies']} ({n_ok} ok)  cpu cores: {os.cpu_count()}")
        print(f"SimpleITK ImageSeriesReader, CT+PET, 1 thread: {read_per_study:.3f} s/study "
              f"({1 / read_per_study:.2f} studies/s)")
        for w, run in runs.items():
            per_study = run["seconds"] / run["ok"]
            peaks = ", ".join(f"{p:.0f}" for p in run["peaks_mb"])
            print(f"pipeline, {w} worker(s): {run['ok'] / run['seconds']:.3f} studies/s, {per_study:.3f} s/study "
                  f"(wall, incl. worker start), ratio to SimpleITK read {per_study / read_per_study:.1f}x, "
                  f"peak RSS per worker [MB]: {peaks}; worker CPU {run['cpu'] / run['ok']:.3f} s/study, "
                  f"CPU obtained {run['cpu'] / run['seconds']:.2f} of {w} core(s)")
        stages = runs[1]["stages"]
        print("pipeline stages, mean s/study (1 worker): " + ", ".join(f"{k[2:-2]} {v:.3f}" for k, v in stages.items()))
        print(f"pipeline read+validate (pydicom) vs SimpleITK read: {stages['t_read_s'] / read_per_study:.1f}x")
        print(f"speed-up 1 -> 2 workers: {runs[1]['seconds'] / runs[2]['seconds']:.2f}x "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other processes share them)")
        if runs[1]["quarantined"]:
            print("quarantined:", runs[1]["quarantined"])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
