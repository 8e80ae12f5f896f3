"""``python -m colearn_pipeline.phantom``: see :mod:`colearn_pipeline.phantom.cli`."""

from colearn_pipeline.phantom.cli import main

raise SystemExit(main())
