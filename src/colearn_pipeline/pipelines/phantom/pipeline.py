"""Wiring of the phantom pipeline."""

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.phantom.nodes import write_phantom_cohort


def create_pipeline(**kwargs) -> Pipeline:
    """Return the phantom pipeline: one node writing the raw cohort (``raw_dicom``, ``raw_reports``) and its summary."""
    return Pipeline(
        [
            Node(
                func=write_phantom_cohort,
                inputs="params:phantom",
                outputs=["phantom_cohort", "raw_dicom", "raw_reports"],
                name="generate_phantom_cohort",
                tags=["phantom"],
            )
        ]
    )
