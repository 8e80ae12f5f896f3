"""Kedro datasets of the project: NIfTI volumes (SimpleITK), NPZ model input, per-study stage partitions, raw cohort."""

from colearn_pipeline.datasets.nifti import NiftiDataset
from colearn_pipeline.datasets.npz import NpzDataset
from colearn_pipeline.datasets.partitions import ReplacingPartitionedDataset
from colearn_pipeline.datasets.raw import DicomTree, DicomTreeDataset, ReportsDataset
from colearn_pipeline.datasets.study_partitions import StudyOutput, StudyPartition, StudyPartitions, StudyPartitionsDataset

__all__ = [
    "DicomTree", "DicomTreeDataset", "NiftiDataset", "NpzDataset", "ReplacingPartitionedDataset", "ReportsDataset",
    "StudyOutput", "StudyPartition", "StudyPartitions", "StudyPartitionsDataset",
]
