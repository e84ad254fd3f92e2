"""``python -m training <area> [--preset ...] [--seed N] [--dry-run] [--quiet]``."""

from training.cli import main

raise SystemExit(main())
