"""Reading one phantom CT series stored in each transfer syntax: time and ratio to explicit VR LE.

Prints, per syntax: bytes on disk, seconds for :func:`colearn_pipeline.dicom.read_series`
(best of ``--repeat``), the ratio to the uncompressed series read in the same run, and the ratio
to SimpleITK's ``ImageSeriesReader`` on the same files.

Usage::

    .venv/bin/python benchmarks/dicom_decode.py                 # 256 x 256 x 40 CT
    .venv/bin/python benchmarks/dicom_decode.py --matrix 512 --slices 80
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_fixtures import write_series  # noqa: E402

from colearn_pipeline.dicom import read_series  # noqa: E402
from colearn_pipeline.phantom.dicomio import TRANSFER_SYNTAXES, encode  # noqa: E402


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    hu = rng.normal(40, 15, (args.slices, args.matrix, args.matrix)).round()
    hu[:, :, : args.matrix // 8] = -1000
    with tempfile.TemporaryDirectory() as tmp:
        plain = write_series(Path(tmp) / "plain", hu, modality="CT", study_uid="1.2.3", frame_uid="1.2.4",
                             intercept=-1024.0)
        reference = None
        print(f"CT {args.slices} x {args.matrix} x {args.matrix}, best of {args.repeat}")
        print(f"{'syntax':16s} {'MB':>6s} {'read_s':>8s} {'vs_LE':>6s} {'vs_sitk':>8s}")
        for name in TRANSFER_SYNTAXES:
            files = []
            for path in plain:
                ds = pydicom.dcmread(path)
                encode(ds, name)
                out = Path(tmp) / name / path.name
                out.parent.mkdir(exist_ok=True)
                ds.save_as(out, enforce_file_format=True)
                files.append(str(out))
            ours = _best(lambda: read_series(files), args.repeat)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            theirs = _best(reader.Execute, args.repeat)
            reference = reference or ours
            size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
            print(f"{name:16s} {size_mb:6.1f} {ours:8.3f} {ours / reference:6.2f} {ours / theirs:8.2f}")


if __name__ == "__main__":
    main()
