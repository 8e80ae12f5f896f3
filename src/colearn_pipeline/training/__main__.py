"""``python -m colearn_pipeline.training``: see :mod:`colearn_pipeline.training.cli`."""

from colearn_pipeline.training.cli import main

raise SystemExit(main())
