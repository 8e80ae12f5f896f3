"""Benchmark of the preprocess pipeline against SimpleITK reading the same series.

Prints, in one run:

* the time SimpleITK alone (``ImageSeriesReader``, the same CT and PET files) takes per study;
* the pipeline's studies per second with 1 and with 2 local workers, and its time per study
  divided by SimpleITK's read time (the ratio: how much the validation, SUV, resampling, ground
  truth, resizing and writing cost on top of reading the pixels);
* the mean seconds per study of each stage, and the read stage against SimpleITK's read;
* the peak resident memory of a worker (the largest over studies and stages);
* the speed-up from 1 to 2 workers;
* a second, unchanged run (every study skipped by every stage) against the first;
* a Dask ``LocalCluster`` of 2 workers against the local pool of 2.

Usage::

    .venv/bin/python benchmarks/preprocess.py                       # phantom cohort, 4 demo studies
    .venv/bin/python benchmarks/preprocess.py --studies 6 --size tiny
    .venv/bin/python benchmarks/preprocess.py --cohort data/01_raw  # an existing raw folder
    .venv/bin/python benchmarks/preprocess.py --memory-scaling 10,200 --cache /tmp/cohorts

``--memory-scaling`` generates (or reuses, from ``--cache``) demo-size phantom cohorts of those
sizes (2 generator processes) and runs the pipeline on each with 2 local workers, each run in a
fresh Python process; it prints the peak resident memory of that process (the Kedro run) and of
its largest worker, per cohort, and their ratio between the largest and the smallest cohort.

The pipeline part is the whole preprocess pipeline run through the project's catalog (all data
paths moved to a temporary folder), written outputs and manifest included.
"""

from __future__ import annotations

import argparse
import json
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

ROOT = Path(__file__).resolve().parents[1]


def run_pipeline(raw: Path, out: Path, **executor) -> dict:
    """Run the preprocess pipeline once through the project's catalog, data paths moved under ``out``."""
    from kedro.io import DataCatalog
    from kedro.runner import SequentialRunner

    from colearn_pipeline.pipelines.preprocess import create_pipeline

    for name in ("colearn_pipeline", "kedro", "distributed"):  # after kedro's import, which sets its logging
        logging.getLogger(name).setLevel(logging.ERROR)
    conf = ROOT / "conf" / "base"
    catalog_conf = yaml.safe_load((conf / "catalog_preprocess.yml").read_text())
    for entry in catalog_conf.values():
        for key in ("path", "filepath", "records_dir"):
            if key in entry and entry[key].startswith("data/"):
                entry[key] = str(out / entry[key].removeprefix("data/"))
    catalog_conf["raw_dicom"]["path"], catalog_conf["raw_reports"]["path"] = str(raw / "dicom"), str(raw / "reports")
    for name in ("preprocess_pseudonym_map", "preprocess_file_map"):
        catalog_conf[name]["filepath"] = str(out / Path(catalog_conf[name]["filepath"]).name)
    params = yaml.safe_load((conf / "parameters_preprocess.yml").read_text())["preprocess"]
    params["phantom_qa"]["truth_dir"] = str(raw / "phantom_truth")
    params["executor"].update(staging_dir=str(out), **executor)
    catalog = DataCatalog.from_config(catalog_conf)
    for name, block in params.items():
        catalog[f"params:preprocess.{name}"] = block
    catalog["params:suv"] = yaml.safe_load((conf / "parameters_suv.yml").read_text())["suv"]
    start = time.perf_counter()
    SequentialRunner().run(create_pipeline(), catalog)
    seconds = time.perf_counter() - start
    rows = json.loads((out / "08_reporting" / "preprocess_manifest.json").read_text())["studies"]
    cpu: dict[str, float] = {}
    for record in out.rglob(".records/*/*.json"):
        row = json.loads(record.read_text()).get("row") or {}
        cpu[record.stem] = cpu.get(record.stem, 0.0) + sum(v for k, v in row.items() if k.startswith("cpu_"))
    return {"seconds": seconds, "rows": rows, "cpu": cpu}


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


def pipeline_run(raw: Path, out: Path, **executor) -> dict:
    """Run the cohort once; return seconds, ok studies, mean stage seconds and the largest worker memory."""
    run = run_pipeline(raw, out, **executor)
    rows = run["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    stages = {k[2:-2]: float(np.mean([r[k] or 0.0 for r in ok])) for k in ok[0] if k.startswith("t_")} if ok else {}
    return {"seconds": run["seconds"], "ok": len(ok), "stages": stages, "studies": len(rows),
            "cpu": float(np.mean([run["cpu"].get(r["pseudonym"], 0.0) for r in ok])) if ok else 0.0,
            "peak_mb": max((r["peak_rss_mb"] or 0.0 for r in ok), default=0.0),
            "quarantined": [(r["pseudonym"], r["reason"]) for r in rows if r["status"] != "ok"]}


def nifti_write_seconds(out: Path, pseudonym: str) -> dict[str, tuple[float, float]]:
    """Seconds and MB to write one study's NIfTI files (every stage): SimpleITK .nii.gz vs as the pipeline does."""
    from colearn_pipeline.pipelines.preprocess.study import write_nifti

    paths = sorted(p for p in out.rglob(f"{pseudonym}.nii*") if ".records" not in p.parts)
    images = [sitk.ReadImage(str(p)) for p in paths]
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("all .nii.gz by SimpleITK (before)", "as the pipeline writes (.nii.gz gzip 1, SUV .nii)"):
            start = time.perf_counter()
            written = []
            for i, (image, path) in enumerate(zip(images, paths)):
                if label.startswith("all"):
                    written.append(str(Path(tmp) / f"{i}.nii.gz"))
                    sitk.WriteImage(image, written[-1], True)
                else:
                    written.append(write_nifti(image, Path(tmp) / f"{i}{''.join(path.suffixes)}"))
            result[label] = (time.perf_counter() - start, sum(os.path.getsize(p) for p in written) / 1e6)
    return result


def memory_run(raw: Path, out: Path) -> dict:
    """Run the cohort with 2 local workers in this process; its peak RSS and the largest worker's (MB)."""
    import resource

    run = pipeline_run(raw, out, workers=2)
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"studies": run["studies"], "ok": run["ok"], "seconds": run["seconds"], "parent_peak_mb": parent_mb,
            "worker_peak_mb": run["peak_mb"]}


def memory_scaling(sizes: list[int], cache: Path, seed: int) -> list[dict]:
    """Generate (or reuse) demo cohorts of ``sizes`` studies under ``cache``; run each in a fresh process."""
    import subprocess

    from colearn_pipeline.phantom import generate_cohort

    results = []
    for n in sizes:
        raw = cache / f"demo-{n}-seed{seed}"
        start = time.perf_counter()
        generate_cohort(raw, n_studies=n, seed=seed, size="demo", workers=2)
        generated = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix="colearn-bench-mem-") as out:
            proc = subprocess.run([sys.executable, __file__, "--memory-run", str(raw), out], check=True,
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(cohort=n, generate_s=generated)
        results.append(result)
        print(f"{n} demo studies ({result['ok']} ok, generated/reused in {generated:.0f} s): preprocess "
              f"{result['seconds']:.0f} s with 2 workers, peak RSS of the run's process {result['parent_peak_mb']:.0f} MB, "
              f"of its largest worker {result['worker_peak_mb']:.0f} MB", flush=True)
    small, large = results[0], results[-1]
    print(f"peak RSS {large['cohort']} / {small['cohort']} studies: run's process "
          f"{large['parent_peak_mb'] / small['parent_peak_mb']:.2f}x, worker "
          f"{large['worker_peak_mb'] / small['worker_peak_mb']:.2f}x; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", type=Path, help="raw folder with dicom/ and reports/ (default: generate a phantom)")
    parser.add_argument("--studies", type=int, default=4, help="phantom studies to generate")
    parser.add_argument("--size", default="demo", help="phantom size: tiny, demo or paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="SimpleITK read repeats (best is kept)")
    parser.add_argument("--memory-scaling", help="comma-separated demo cohort sizes, e.g. 10,200 (needs --cache)")
    parser.add_argument("--cache", type=Path, help="folder where --memory-scaling keeps its generated cohorts")
    parser.add_argument("--memory-run", nargs=2, type=Path, metavar=("RAW", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("colearn_pipeline", "kedro", "distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.memory_run:
        print(json.dumps(memory_run(*args.memory_run)))
        return 0
    if args.memory_scaling:
        if args.cache is None:
            parser.error("--memory-scaling needs --cache (a folder for the generated cohorts)")
        memory_scaling([int(n) for n in args.memory_scaling.split(",")], args.cache, args.seed)
        return 0

    tmp = None
    raw = args.cohort
    if raw is None:
        from colearn_pipeline.phantom import generate_cohort

        tmp = Path(tempfile.mkdtemp(prefix="colearn-bench-cohort-"))
        raw = tmp / "01_raw"
        start = time.perf_counter()
        generate_cohort(raw, n_studies=args.studies, seed=args.seed, size=args.size)
        print(f"phantom cohort: {args.studies} {args.size} studies written in {time.perf_counter() - start:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="colearn-bench-out-"))
    try:
        read_s, n_read = simpleitk_read_seconds(raw, args.repeats)
        runs = {w: pipeline_run(raw, work / f"local{w}", workers=w) for w in (1, 2)}
        again = pipeline_run(raw, work / "local2", workers=2)
        dask = pipeline_run(raw, work / "dask2", workers=2, kind="dask")
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
            print(f"pipeline, {w} local worker(s): {run['ok'] / run['seconds']:.3f} studies/s, {per_study:.3f} s/study "
                  f"(wall, whole pipeline), ratio to SimpleITK read {per_study / read_per_study:.1f}x, "
                  f"peak RSS of a worker {run['peak_mb']:.0f} MB, worker CPU {run['cpu']:.3f} s/study")
        stages = runs[1]["stages"]
        print("stages, mean s/study (1 worker): " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
        print(f"read_series stage (pydicom, checks, CT write) vs SimpleITK read: {stages['read_series'] / read_per_study:.1f}x")
        print(f"speed-up 1 -> 2 workers: {runs[1]['seconds'] / runs[2]['seconds']:.2f}x")
        print(f"unchanged second run (2 workers): {again['seconds']:.1f} s = "
              f"{100 * again['seconds'] / runs[2]['seconds']:.0f} % of the first")
        print(f"Dask LocalCluster, 2 workers: {dask['ok'] / dask['seconds']:.3f} studies/s = "
              f"{runs[2]['seconds'] / dask['seconds']:.2f}x the local pool of 2 (cluster start included)")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes share them)")
        first_ok = next(r["pseudonym"] for r in json.loads(
            (work / "local1" / "08_reporting" / "preprocess_manifest.json").read_text())["studies"] if r["status"] == "ok")
        for label, (seconds, mb) in nifti_write_seconds(work / "local1", first_ok).items():
            print(f"NIfTI files of one study (7 volumes), {label}: {seconds:.2f} s, {mb:.1f} MB")
        if runs[1]["quarantined"]:
            print("quarantined:", runs[1]["quarantined"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
