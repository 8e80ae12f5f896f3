"""NIfTI volumes through SimpleITK, as a Kedro dataset."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import SimpleITK as sitk
from kedro.io import AbstractDataset, DatasetError

from colearn_pipeline.datasets._atomic import atomic_move, atomic_write

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NiftiDataset(AbstractDataset[sitk.Image | os.PathLike, sitk.Image]):
    """Load and save a ``SimpleITK.Image`` as NIfTI (``.nii`` or ``.nii.gz``).

    ``save`` also accepts the path of a finished NIfTI file (e.g. staged by a worker process),
    which is moved into place without decoding it again.

    SimpleITK keeps the image's spacing, origin and direction and converts the LPS patient frame
    to the NIfTI RAS convention itself, so 3D Slicer and ITK-SNAP show the volume in place.

    Parameters
    ----------
    filepath : str
        Local path ending in ``.nii`` or ``.nii.gz``.
    save_args : dict, optional
        ``use_compression`` (bool, default True) passed to ``SimpleITK.WriteImage``.
    metadata : dict, optional
        Free-form metadata (Kedro-Viz).

    Examples
    --------
    In ``catalog.yml``::

        ct_hu:
          type: colearn_pipeline.datasets.NiftiDataset
          filepath: data/02_intermediate/ct_hu.nii.gz
    """

    def __init__(
        self,
        filepath: str,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        path = str(filepath)
        if "://" in path and not path.startswith("file://"):
            raise DatasetError(f"NiftiDataset writes local files only, got '{path}'")
        path = path.removeprefix("file://")
        if path and not path.endswith(NIFTI_SUFFIXES):  # '' is what PartitionedDataset's repr passes
            raise DatasetError(f"NiftiDataset needs a .nii or .nii.gz path, got '{path}'")
        self._filepath = PurePosixPath(path)
        self._use_compression = bool((save_args or {}).get("use_compression", True))
        self.metadata = metadata

    def load(self) -> sitk.Image:
        """Read the image (float or integer pixel type as stored)."""
        return sitk.ReadImage(str(self._filepath))

    def save(self, data: sitk.Image | os.PathLike) -> None:
        """Write ``data`` atomically (temporary sibling, then rename); a path is moved into place."""
        if isinstance(data, os.PathLike):
            src = os.fspath(data)
            if not src.endswith(NIFTI_SUFFIXES) or (src.endswith(".gz") != str(self._filepath).endswith(".gz")):
                raise DatasetError(f"NiftiDataset: staged file '{src}' does not match '{self._filepath}'")
            atomic_move(src, self._filepath)
            return
        if not isinstance(data, sitk.Image):
            raise DatasetError(f"NiftiDataset saves SimpleITK.Image objects, got {type(data).__name__}")
        atomic_write(self._filepath, lambda tmp: sitk.WriteImage(data, tmp, self._use_compression))

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "use_compression": self._use_compression}
