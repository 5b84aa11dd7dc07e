"""What the real-SDK test modules share: skip the module without network namespaces, and run one scenario.

``from sdk_scenario import scenario`` at the top of a test module (after putting this folder on ``sys.path``) skips
the whole module, with the reason, when this host cannot create a network namespace (not root, no unshare/ip);
``scenario(name, **kw)`` runs ``lk_scenarios/<name>.py`` through ``netns.run_scenario`` and returns what it observed,
or fails the test with the scenario's error, traceback, partial result and the end of the server's log.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from netns import NetnsUnavailable, check_available, run_scenario

try:
    check_available()
except NetnsUnavailable as exc:
    pytest.skip(f"network namespace unavailable: {exc}", allow_module_level=True)


def scenario(name: str, **kw: Any) -> dict[str, Any]:
    outcome = run_scenario(name, **kw)
    if not outcome.get("ok"):
        shown = {k: outcome.get(k) for k in ("error", "traceback", "result")}
        pytest.fail(f"scenario {name} failed:\n{json.dumps(shown, indent=1)}\n--- server log ---\n"
                    f"{outcome.get('server_log', '')[-6000:]}")
    result: dict[str, Any] = outcome["result"]
    return result
