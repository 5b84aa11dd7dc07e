"""Issue 17 points 5 and 6: the page at ``GET /`` in headless Chromium, one of its two participants through nginx
terminating TLS (scenario ``lk_scenarios/demo_page.py``; docs/deploy.md, nginx).

One scenario run serves both tests (a Chromium run costs tens of CPU-seconds). The demo test skips without Chromium,
node or ``tests/e2e/js/node_modules`` (``make browser-deps``); the TLS test skips without nginx as well.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sdk_scenario import scenario  # noqa: E402


@functools.cache
def demo_run() -> dict[str, Any]:
    return scenario("demo_page", workers=1, timeout_s=100)


def pages() -> list[dict[str, Any]]:
    r = demo_run()
    if "skipped" in r:
        pytest.skip(r["skipped"])
    browser = r["browser"]
    assert "error" not in browser, browser
    assert len(browser["pages"]) == 2, browser
    return list(browser["pages"])


def test_two_pages_see_and_hear_each_other() -> None:
    alice, bob = pages()
    for me, other in ((alice, "bob"), (bob, "alice")):
        assert me["error"] is None, me
        tile = me["tiles"][other]
        assert tile["playing"] and tile["width"] > 0 and tile["height"] > 0 and tile["audioElement"], me
        assert me["audio"][other]["energy"] > 0 and me["audio"][other]["packets"] > 0, me["audio"]
        assert me["tiles"][me["url"].split("identity=")[1].split("&")[0]]["playing"], me  # its own camera
        assert set(me["everSpoke"]) == {"alice", "bob"}, me  # the speaking frame, from SpeakersChanged


def test_tls_through_nginx_serves_the_page_and_the_signal_connection() -> None:
    alice, bob = pages()
    r = demo_run()
    if "tls_skipped" in r:
        pytest.skip(r["tls_skipped"])
    assert bob["url"].startswith("https://") and bob["tiles"]["alice"]["playing"], bob
    assert alice["tiles"]["bob"]["playing"], alice
    access = r["nginx_access"]
    status = {path: code for path, code in (re.search(r'"GET (/[^ ?]*)\S* HTTP/1.1" (\d+)', line).groups()
                                            for line in access)}
    assert status["/"] == "200" and status["/demo.js"] == "200" and status["/dev/token"] == "200", access
    assert status["/rtc"] == "101", access  # wss:// upgraded through nginx
    assert r["nginx_exit"] == 0, r["nginx_error_tail"]
