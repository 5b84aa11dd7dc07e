"""The typed keys of the aiohttp application: ``control.app`` sets them, the HTTP handlers read them.

A module of its own so that handlers (signaling, Twirp, health) import the keys without importing the
composition root.
"""

from __future__ import annotations

from aiohttp import web

from control.config import Settings
from control.rtc.rooms import RoomManager
from control.service.connections import ConnectionGuard
from control.workers.supervisor import Supervisor

SETTINGS_KEY = web.AppKey("settings", Settings)
SUPERVISOR_KEY = web.AppKey("supervisor", Supervisor)
MANAGER_KEY = web.AppKey("room_manager", RoomManager)
GUARD_KEY = web.AppKey("connection_guard", ConnectionGuard)
