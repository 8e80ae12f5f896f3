"""A DICOM file as a Kedro dataset (the SEG objects of the predict pipeline)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import pydicom
from kedro.io import AbstractDataset, DatasetError
from pydicom.dataset import Dataset

from colearn_pipeline.datasets._atomic import atomic_move, atomic_write


class DicomFileDataset(AbstractDataset[Dataset | os.PathLike, Dataset]):
    """Load a DICOM file with pydicom; save a ``pydicom.Dataset`` or move a finished file into place.

    Parameters
    ----------
    filepath : str
        Local path (e.g. ``<pseudonym>.seg.dcm``).
    metadata : dict, optional
        Free-form metadata (Kedro-Viz).
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        path = str(filepath)
        if "://" in path and not path.startswith("file://"):
            raise DatasetError(f"DicomFileDataset writes local files only, got '{path}'")
        self._filepath = PurePosixPath(path.removeprefix("file://"))
        self.metadata = metadata

    def load(self) -> Dataset:
        """Read the whole file."""
        return pydicom.dcmread(str(self._filepath))

    def save(self, data: Dataset | os.PathLike) -> None:
        """Write atomically; a path (a file staged by the pipeline) is moved into place."""
        if isinstance(data, os.PathLike):
            atomic_move(os.fspath(data), self._filepath)
        elif isinstance(data, Dataset):
            atomic_write(self._filepath, lambda tmp: data.save_as(tmp, enforce_file_format=True))
        else:
            raise DatasetError(f"DicomFileDataset saves pydicom Datasets or file paths, got {type(data).__name__}")

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
