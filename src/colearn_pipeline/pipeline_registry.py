"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``phantom``, ``preprocess``, ``train_eval`` and ``validate`` are found by ``find_pipelines``
    (Kedro 1.7 loads only the ones a run asks for, so none may be assumed present here).
    ``__default__`` runs phantom -> preprocess -> train_eval; there the preprocess node also waits
    for ``phantom_cohort`` (without reading it), so the raw cohort is written before it is read.
    The stand-alone ``preprocess`` pipeline has no such input and runs on any raw folder.
    """
    from colearn_pipeline.pipelines import phantom, preprocess, train_eval

    pipelines = find_pipelines()
    pipelines["__default__"] = (
        phantom.create_pipeline()
        + preprocess.create_pipeline(upstream=["phantom_cohort"])
        + train_eval.create_pipeline()
    )
    return pipelines
