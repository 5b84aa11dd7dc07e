"""The page to try the server: ``GET /`` (a room with camera and microphone through ``livekit-client``),
``GET /demo.js`` (its script) and, in development mode only, ``GET /dev/token?room=&identity=``.

The page is plain HTML and JavaScript in control/service/static/ (no build step); the ``livekit-client`` UMD script
it loads comes from the ``livekit_client_url`` setting (control/config.py), written into the page when the
application is built. ``/dev/token`` mints a token with the development key and answers 404 as soon as an API key
is configured (then the page asks for a token made with ``mediarouter token``).
"""

from __future__ import annotations

import html
from importlib import resources

from aiohttp import web

from control.auth import MAX_NAME_LENGTH, create_token
from control.service.keys import SETTINGS_KEY

SCRIPT_URL_MARK = "{{LIVEKIT_CLIENT_URL}}"
NO_CACHE = {"Cache-Control": "no-cache"}
PAGE_KEY = web.AppKey("demo_page", str)
SCRIPT_KEY = web.AppKey("demo_script", str)


def _static(name: str) -> str:
    return resources.files("control.service").joinpath("static", name).read_text(encoding="utf-8")


def add_demo(app: web.Application, livekit_client_url: str) -> None:
    """The page's routes, its script URL set to ``livekit_client_url``."""
    app[PAGE_KEY] = _static("index.html").replace(SCRIPT_URL_MARK, html.escape(livekit_client_url, quote=True))
    app[SCRIPT_KEY] = _static("demo.js")
    app.router.add_get("/", page_handler)
    app.router.add_get("/demo.js", script_handler)
    app.router.add_get("/dev/token", dev_token_handler)


async def page_handler(request: web.Request) -> web.Response:
    return web.Response(text=request.app[PAGE_KEY], content_type="text/html", headers=NO_CACHE)


async def script_handler(request: web.Request) -> web.Response:
    return web.Response(text=request.app[SCRIPT_KEY], content_type="text/javascript", headers=NO_CACHE)


async def dev_token_handler(request: web.Request) -> web.Response:
    """``{"token": ...}`` to join ``room`` as ``identity`` (6 h, publish and subscribe) in development mode; 404
    when API keys are configured, 400 without a room or identity."""
    settings = request.app[SETTINGS_KEY]
    if not settings.dev_mode:
        raise web.HTTPNotFound(text="tokens are only given out in development mode (no API key configured)")
    room = request.query.get("room", "").strip()
    identity = request.query.get("identity", "").strip()
    if not room or not identity:
        raise web.HTTPBadRequest(text="room and identity are required")
    if len(room) > MAX_NAME_LENGTH or len(identity) > MAX_NAME_LENGTH:
        raise web.HTTPBadRequest(text=f"room and identity are at most {MAX_NAME_LENGTH} characters")
    api_key, api_secret = next(iter(settings.keys.items()))
    token = create_token(api_key, api_secret, identity=identity, room=room, name=identity)
    return web.json_response({"token": token}, headers=NO_CACHE)
