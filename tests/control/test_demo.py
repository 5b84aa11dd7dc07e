"""control/service/demo.py: the page at ``/`` loads livekit-client from the configured URL and its script;
``/dev/token`` gives a working token in development mode only."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control.auth import verify_token
from control.config import DEFAULT_LIVEKIT_CLIENT_URL, LIVEKIT_CLIENT_VERSION, Settings, load_settings
from control.service.demo import add_demo
from control.service.keys import SETTINGS_KEY

PACKAGE_JSON = Path(__file__).resolve().parents[1] / "e2e" / "js" / "package.json"


def app_with(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS_KEY] = settings
    add_demo(app, settings.livekit_client_url)
    return app


def test_default_script_url_is_the_cdn_build_of_the_pinned_version() -> None:
    pinned = json.loads(PACKAGE_JSON.read_text())["dependencies"]["livekit-client"]
    assert LIVEKIT_CLIENT_VERSION == pinned
    assert DEFAULT_LIVEKIT_CLIENT_URL == (f"https://cdn.jsdelivr.net/npm/livekit-client@{pinned}"
                                          "/dist/livekit-client.umd.js")


async def test_page_loads_the_configured_script_and_dev_token_joins() -> None:
    settings = load_settings(argparse.Namespace(), environ={
        "MEDIAROUTER_LIVEKIT_CLIENT_URL": "http://198.51.100.1:8080/lk.umd.js?a=1&b=2"})
    assert settings.dev_mode
    async with TestClient(TestServer(app_with(settings), host="127.0.0.1")) as client:
        page = await client.get("/")
        text = await page.text()
        assert page.status == 200 and page.content_type == "text/html"
        assert '<script src="http://198.51.100.1:8080/lk.umd.js?a=1&amp;b=2"></script>' in text
        assert '<script src="/demo.js" defer></script>' in text
        script = await client.get("/demo.js")
        assert script.status == 200 and "LivekitClient" in await script.text()
        answer = await client.get("/dev/token", params={"room": "r1", "identity": "alice"})
        assert answer.status == 200
        claims = verify_token((await answer.json())["token"], settings.keys)
        assert (claims.identity, claims.grants.room, claims.grants.room_join) == ("alice", "r1", True)
        assert claims.grants.get_can_publish() and claims.grants.get_can_subscribe()
        missing = await client.get("/dev/token", params={"room": "r1"})
        assert missing.status == 400


async def test_dev_token_is_refused_when_keys_are_configured() -> None:
    settings = load_settings(argparse.Namespace(keys="k:s"), environ={})
    assert settings.livekit_client_url == DEFAULT_LIVEKIT_CLIENT_URL
    async with TestClient(TestServer(app_with(settings), host="127.0.0.1")) as client:
        answer = await client.get("/dev/token", params={"room": "r1", "identity": "alice"})
        assert answer.status == 404 and "development mode" in await answer.text()
        assert (await client.get("/")).status == 200
