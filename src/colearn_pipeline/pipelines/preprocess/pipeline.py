"""Wiring of the preprocess pipeline (one node processes the whole cohort, studies in parallel)."""

from collections.abc import Sequence

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


def create_pipeline(upstream: Sequence[str] = (), **kwargs) -> Pipeline:
    """Return the preprocess pipeline.

    Parameters
    ----------
    upstream : sequence of str
        Datasets the node must wait for without reading them, e.g. ``["phantom_cohort"]`` when
        the phantom pipeline writes the raw cohort in the same run (``__default__``). The
        registered ``preprocess`` pipeline has none, so it runs on any raw folder.
    """
    return Pipeline(
        [
            Node(
                func=preprocess_cohort,
                inputs=["params:preprocess", *upstream],
                outputs=OUTPUTS,
                name="preprocess_cohort",
                tags=["preprocess"],
            )
        ]
    )
