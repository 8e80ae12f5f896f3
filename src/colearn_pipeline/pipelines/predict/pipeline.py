"""Wiring of the predict pipeline (one node segments every study under the folder)."""

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.predict.nodes import predict_cohort

#: Outputs, in the order :func:`predict_cohort` returns them (declared in catalog_predict.yml).
OUTPUTS = ["predict_labels", "predict_seg", "predict_sr", "predict_rtstruct", "predict_summary",
           "predict_summary_table", "predict_manifest", "predict_uncertainty", "predict_disagreement"]


def create_pipeline(**kwargs) -> Pipeline:
    """Return the predict pipeline."""
    return Pipeline(
        [Node(func=predict_cohort, inputs="params:predict", outputs=OUTPUTS, name="predict_cohort", tags=["predict"])]
    )
