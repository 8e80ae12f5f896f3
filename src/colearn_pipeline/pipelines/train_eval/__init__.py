"""The ``train_eval`` pipeline: split, four trainings, Table II, Fig. 5 and Fig. 6."""

from colearn_pipeline.pipelines.train_eval.pipeline import create_pipeline

__all__ = ["create_pipeline"]
