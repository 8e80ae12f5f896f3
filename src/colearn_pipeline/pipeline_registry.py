"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``__default__`` runs phantom -> preprocess -> train_eval.
    """
    pipelines = find_pipelines()
    default = Pipeline([])
    for name in ("phantom", "preprocess", "train_eval"):
        if name in pipelines:
            default = default + pipelines[name]
    pipelines["__default__"] = default
    return pipelines
