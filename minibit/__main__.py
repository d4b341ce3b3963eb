"""`python -m minibit` runs the same command line as the `minibit` console script."""

import sys

from .cli import main

sys.exit(main())
