"""colearn-pipeline: Kedro re-implementation of the PET-CT co-learning CNN of Kumar et al."""

__version__ = "0.1.0"
