"""A picture of one phantom study: CT, PET and truth labels of the same slice, read back from disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CT_WINDOW_HU = (-1000.0, 300.0)
PET_DISPLAY_MAX_SUV = 6.0
CROP_MARGIN_MM = 15.0
DENSE_LUNG_HU = -300.0
VESSEL_OPENING_MM = 5.0   # opening radius that removes vessels from the dense-lung count
LABEL_COLOURS = ["#000000", "#3b8bd8", "#f2b134", "#e0304a"]
LABEL_NAMES = ["background", "lung", "mediastinum", "tumour"]


def _read_series(folder: Path, series_uid: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder), series_uid)
    reader.SetFileNames(files)
    return reader.Execute()


def study_figure(cohort_dir: str | Path, study_index: int, png_path: str | Path, slice_index: int | None = None) -> dict:
    """Save CT, PET and labels of one slice side by side (by default the slice with most tumour + atelectasis).

    Returns
    -------
    dict
        What is shown: pseudonym, slice index and z (mm), label counts in the slice.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cohort = Path(cohort_dir)
    summary = json.loads((cohort / "phantom_cohort.json").read_text())
    s = summary["studies"][study_index]
    truth = cohort / s["truth_dir"]
    labels_img = sitk.ReadImage(str(truth / "labels.nii.gz"))
    labels = sitk.GetArrayFromImage(labels_img)
    suv_img = sitk.ReadImage(str(truth / "suv.nii.gz"))
    folders = sorted({str(p.parent) for p in (cohort / s["dicom_dir"]).rglob("*") if p.is_file()})
    ct = pet = None
    for folder in folders:
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder):
            img = _read_series(Path(folder), uid)
            if img.GetSize()[0] == labels_img.GetSize()[0] and ct is None:
                ct = img
            elif img.GetSize()[0] == suv_img.GetSize()[0]:
                pet = img
    ct_hu = sitk.GetArrayFromImage(ct)
    if slice_index is None:
        # the slice with most tumour, counting dense (collapsed) lung too, so atelectasis shows when present
        from scipy import ndimage

        r = max(1, int(round(VESSEL_OPENING_MM / ct.GetSpacing()[0])))
        disk = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r
        dense_lung = ndimage.binary_opening((labels == 1) & (ct_hu > DENSE_LUNG_HU), structure=disk[None])
        score = (labels == 3).sum(axis=(1, 2)) + dense_lung.sum(axis=(1, 2))
        k = int(np.argmax(score))
    else:
        k = slice_index
    z_mm = labels_img.TransformIndexToPhysicalPoint((0, 0, k))[2]
    # PET slice at the same z, resampled onto the CT slice for display
    pet_on_ct = sitk.Resample(pet, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    study = json.loads((truth / "study.json").read_text())
    if study["units"] == "CNTS":
        to_suv = float(study["philips_suv_factor"])
    else:
        to_suv = 1.0 / float(study["bqml_per_suv"])
    pet_slice = sitk.GetArrayFromImage(pet_on_ct)[k] * to_suv
    # crop all panels to the body (plus a margin) so the anatomy fills the picture
    body = ct_hu[k] > -500
    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    m = int(CROP_MARGIN_MM / ct.GetSpacing()[0])
    r0, r1 = max(0, rows[0] - m), min(body.shape[0], rows[-1] + m)
    c0, c1 = max(0, cols[0] - m), min(body.shape[1], cols[-1] + m)
    crop = (slice(r0, r1), slice(c0, c1))
    aspect = (r1 - r0) / max(1, c1 - c0)
    fig, axes = plt.subplots(1, 3, figsize=(16, 16 / 3 * aspect + 1.0), constrained_layout=True)
    axes[0].imshow(ct_hu[k][crop], cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1])
    axes[0].set_title(f"CT (HU, window {CT_WINDOW_HU[0]:.0f}..{CT_WINDOW_HU[1]:.0f})")
    im = axes[1].imshow(pet_slice[crop], cmap="gray_r", vmin=0, vmax=PET_DISPLAY_MAX_SUV)
    axes[1].set_title(f"PET as stored ({s['convention']}), shown in SUV")
    fig.colorbar(im, ax=axes[1], shrink=0.8, pad=0.01, label="SUV")
    axes[2].imshow(labels[k][crop], cmap=ListedColormap(LABEL_COLOURS), vmin=0, vmax=3, interpolation="nearest")
    axes[2].set_title("truth labels")
    axes[2].legend(handles=[Patch(color=c, label=n) for c, n in zip(LABEL_COLOURS, LABEL_NAMES)],
                   loc="lower right", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"{s['pseudonym']}  slice {k} (z = {z_mm:.1f} mm), anterior up, patient left on the right")
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    counts = np.bincount(labels[k].ravel(), minlength=4)
    return {"pseudonym": s["pseudonym"], "slice": k, "z_mm": z_mm, "label_pixels": counts.tolist()}
