"""`python -m loop.train` (and `accelerate launch -m loop.train`): the SFT stage from a shell."""

import sys

from loop.train.sft import main

sys.exit(main())
