"""The cap scenario (cap.py) with 10 s capped and 10 s uncapped, for the test suite's time budget (the uncapped time
holds a paused track's next probe and its raise)."""

from __future__ import annotations

from typing import Any

import cap


async def run(ctx: Any, result: dict[str, Any]) -> None:
    await cap.run(ctx, result, cap_s=10, after_s=10)
