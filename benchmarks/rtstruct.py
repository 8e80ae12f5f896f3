"""RTSTRUCT out and in on a paper-size label map, as ratios to the DICOM SEG of the same labels (same run).

A synthetic 92 x 512 x 512 label map (two lungs, a mediastinum, a spherical tumour; 0.98 mm, 3 mm
slices): build and save the SEG (the reference) and the RTSTRUCT, then read the RTSTRUCT back and
rasterise its three class ROIs (checked to give the label map back exactly). CPU seconds.

    python benchmarks/rtstruct.py [--slices 92] [--size 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from colearn_pipeline.dicom.rtstruct import (
    SliceGeometry,
    rasterise_contours,
    read_structure_set,
)
from colearn_pipeline.inference.rtstruct import label_map_rtstruct
from colearn_pipeline.inference.seg import build_seg, write_seg

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SPACING_MM, SLICE_MM = 0.98, 3.0


def synthetic(n_slices: int, size: int) -> tuple[np.ndarray, list[Dataset]]:
    z, y, x = np.mgrid[:n_slices, :size, :size].astype(np.float32)
    x, y = x * 512 / size, y * 512 / size
    labels = np.zeros((n_slices, size, size), np.uint8)
    labels[((x - 160) / 90) ** 2 + ((y - 256) / 150) ** 2 < 1] = 1
    labels[((x - 352) / 90) ** 2 + ((y - 256) / 150) ** 2 < 1] = 1
    labels[((x - 256) / 50) ** 2 + ((y - 230) / 60) ** 2 < 1] = 2
    labels[(x - 150) ** 2 + (y - 250) ** 2 + ((z - n_slices / 2) * SLICE_MM / SPACING_MM) ** 2 < 30 ** 2] = 3
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    headers = []
    for k in range(n_slices):
        d = Dataset()
        d.SOPClassUID, d.SOPInstanceUID = CT_IMAGE_STORAGE, generate_uid()
        d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID = study, series, frame
        d.Modality, d.PatientName, d.PatientID = "CT", "Bench^Mark", "BENCH"
        for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
                        "StudyID", "AccessionNumber"):
            setattr(d, keyword, "")
        d.SeriesNumber, d.InstanceNumber, d.Manufacturer = 1, k + 1, "bench"
        d.ImagePositionPatient, d.ImageOrientationPatient = [-250.0, -250.0, k * SLICE_MM], [1, 0, 0, 0, 1, 0]
        d.PixelSpacing, d.Rows, d.Columns = [SPACING_MM, SPACING_MM], size, size
        d.SliceThickness = SLICE_MM
        headers.append(d)
    return labels, headers


def _cpu(func):
    start = time.process_time()
    out = func()
    return out, time.process_time() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=92)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    labels, headers = synthetic(args.slices, args.size)
    algorithm = {"name": "benchmark", "version": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        _, t_seg = _cpu(lambda: write_seg(build_seg(labels, headers, algorithm=algorithm), Path(tmp) / "x.seg.dcm"))
        path = Path(tmp) / "x.rtstruct.dcm"
        ds, t_build = _cpu(lambda: label_map_rtstruct(labels, headers, algorithm=algorithm))
        _, t_save = _cpu(lambda: write_seg(ds, path))
        structure_set, t_read = _cpu(lambda: read_structure_set(path))
        geometry = SliceGeometry.from_datasets(headers)
        masks, t_fill = _cpu(lambda: [rasterise_contours(r.contours, geometry)[0] for r in structure_set.rois[:3]])
        exact = all(np.array_equal(m, labels == v) for m, v in zip(masks, (1, 2, 3)))
        size_mb = path.stat().st_size / 1e6
    print(f"label map {labels.shape}, RTSTRUCT {size_mb:.1f} MB, read back exactly: {exact}")
    print(f"  reference: build + save the SEG   {t_seg:6.2f} s CPU")
    for name, seconds in (("build the RTSTRUCT", t_build), ("save it", t_save), ("read it", t_read),
                          ("rasterise 3 classes", t_fill)):
        print(f"  {name:<32}{seconds:6.2f} s CPU  ({seconds / t_seg:.2f}x the SEG)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
