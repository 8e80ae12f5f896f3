"""Kedro datasets of the project: NIfTI volumes (SimpleITK) and NPZ model input, written atomically."""

from colearn_pipeline.datasets.nifti import NiftiDataset
from colearn_pipeline.datasets.npz import NpzDataset
from colearn_pipeline.datasets.partitions import ReplacingPartitionedDataset

__all__ = ["NiftiDataset", "NpzDataset", "ReplacingPartitionedDataset"]
