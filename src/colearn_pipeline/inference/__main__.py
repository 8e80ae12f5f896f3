"""``python -m colearn_pipeline.inference`` is ``colearn-predict``: see :mod:`colearn_pipeline.inference.cli`."""

from colearn_pipeline.inference.cli import main

raise SystemExit(main())
