"""The cap scenario (cap.py) with 10 s capped and 6 s uncapped, for the test suite's time budget."""

from __future__ import annotations

from typing import Any

import cap


async def run(ctx: Any, result: dict[str, Any]) -> None:
    await cap.run(ctx, result, cap_s=10, after_s=6)
