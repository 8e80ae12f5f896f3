"""Wiring of the phantom pipeline."""

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.phantom.nodes import generate_phantom_cohort


def create_pipeline(**kwargs) -> Pipeline:
    """Return the phantom pipeline (one node; its output is the ``phantom_cohort`` summary)."""
    return Pipeline(
        [
            Node(
                func=generate_phantom_cohort,
                inputs="params:phantom",
                outputs="phantom_cohort",
                name="generate_phantom_cohort",
                tags=["phantom"],
            )
        ]
    )
