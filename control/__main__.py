"""``python -m control``: the same as the ``mediarouter`` console script (control/cli.py)."""

from __future__ import annotations

import sys

from control.cli import main

if __name__ == "__main__":
    sys.exit(main())
