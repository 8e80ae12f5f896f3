"""A DICOM SEG over its CT slice, drawn as a viewer shows it, from the SEG's own frames."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset


def seg_overlay_png(seg_path: str | os.PathLike, ct_array_hu: np.ndarray, ct_datasets: Sequence[Dataset],
                    out_png: str | os.PathLike, *, window_hu: tuple[float, float] = (-1000.0, 400.0),
                    alpha: float = 0.45) -> tuple[Path, int]:
    """Draw the SEG's frames over the CT slice they reference and save a PNG.

    Parameters
    ----------
    seg_path : path-like
        A DICOM SEG (BINARY) referencing the CT.
    ct_array_hu : numpy.ndarray
        ``(z, y, x)`` CT in HU, slices in the order of ``ct_datasets``.
    ct_datasets : sequence of pydicom.Dataset
        The CT headers (their SOPInstanceUIDs locate each frame).
    out_png : path-like
    window_hu : (float, float)
        Display window (lowest, highest HU).
    alpha : float
        Opacity of the segment fill.

    Returns
    -------
    (pathlib.Path, int)
        The PNG and the CT slice shown: the one whose frames cover most tumour, else most pixels.
    """
    import highdicom as hd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns)).astype(bool)
    z_of_sop = {str(d.SOPInstanceUID): z for z, d in enumerate(ct_datasets)}
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    per_slice: dict[int, list[tuple[int, np.ndarray]]] = {}
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        sop = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        per_slice.setdefault(z_of_sop[sop], []).append((number, frame))
    tumour = max(segments)

    def score(z: int) -> tuple[int, int]:
        masks = per_slice[z]
        return (sum(int(m.sum()) for n, m in masks if n == tumour), sum(int(m.sum()) for _, m in masks))

    z = max(per_slice, key=score)
    lo, hi = window_hu
    fig, ax = plt.subplots(figsize=(6, 6.4), dpi=110)
    ax.imshow(np.clip((ct_array_hu[z] - lo) / (hi - lo), 0, 1), cmap="gray", interpolation="nearest")
    handles = []
    for number, mask in sorted(per_slice[z]):
        item = segments[number]
        rgb = np.asarray(hd.color.CIELabColor.from_dicom_value(tuple(item.RecommendedDisplayCIELabValue)).to_rgb()) / 255
        overlay = np.zeros((*mask.shape, 4))
        overlay[mask] = (*rgb, alpha)
        ax.imshow(overlay, interpolation="nearest")
        ax.contour(mask, levels=[0.5], colors=[rgb], linewidths=0.8)
        code = item.SegmentedPropertyTypeCodeSequence[0]
        handles.append(Patch(color=rgb, label=f"{item.SegmentLabel} (SCT {code.CodeValue})"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8)
    position = float(ct_datasets[z].ImagePositionPatient[2])
    ax.set_title(f"{seg.SeriesDescription}: CT slice {z + 1}/{len(ct_datasets)} (z = {position:.1f} mm)", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out)
    plt.close(fig)
    return out, z
