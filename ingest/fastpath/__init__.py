"""The edge's HTTP protocol: plain pings answered without aiohttp's web layer, the rest handed to aiohttp.

Every connection starts here. Requests are parsed with httptools (llhttp); a request
that is an ordinary ping — HTTP/1.1, ``/ping/<uuid>[/<action>]`` or
``/ping/<ping-key>/<slug>[/<action>]`` naming one existing, unpaused check, no query
other than a canonical ``rid``, no Expect / Content-Encoding / Upgrade, head within
aiohttp's limits — is checked, logged and answered here: its ``PingEvent`` is queued
on the event log with ``send`` and the ``OK`` is written once the log has durably
acknowledged it, in request order (pipelining). That is what nearly every ping is,
and it costs a fraction of a trip through aiohttp's request, router, middleware and
response objects.

Anything else (an API call, a 404, ``?create=1``, a malformed request, a check whose
ping has a side effect) is handed to aiohttp's own protocol for the rest of the
connection, starting with that request's first byte, so every answer other than a
plain ping's comes from the one implementation in ingest/pings.py and the handlers
next to it. The decision is made before anything of the request is acted on.

The guarantees of the aiohttp path hold here too: the body is kept up to the ping
body limit and the connection is closed after a longer one without reading it; a
request head must arrive within the idle timeout and a body within
``pings.BODY_TIMEOUT_S`` (408); a connection piling up unanswered pipelined pings stops
being read; a ping is answered 200 only after its durable acknowledgement, 503 when the
log refuses; shutdown lets pings in flight finish. One client address holds at most
``PINGSTREAM_MAX_CONNECTIONS_PER_CLIENT`` connections, fast or handed off.

The parts:
- ``site.py``: ``EdgeSite``, the aiohttp site that listens with this path (the one place that
  touches aiohttp's private attributes);
- ``listener.py``: ``FastPings``, what the connections of one listening socket share;
- ``protocol.py``: ``EdgeProtocol``, a connection: parsing, the decision, body limit, deadlines;
- ``answers.py``: logging the pings and answering them in request order, flow control, closing;
- ``handoff.py``: where a handed-off request starts in the bytes read, and the switch of the
  transport to aiohttp's protocol;
- ``handler.py``: that protocol, aiohttp's own with the edge's answer to malformed requests
  (a fixed short text, one throttled log line, a count) and the connection's slot given back;
- ``wire.py``: the URLs taken, the limits kept, the answers' bytes.
"""

from .listener import FastPings
from .protocol import EdgeProtocol
from .site import EdgeSite

__all__ = ["EdgeProtocol", "EdgeSite", "FastPings"]
