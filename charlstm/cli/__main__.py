"""`python -m charlstm.cli` (as `torchrun -m charlstm.cli` and `accelerate launch -m charlstm.cli` run it)."""

import sys

from . import main

sys.exit(main())
