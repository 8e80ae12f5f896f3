"""The predict pipeline: segment every study under a folder from its DICOM (docs/predict.md)."""

from colearn_pipeline.pipelines.predict.pipeline import create_pipeline

__all__ = ["create_pipeline"]
