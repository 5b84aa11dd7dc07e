"""The ``/rtc`` WebSocket's upgrade: aiohttp's response, with permessage-deflate accepted as control sends it.

Control compresses each signal message on its own, ended with a full flush (control/rtc/frames.py,
``Frame.deflated``): no message refers to an earlier one, so the compression context is never taken over from one
message to the next. RFC 7692 (section 7.1.1.1) lets a server say so in its response even when the client did not
ask, with ``server_no_context_takeover``; a client may then inflate each message with a fresh context and keep no
window between messages (32 KiB per connection in a browser). aiohttp names that parameter only when the client
offered it, so this subclass adds it to every accepted offer. Nothing else of aiohttp's handshake changes; a client
that did not offer permessage-deflate gets no extension at all, as before.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

NO_TAKEOVER = "server_no_context_takeover"


class SignalWebSocket(web.WebSocketResponse):
    """A WebSocketResponse whose accepted permessage-deflate always carries ``server_no_context_takeover``."""

    def _handshake(self, request: BaseRequest) -> tuple[CIMultiDict[str], str | None, int, bool]:
        headers, protocol, compress, notakeover = super()._handshake(request)
        extension = headers.get(hdrs.SEC_WEBSOCKET_EXTENSIONS)
        if compress and extension is not None and NO_TAKEOVER not in extension:
            headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = f"{extension}; {NO_TAKEOVER}"
        return headers, protocol, compress, bool(compress) or notakeover
