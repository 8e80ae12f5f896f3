"""The preprocess pipeline: DICOM -> SUV -> one grid -> semi-automatic ground truth -> model input, stage by stage."""

from colearn_pipeline.pipelines.preprocess.pipeline import create_pipeline

__all__ = ["create_pipeline"]
