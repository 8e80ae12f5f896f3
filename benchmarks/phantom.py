"""Benchmark of the phantom cohort generator: wall time and peak memory, against in-run references.

Each measurement runs in a fresh subprocess so that its peak resident memory (``ru_maxrss`` of the
child, including its worker processes) is its own. The references write the same number of bytes
with ``np.save`` and the same number of DICOM files with ``pydicom.dcmwrite`` (blank slices of the
same size), in the same run and on the same disk, so that the ratios carry over between machines.

Usage::

    .venv/bin/python benchmarks/phantom.py --size demo                      # the demo cohort (14 studies)
    .venv/bin/python benchmarks/phantom.py --size paper --studies 5         # part of the paper cohort
    .venv/bin/python benchmarks/phantom.py --size paper --figure docs/phantom_example.png
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

DEMO_STUDIES = 14

_GENERATE = """
import json, sys, time
from colearn_pipeline.phantom import generate_cohort
t = time.perf_counter()
s = generate_cohort(sys.argv[1], n_studies=int(sys.argv[2]), seed=int(sys.argv[3]), size=sys.argv[4],
                    workers=int(sys.argv[5]), force=True)
import resource
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": time.perf_counter() - t, "n_lesions": s["n_lesions"], "peak_rss_mib": rss / 1024.0}))
"""

_NPSAVE = """
import json, sys, time, numpy as np, os
n_bytes, n_files, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
per = max(1, n_bytes // n_files)
buf = np.random.default_rng(0).integers(0, 255, size=per, dtype=np.uint8)
t = time.perf_counter()
for i in range(n_files):
    np.save(os.path.join(out, f"{i}.npy"), buf)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

_DCMWRITE = """
import json, sys, time, numpy as np, os
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
n_files, rows, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
px = np.zeros((rows, rows), np.int16).tobytes()
t = time.perf_counter()
for i in range(n_files):
    ds = Dataset(); ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"; ds.SOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = rows; ds.BitsAllocated = ds.BitsStored = 16; ds.HighBit = 15
    ds.PixelRepresentation = 1; ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = px
    ds.file_meta = FileMetaDataset(); ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID; ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(os.path.join(out, f"{i}.dcm"), enforce_file_format=True)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def _run(code: str, *args: str) -> dict:
    """Run ``code`` in a child Python and return the JSON line it prints.

    The generator child reports its own peak RSS (the larger of itself and its worker processes,
    ``ru_maxrss``, KiB on Linux).
    """
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tree_bytes(root: Path) -> tuple[int, int, int]:
    files = [p for p in (root / "dicom").rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return total, len(files), sum(p.stat().st_size for p in files)


def bench(size: str, n_studies: int, seed: int, workers: int, keep: Path | None) -> dict:
    """Generate a cohort and the two references; return the figures."""
    from colearn_pipeline.phantom import SIZES

    work = Path(tempfile.mkdtemp(prefix=f"phantom-bench-{size}-"))
    out = keep or (work / "cohort")
    try:
        gen = _run(_GENERATE, str(out), str(n_studies), str(seed), size, str(workers))
        total, n_files, dicom_bytes = _tree_bytes(out)
        (work / "npy").mkdir()
        npy = _run(_NPSAVE, str(total), str(n_files), str(work / "npy"))
        (work / "dcm").mkdir()
        rows = SIZES[size].ct_matrix
        dcm = _run(_DCMWRITE, str(n_files // 2), str(rows), str(work / "dcm"))
        ref_dcm_s = dcm["seconds"] * 2.0      # half the files written at CT size, doubled (upper bound)
        return {
            "size": size, "studies": n_studies, "workers": workers, "seconds": round(gen["seconds"], 2),
            "seconds_per_study": round(gen["seconds"] / n_studies, 2), "peak_rss_mib": round(gen["peak_rss_mib"], 1),
            "lesions": gen["n_lesions"], "files": n_files, "bytes": total,
            "ref_np_save_s": round(npy["seconds"], 3), "ratio_to_np_save": round(gen["seconds"] / max(npy["seconds"], 1e-9), 1),
            "ref_dcmwrite_blank_s": round(ref_dcm_s, 3),
            "ratio_to_dcmwrite_blank": round(gen["seconds"] / max(ref_dcm_s, 1e-9), 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def threshold_recovery(cohort_dir: Path, fraction: float = 0.4) -> dict:
    """How well ``fraction``-of-peak connected thresholding, seeded at each report position, recovers
    each lesion on the stored PET (truth SUV, PET grid).

    Returns per-lesion Dice against the truth lesion component and precision against all tumour
    voxels (dilated by one PET voxel for partial volume); a precision below 1 means leakage.
    """
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage

    summary = json.loads((cohort_dir / "phantom_cohort.json").read_text())
    dice, precision = [], []
    for s in summary["studies"]:
        study = json.loads((cohort_dir / s["truth_dir"] / "study.json").read_text())
        lab_img = sitk.ReadImage(str(cohort_dir / s["truth_dir"] / "labels.nii.gz"))
        suv_img = sitk.ReadImage(str(cohort_dir / s["truth_dir"] / "suv.nii.gz"))
        lab = sitk.GetArrayFromImage(sitk.Resample(lab_img, suv_img, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
        suv = sitk.GetArrayFromImage(suv_img)
        tumour = lab == 3
        near_tumour = ndimage.binary_dilation(tumour)
        truth_cc, _ = ndimage.label(tumour)
        for les in study["lesions"]:
            idx = suv_img.TransformPhysicalPointToIndex(les["position_mm"])[::-1]
            peak = suv[tuple(slice(max(0, i - 1), i + 2) for i in idx)].max()
            cc, _ = ndimage.label(suv >= fraction * peak)
            region = cc == cc[idx]
            ids = np.unique(truth_cc[region & tumour])
            lesion = np.isin(truth_cc, ids[ids > 0])
            dice.append(2 * (region & lesion).sum() / max(1, region.sum() + lesion.sum()))
            precision.append((region & near_tumour).sum() / max(1, region.sum()))
    d, p = np.array(dice), np.array(precision)
    return {"lesions": int(d.size), "dice_median": round(float(np.median(d)), 3), "dice_min": round(float(d.min()), 3),
            "precision_min": round(float(p.min()), 3), "leaking_lesions": int((p < 0.8).sum())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["demo", "paper", "tiny", "both"], default="both")
    p.add_argument("--studies", type=int, default=None, help="limit the paper cohort (default: 50)")
    p.add_argument("--demo-studies", type=int, default=DEMO_STUDIES)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--keep", type=Path, default=None, help="write the (last) cohort here and keep it")
    p.add_argument("--figure", type=Path, default=None, help="also save the example PNG of study 0 here")
    p.add_argument("--recovery", action="store_true",
                   help="with --keep: check that 40%%-of-peak thresholding recovers each lesion")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    from colearn_pipeline.phantom import DEFAULT_N_STUDIES, DEFAULT_SEED

    seed = DEFAULT_SEED if args.seed is None else args.seed
    runs = []
    if args.size in ("demo", "both"):
        runs.append(("demo", args.demo_studies))
    if args.size in ("paper", "both"):
        runs.append(("paper", args.studies or DEFAULT_N_STUDIES))
    if args.size == "tiny":
        runs.append(("tiny", args.studies or 4))
    results = []
    for size, n in runs:
        keep = args.keep if (args.keep and (size, n) == runs[-1]) else None
        r = bench(size, n, seed, args.workers, keep)
        results.append(r)
        print(f"{size:5s} {n:3d} studies, {args.workers} worker(s): {r['seconds']:8.1f} s "
              f"({r['seconds_per_study']:.2f} s/study), peak RSS {r['peak_rss_mib']} MiB, "
              f"{r['files']} files, {r['bytes'] / 2**20:.0f} MiB; "
              f"np.save same bytes {r['ref_np_save_s']:.2f} s (x{r['ratio_to_np_save']}), "
              f"dcmwrite blank slices {r['ref_dcmwrite_blank_s']:.2f} s (x{r['ratio_to_dcmwrite_blank']})", flush=True)
        if args.recovery and keep is not None:
            print("40%-of-peak recovery:", threshold_recovery(keep), flush=True)
        if args.figure and keep is not None:
            from colearn_pipeline.phantom.figure import study_figure

            print("figure:", study_figure(keep, 0, args.figure))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"benchmark wall time {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    raise SystemExit(rc)
