"""``python -m colearn_pipeline.groundtruth``: see :mod:`colearn_pipeline.groundtruth.cli`."""

from colearn_pipeline.groundtruth.cli import main

raise SystemExit(main())
