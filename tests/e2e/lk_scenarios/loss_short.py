"""The loss scenario (loss.py) with a 12 s window, for the test suite's time budget."""

from __future__ import annotations

from typing import Any

import loss


async def run(ctx: Any, result: dict[str, Any]) -> None:
    await loss.run(ctx, result, seconds=12)
