"""Ground truth on real scanner data: figures to report, not targets.

1. The real chest CT in tests/data/lung_ct: lung and mediastinum volumes, the fraction of the
   mediastinum outside the lungs' per-slice hull (grown by 3 mm), time per step on this machine,
   and a PNG of four axial slices with the contours (``--png``).
2. The three real limb FDG PET-CT studies in tests/data/ibsi_sts: the paper's 40 %-of-peak
   tumour seeded at the centre of the expert's GTV contour, against that contour (Dice, volume
   ratio), on the PET grid.

    python benchmarks/groundtruth_real.py [--png /tmp/gt_real_ct.png]
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from skimage.draw import polygon

from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.groundtruth import dice, segment_lungs, segment_mediastinum, segment_tumours
from colearn_pipeline.groundtruth.quality import quality_figures

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def chest_ct(root: Path, png: str | None) -> None:
    volume = read_series(sorted((root / "ct").glob("*.dcm")), "lung-dx-a0001")
    ct, spacing = volume.array, volume.spacing_xyz_mm
    t0 = time.perf_counter()
    lungs, info = segment_lungs(ct, spacing, return_info=True, superior_at_high_z=volume.direction[8] >= 0)
    t1 = time.perf_counter()
    med = segment_mediastinum(ct, lungs, spacing, airway_mask=info["airway_mask"])
    t2 = time.perf_counter()
    fig = quality_figures(lungs, med, spacing, hull_margin_mm=3.0)
    print(f"chest CT {ct.shape} spacing {tuple(round(s, 3) for s in spacing)} mm")
    print(f"  lungs {fig['lung_ml']:.0f} mL, balance {fig['lung_balance']:.2f}; mediastinum {fig['mediastinum_ml']:.0f} mL, "
          f"outside hull+3mm {100 * fig['mediastinum_outside_hull']:.1f} %")
    print(f"  time: lungs {t1 - t0:.2f} s, mediastinum {t2 - t1:.2f} s (one process, shared machine)")
    if png:
        _picture(ct, lungs, med, png)
        print(f"  picture: {png}")


def _picture(ct, lungs, med, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zs = np.nonzero(med.any(axis=(1, 2)))[0]
    picks = [int(zs[int(f * (len(zs) - 1))]) for f in (0.05, 0.3, 0.6, 0.9)]
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.5))
    for ax, z in zip(axes, picks):
        ax.imshow(ct[z], cmap="gray", vmin=-1000, vmax=400)
        ax.contour(lungs[z], [0.5], colors="cyan", linewidths=0.8)
        ax.contour(med[z], [0.5], colors="red", linewidths=0.8)
        ax.set_title(f"slice {z} (cyan lungs, red mediastinum)")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=80)


def _gtv_mask(rtstruct: Path, pet) -> np.ndarray:
    """The RTSTRUCT's first ROI rasterised on the PET grid (axial, identity direction assumed)."""
    ds = pydicom.dcmread(rtstruct)
    mask = np.zeros(pet.array.shape, bool)
    ox, oy, oz = pet.origin_xyz_mm
    sx, sy, sz = pet.spacing_xyz_mm
    for contour in ds.ROIContourSequence[0].ContourSequence:
        pts = np.asarray(contour.ContourData, float).reshape(-1, 3)
        k = int(round((pts[0, 2] - oz) / sz))
        if 0 <= k < mask.shape[0]:
            rr, cc = polygon((pts[:, 1] - oy) / sy, (pts[:, 0] - ox) / sx, mask.shape[1:])
            mask[k, rr, cc] ^= True
    return mask


def limb_studies(root: Path) -> None:
    print("limb PET-CT (IBSI STS): 40 %-of-peak tumour against the expert GTV (PET grid)")
    for name in ("STS_001", "STS_002", "STS_003"):
        pet = read_series(sorted((root / name / "PET" / "image").glob("*.dcm")), name.lower())
        gtv = _gtv_mask(next((root / name / "PET" / "mask").glob("*.dcm")), pet)
        seed = tuple(np.argwhere(gtv).mean(axis=0))
        tumour, info = segment_tumours(pet.array, [seed], pet.spacing_xyz_mm)
        ratio = tumour.sum() / max(gtv.sum(), 1)
        print(f"  {name}: GTV {gtv.sum() * np.prod(pet.spacing_xyz_mm) / 1000:.1f} mL, peak SUV {info[0]['peak_suv']:.1f}, "
              f"Dice {dice(tumour, gtv):.3f}, volume ratio {ratio:.2f}, fraction {info[0]['peak_fraction']:.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", default=None, help="write the four-slice picture of the chest CT here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for archive in (DATA / "lung_ct" / "Lung_Dx-A0001.tar.gz", DATA / "ibsi_sts" / "STS.tar.gz"):
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        chest_ct(Path(tmp), args.png)
        limb_studies(Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
