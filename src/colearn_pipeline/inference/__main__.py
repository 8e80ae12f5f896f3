"""``python -m colearn_pipeline.inference`` is ``colearn-predict``."""

import sys

from colearn_pipeline.inference.cli import main

sys.exit(main())
