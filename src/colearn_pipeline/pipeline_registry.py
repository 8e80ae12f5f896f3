"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from colearn_pipeline.pipelines import preprocess


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``phantom``, ``preprocess``, ``train_eval`` and ``validate`` are found by ``find_pipelines``.
    ``__default__`` runs phantom -> preprocess -> train_eval; there the preprocess node also waits
    for ``phantom_cohort`` (without reading it), so the raw cohort is written before it is read.
    The stand-alone ``preprocess`` pipeline has no such input and runs on any raw folder.
    """
    pipelines = find_pipelines()
    default = Pipeline([])
    if "phantom" in pipelines:
        default += pipelines["phantom"]
        default += preprocess.create_pipeline(upstream=["phantom_cohort"])
    else:
        default += pipelines["preprocess"]
    if "train_eval" in pipelines:
        default += pipelines["train_eval"]
    pipelines["__default__"] = default
    return pipelines
