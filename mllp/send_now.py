"""Write a small answer straight to the socket when nothing is waiting ahead of it.

Twisted's `transport.write` always defers the send to a later reactor turn: it registers
the socket for writability (an `epoll_ctl`), sends when the reactor comes round, and
unregisters (another `epoll_ctl`). For an ACK of a few hundred bytes on an idle socket
that is three system calls and a dispatch where one `send` would do; on a listener that
answers thousands of messages a second it is a large share of the reactor's time.

`write_now` tries the one `send` first, only on a plain TCP transport whose own buffer is
empty (so nothing written earlier can be overtaken), and hands whatever the kernel did
not take to `transport.write` as usual. Any other transport (TLS, a test's
`StringTransport`) takes the usual path unchanged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

_PLAIN_TCP = (tcp.Server, tcp.Client)


def write_now(transport: Any, data: bytes) -> None:
    """Send `data` now if the transport allows it, else (or the rest) through its buffer."""
    if type(transport) in _PLAIN_TCP and _idle(transport):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


def _idle(transport: tcp.Connection) -> bool:
    """Connected, not closing, and with no bytes of its own still waiting to be sent."""
    return bool(
        transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_writeDisconnected", True)
        and not transport.dataBuffer
        and not getattr(transport, "_tempDataBuffer", True)
    )
