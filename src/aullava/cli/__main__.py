"""`python -m aullava.cli …` (torchrun and accelerate launch start it so)."""

import sys

from aullava.cli import main

sys.exit(main())
