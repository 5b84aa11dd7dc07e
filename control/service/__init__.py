"""The LiveKit surface of the control process: the HTTP and WebSocket endpoints clients and servers call.

``/rtc`` signaling, ``/rtc/validate``, the Twirp RoomService, ``/healthz`` and the typed application keys they
share. It checks tokens (``control.auth``), turns requests into calls on the rooms (``control.rtc``) and never
talks to a worker itself (LiveKit keeps the same split between ``pkg/service`` and ``pkg/rtc``).
"""
