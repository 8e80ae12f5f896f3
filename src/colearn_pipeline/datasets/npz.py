"""Dictionaries of numpy arrays as ``.npz`` files, as a Kedro dataset."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from colearn_pipeline.datasets._atomic import atomic_move, atomic_write


class NpzDataset(AbstractDataset[dict, dict]):
    """Load and save a ``{key: numpy.ndarray}`` mapping as one ``.npz`` file.

    ``save`` also accepts the path of a finished ``.npz`` file (e.g. staged by a worker process),
    which is moved into place as it is.

    Loading never unpickles (``allow_pickle=False``): strings must be numpy string arrays, which
    is how the model-input contract stores ``study``.

    Parameters
    ----------
    filepath : str
        Local path ending in ``.npz``.
    compress : bool
        ``numpy.savez_compressed`` when true (default), ``numpy.savez`` otherwise.
    metadata : dict, optional
        Free-form metadata (Kedro-Viz).
    """

    def __init__(self, filepath: str, compress: bool = True, metadata: dict[str, Any] | None = None) -> None:
        path = str(filepath)
        if "://" in path and not path.startswith("file://"):
            raise DatasetError(f"NpzDataset writes local files only, got '{path}'")
        path = path.removeprefix("file://")
        if path and not path.endswith(".npz"):  # '' is what PartitionedDataset's repr passes
            raise DatasetError(f"NpzDataset needs a .npz path, got '{path}'")
        self._filepath = PurePosixPath(path)
        self._compress = bool(compress)
        self.metadata = metadata

    def load(self) -> dict[str, np.ndarray]:
        """Read every array of the file into memory."""
        with np.load(str(self._filepath), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}

    def save(self, data: dict[str, Any] | os.PathLike) -> None:
        """Write ``data`` atomically; every value goes through ``numpy.asarray``; a path is moved into place."""
        if isinstance(data, os.PathLike):
            if not os.fspath(data).endswith(".npz"):
                raise DatasetError(f"NpzDataset: staged file '{os.fspath(data)}' is not a .npz file")
            atomic_move(data, self._filepath)
            return
        if not isinstance(data, dict):
            raise DatasetError(f"NpzDataset saves dicts of arrays, got {type(data).__name__}")
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
        for key, value in arrays.items():
            if value.dtype == object:
                raise DatasetError(f"NpzDataset: key '{key}' is an object array; it could not be loaded without pickle")
        writer = np.savez_compressed if self._compress else np.savez

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                writer(handle, **arrays)

        atomic_write(self._filepath, write)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "compress": self._compress}
