"""``python -m colearn_pipeline.suv``: see :mod:`colearn_pipeline.suv.cli`."""

from colearn_pipeline.suv.cli import main

raise SystemExit(main())
