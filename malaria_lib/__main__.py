"""`python -m malaria_lib` is the `malaria` command."""

import sys

from .cli import main

sys.exit(main())
