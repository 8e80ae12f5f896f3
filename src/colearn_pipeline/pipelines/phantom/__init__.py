"""The ``phantom`` pipeline: write the synthetic PET-CT cohort into ``data/01_raw``."""

from colearn_pipeline.pipelines.phantom.pipeline import create_pipeline

__all__ = ["create_pipeline"]
