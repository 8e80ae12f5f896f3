"""The ``validate`` pipeline: two-fold parameter validation (supplement, section SI)."""

from colearn_pipeline.pipelines.validate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
