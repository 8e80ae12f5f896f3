"""A PartitionedDataset whose save leaves exactly the partitions it was given."""

from __future__ import annotations

from typing import Any

from kedro_datasets.partitions import PartitionedDataset


class ReplacingPartitionedDataset(PartitionedDataset):
    """``PartitionedDataset`` that, after saving, removes the partitions it was not given.

    ``PartitionedDataset(overwrite=True)`` deletes the whole folder first, taking other files
    with it (``.gitkeep``, other pipelines' outputs) and leaving nothing if the run fails half
    way. This class writes the new partitions first (each one atomically when the underlying
    dataset is atomic) and only then deletes the stale ones -- the partitions (files with the
    ``filename_suffix``) of studies that are no longer in the data, e.g. a study quarantined in
    this run. Files without the suffix are never touched.

    Parameters
    ----------
    **kwargs
        As :class:`kedro_datasets.partitions.PartitionedDataset`; ``overwrite`` must not be set.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("overwrite"):
            raise ValueError("ReplacingPartitionedDataset replaces stale partitions itself; do not set overwrite")
        super().__init__(**kwargs)

    def save(self, data: dict[str, Any]) -> None:
        """Save ``data``'s partitions, then delete every other existing partition."""
        keep = {str(k) for k in data}
        super().save(data)
        self._invalidate_caches()
        if not self._filesystem.exists(self._normalized_path):
            return
        for path in self._list_partitions():
            if self._path_to_partition(path) not in keep:
                self._filesystem.rm(path)
        self._invalidate_caches()
