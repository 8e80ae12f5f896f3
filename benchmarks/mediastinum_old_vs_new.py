"""The mediastinum of an older checkout against this one, on a phantom cohort and the real chest CT.

The old code runs in a subprocess with its own ``src`` on PYTHONPATH (extract it with
``git archive e2589bd src | tar -x -C /tmp/gt-old``). Per study: Dice against the phantom truth and
the fraction of the mediastinum outside the lungs' per-slice hull grown by 3 mm; for the real CT
(no truth) the volume and that fraction. Figures to report, not targets.

    python benchmarks/mediastinum_old_vs_new.py RAW_DIR [RAW_DIR ...] --old-src /tmp/gt-old/src [--real-ct]
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

RUN = r"""
import sys, time, numpy as np, SimpleITK as sitk
sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
from colearn_pipeline.groundtruth import segment_lungs, segment_mediastinum
d = np.load(sys.argv[1])
lungs, info = segment_lungs(d["ct"], tuple(d["spacing"]), return_info=True)
t1, c1 = time.perf_counter(), time.process_time()
med = segment_mediastinum(d["ct"], lungs, tuple(d["spacing"]), airway_mask=info["airway_mask"])
t2, c2 = time.perf_counter(), time.process_time()
np.savez_compressed(sys.argv[2], lungs=lungs, med=med, seconds=np.array([t2 - t1, c2 - c1]))
"""


def _run(src: str, ct: np.ndarray, spacing, tmp: Path, tag: str) -> dict:
    np.savez(tmp / f"{tag}_in.npz", ct=ct, spacing=np.asarray(spacing))
    env = {**os.environ, "PYTHONPATH": src}
    subprocess.run([sys.executable, "-c", RUN, str(tmp / f"{tag}_in.npz"), str(tmp / f"{tag}_out.npz")], env=env, check=True)
    return dict(np.load(tmp / f"{tag}_out.npz"))


def _row(name: str, out: dict, spacing, truth=None) -> str:
    from colearn_pipeline.groundtruth import dice
    from colearn_pipeline.groundtruth.quality import quality_figures

    fig = quality_figures(out["lungs"], out["med"], spacing, hull_margin_mm=3.0)
    text = (f"{name:<28} mediastinum {fig['mediastinum_ml']:7.0f} mL  outside hull {100 * fig['mediastinum_outside_hull']:5.1f} %"
            f"  time {out['seconds'][0]:.2f} s (CPU {out['seconds'][1]:.2f} s, one thread)")
    if truth is not None:
        text += f"  Dice lung {dice(out['lungs'], truth == 1):.3f} mediastinum {dice(out['med'], truth == 2):.3f}"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dirs", nargs="*", help="phantom raw folders (dicom/, phantom_truth/)")
    parser.add_argument("--old-src", required=True, help="src folder of the old checkout")
    parser.add_argument("--real-ct", action="store_true", help="also the real chest CT of tests/data/lung_ct")
    args = parser.parse_args(argv)
    import SimpleITK as sitk

    from colearn_pipeline.dicom import resample_to_reference
    from colearn_pipeline.groundtruth import phantom_qa as qa

    new_src = str(Path(__file__).resolve().parents[1] / "src")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for raw in map(Path, args.raw_dirs):
            truths = qa.truth_folders(raw)
            for uid, study in sorted(qa.find_ct_studies(raw / "dicom").items()):
                ct = qa.read_ct(study, raw / "dicom")
                truth = sitk.GetArrayFromImage(resample_to_reference(sitk.ReadImage(str(truths[uid] / "labels.nii.gz")), ct, "nearest"))
                array, spacing = sitk.GetArrayFromImage(ct), ct.GetSpacing()
                for tag, src in (("old", args.old_src), ("new", new_src)):
                    print(_row(f"{truths[uid].name} {tag}", _run(src, array, spacing, tmp, tag), spacing, truth), flush=True)
        if args.real_ct:
            from colearn_pipeline.dicom.series import read_series

            archive = Path(__file__).resolve().parents[1] / "tests" / "data" / "lung_ct" / "Lung_Dx-A0001.tar.gz"
            with tarfile.open(archive) as tar:
                tar.extractall(tmp / "real", filter="data")
            volume = read_series(sorted(glob.glob(str(tmp / "real" / "ct" / "*.dcm"))), "lung-dx-a0001")
            for tag, src in (("old", args.old_src), ("new", new_src)):
                print(_row(f"real chest CT {tag}", _run(src, volume.array, volume.spacing_xyz_mm, tmp, tag), volume.spacing_xyz_mm), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
