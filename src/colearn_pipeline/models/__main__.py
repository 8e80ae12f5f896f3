"""``python -m colearn_pipeline.models``: see :mod:`colearn_pipeline.models.cli`."""

from colearn_pipeline.models.cli import main

raise SystemExit(main())
