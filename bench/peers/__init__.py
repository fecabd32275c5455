"""Reference servers for ``python -m bench.run``: the same JSON protocol subset, other stacks.

* :mod:`bench.peers.websockets_peer` — the ``websockets`` package on asyncio;
* :mod:`bench.peers.floor_peer` — the floor: a bare gevent ``StreamServer``
  that sends one pre-encoded frame per member, the least a Python server can do;
* ``node_ws_peer.js`` — Node and the ``ws`` package (``node bench/peers/node_ws_peer.js``).

All three speak ``hello``/``join``/``joined``/``say``/``message`` (docs/protocol.md),
take the nick from ``?nick=`` (no authentication), keep the last 1000 messages
of each room in memory (for ``since``; nothing on disk) and send no presence.
"""
