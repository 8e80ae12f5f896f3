"""Wiring of the preprocess pipeline (one node processes the whole cohort, studies in parallel)."""

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.preprocess.nodes import preprocess_cohort

#: Outputs, in the order :func:`preprocess_cohort` returns them (declared in catalog_preprocess.yml).
OUTPUTS = [
    "preprocess_ct_hu",
    "preprocess_suv",
    "preprocess_labels",
    "model_input",
    "preprocess_manifest_table",
    "preprocess_manifest",
]


def create_pipeline(**kwargs) -> Pipeline:
    """Return the preprocess pipeline."""
    return Pipeline(
        [
            Node(
                func=preprocess_cohort,
                inputs="params:preprocess",
                outputs=OUTPUTS,
                name="preprocess_cohort",
                tags=["preprocess"],
            )
        ]
    )
