"""Kedro dataset for a trained net: a model bundle written with ``torch.save``, read safely."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

from colearn_pipeline.training.checkpoint import atomic_torch_save
from colearn_pipeline.training.loop import MODEL_FORMAT


class ModelBundleDataset(AbstractDataset[dict, dict]):
    """Save / load the model bundle of :func:`colearn_pipeline.training.train_model`.

    The bundle holds the net name, its architecture keyword arguments and the state dict, so
    ``colearn-predict`` and :func:`colearn_pipeline.training.load_model` rebuild the net from the
    file alone. Loading uses ``torch.load(weights_only=True)``; saving is atomic.

    Parameters
    ----------
    filepath : str
        Local ``.pt`` path.
    metadata : dict, optional
        Free-form metadata (Kedro-Viz).
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(str(filepath).removeprefix("file://"))
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        """Read the bundle (tensors on CPU)."""
        bundle = torch.load(str(self._filepath), map_location="cpu", weights_only=True)
        if not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT:
            raise DatasetError(f"{self._filepath} is not a {MODEL_FORMAT} bundle")
        return bundle

    def save(self, data: dict[str, Any]) -> None:
        """Write the bundle atomically."""
        if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
            raise DatasetError(f"ModelBundleDataset saves {MODEL_FORMAT} bundles")
        atomic_torch_save(data, Path(self._filepath))

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "format": MODEL_FORMAT}
