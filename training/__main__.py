"""``python -m training <area> [--preset ...] [--seed N] [--dry-run] [--quiet]``."""

import os

# OpenMP threads that spin at their barriers collapse when other processes share the cores:
# measured here with one of the 2 cores busy, a text training step took 2.1 s with spinning
# threads and 0.5 s with passive ones. Set before torch (libgomp) is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from training.cli import main

raise SystemExit(main())
