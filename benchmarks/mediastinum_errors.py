"""Where the derived mediastinum loses Dice on a phantom cohort: errors by structure and by slice.

For every study of a phantom raw folder (``dicom/``, ``reports/``, ``phantom_truth/``) the CT is
read back from DICOM, the lungs derived (conf defaults) and :func:`segment_mediastinum` run; the
phantom's tissue map is rebuilt from the study's seed (``study.json``: seed, index, size) so
that every false positive and false negative is named by the structure it falls in (heart
blood, myocardium, mediastinal fat, liver, chest-wall fat ...) and by the kind of slice (both
lungs present, one lung, none). The CT, lungs and tissue map are cached (``--cache``) so that
method changes can be measured again in seconds.

    python benchmarks/mediastinum_errors.py /tmp/med_cohorts/demo6 [--cache DIR] [--params P.json] [--slices]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from colearn_pipeline.dicom import resample_to_reference
from colearn_pipeline.groundtruth import segment_lungs, segment_mediastinum
from colearn_pipeline.groundtruth.labels import LABELS, dice
from colearn_pipeline.groundtruth.mediastinum import _two_lungs
from colearn_pipeline.groundtruth.phantom_qa import find_ct_studies, read_ct, truth_folders
from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.anatomy import rasterise, sample_anatomy
from colearn_pipeline.phantom.generate import _sample_grids, _sample_patient, study_streams

TUMOUR_CODE = 255


def _tissue_on_ct(meta: dict, ct: sitk.Image) -> np.ndarray:
    """The study's tissue codes (phantom.config) rebuilt from its seed, on the CT grid."""
    cfg = C.make_config(meta["size"])
    rngs = study_streams(meta["seed"], meta["index"])
    _, weight, height = _sample_patient(rngs["patient"], cfg)
    grid, _, z_range = _sample_grids(rngs["patient"], cfg.geometry)
    tissue = rasterise(sample_anatomy(rngs["anatomy"], *z_range, weight, height), grid)
    img = sitk.GetImageFromArray(tissue)
    img.SetSpacing(tuple(float(v) for v in grid.spacing_xyz_mm))
    img.SetOrigin(tuple(float(v) for v in grid.origin_xyz_mm))
    return sitk.GetArrayFromImage(resample_to_reference(img, ct, "nearest"))


def load_cohort(raw: Path, cache: Path) -> list[dict]:
    """Per study: CT (HU), spacing, lungs, airway, truth labels and tissue codes (cached as NPZ)."""
    cache.mkdir(parents=True, exist_ok=True)
    truths = truth_folders(raw)
    studies = []
    for uid, study in sorted(find_ct_studies(raw / "dicom").items()):
        if uid not in truths:
            continue
        path = cache / f"{truths[uid].name}.npz"
        if not path.is_file():
            ct = read_ct(study, raw / "dicom")
            truth = sitk.GetArrayFromImage(resample_to_reference(
                sitk.ReadImage(str(truths[uid] / "labels.nii.gz")), ct, "nearest"))
            tissue = _tissue_on_ct(json.loads((truths[uid] / "study.json").read_text()), ct)
            ct_hu = sitk.GetArrayFromImage(ct)
            lungs, info = segment_lungs(ct_hu, ct.GetSpacing(), return_info=True)
            np.savez_compressed(path, ct=ct_hu.astype(np.int16), spacing=np.array(ct.GetSpacing()), lungs=lungs,
                                airway=info["airway_mask"], truth=truth, tissue=tissue)
        with np.load(path) as z:
            studies.append({"name": path.stem, **{k: z[k] for k in z.files}})
    return studies


def _slice_kind(lungs: np.ndarray, spacing) -> np.ndarray:
    """Per slice: 2 both lungs (as the envelope sees them), 1 lung but not two, 0 none."""
    min_px = 100.0 / (spacing[0] * spacing[1])
    return np.array([0 if not s.any() else (2 if _two_lungs(s, min_px) is not None else 1) for s in lungs])


def breakdown(study: dict, med: np.ndarray, top: int, show_slices: bool) -> float:
    truth = study["truth"] == LABELS["mediastinum"]
    tissue = np.where(study["truth"] == LABELS["tumour"], TUMOUR_CODE, np.rint(study["tissue"]).astype(np.int64))
    d = dice(med, truth)
    fp, fn = med & ~truth, truth & ~med
    kind = _slice_kind(study["lungs"], study["spacing"])
    names = {**C.TISSUE_NAMES, TUMOUR_CODE: "tumour(label)"}
    print(f"{study['name']}: Dice {d:.4f}  truth {truth.sum()}  derived {med.sum()}  FP {fp.sum()}  FN {fn.sum()}")
    for label, err in (("FP", fp), ("FN", fn)):
        codes = np.bincount(tissue[err].ravel(), minlength=256)
        parts = ", ".join(f"{names.get(int(c), c)} {codes[c]}" for c in np.argsort(codes)[::-1][:top] if codes[c])
        by_kind = [int(err[kind == k].sum()) for k in (2, 1, 0)]
        print(f"   {label} by tissue: {parts}")
        print(f"   {label} by slice: both lungs {by_kind[0]}, one lung {by_kind[1]}, no lung {by_kind[2]}")
    if show_slices:
        per_z = (fp | fn).sum(axis=(1, 2))
        for z in np.argsort(per_z)[::-1][:top]:
            print(f"     z {z:3d} kind {kind[z]}: FP {fp[z].sum():5d} FN {fn[z].sum():5d} truth {truth[z].sum():5d}")
    return d


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw_dir", type=Path)
    ap.add_argument("--cache", type=Path, help="cache folder (default RAW_DIR/../<name>_cache)")
    ap.add_argument("--params", type=Path, help="JSON of segment_mediastinum keyword arguments")
    ap.add_argument("--top", type=int, default=6)
    ap.add_argument("--slices", action="store_true", help="also the slices with the most errors")
    args = ap.parse_args(argv)
    cache = args.cache or args.raw_dir.parent / f"{args.raw_dir.name}_cache"
    params = json.loads(args.params.read_text()) if args.params else {}
    dices, times = [], []
    for study in load_cohort(args.raw_dir, cache):
        t0 = time.process_time()
        med = segment_mediastinum(study["ct"].astype(np.float32), study["lungs"], tuple(study["spacing"]),
                                  airway_mask=study["airway"], **params)
        times.append(time.process_time() - t0)
        dices.append(breakdown(study, med, args.top, args.slices))
    print(f"mean Dice {np.mean(dices):.4f} over {len(dices)} studies: {[round(x, 3) for x in dices]}; "
          f"segment_mediastinum CPU {np.mean(times):.2f} s per study (shared machine)")


if __name__ == "__main__":
    main()
