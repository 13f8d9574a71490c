"""Running the app on uvicorn with every wait bounded: listening, slow clients and shutdown.

uvicorn alone leaves three waits open. A client that sends half its headers holds its connection
forever (uvicorn's keep-alive timer only starts after a response), so a few hundred slowloris
connections pin the service; `ReadDeadline` closes a connection whose request headers have not
arrived within the read timeout of its opening or of its previous response. A client that sends
half a body holds its request forever; the app's body deadline (`_read_body` in app.py) answers 408.
And SIGTERM waits for every open request with no limit; `timeout_graceful_shutdown` cancels what is
left after `shutdown_timeout_s`. The socket is bound here, before uvicorn starts, so a bad host or
a port in use is one line (exit 2), not uvicorn's log and exit 3.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from gpuclust.errors import UsageError


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`, or a UsageError saying why not in one line."""
    if not host or host != host.strip() or any(ord(c) < 33 for c in host):
        raise UsageError(f"--host {host!r} is not an address: give an IP address or a host name, e.g. 127.0.0.1")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"--host {host[:80]!r} is not an address this machine can listen on ({reason})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and _is_ipv6(host):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def bounded_protocol(base: type[asyncio.Protocol], read_timeout_s: float) -> type[asyncio.Protocol]:
    """`base` (uvicorn's h11 or httptools protocol) with a deadline for each request's headers."""

    class ReadDeadline(base):  # type: ignore[valid-type, misc]
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            """From now, the next request's headers must arrive within the timeout."""
            self._disarm()
            waiting_for = self.cycle
            if waiting_for is not None and not waiting_for.response_complete:
                return  # a pipelined request already started; the app's body deadline covers it

            def expire() -> None:
                self._deadline = None
                if self.cycle is waiting_for and not self.transport.is_closing():  # no new request began
                    self.transport.close()

            self._deadline = self.loop.call_later(read_timeout_s, expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

    ReadDeadline.__name__ = ReadDeadline.__qualname__ = f"ReadDeadline{base.__name__}"
    return ReadDeadline


def run(app: Any, sock: socket.socket, *, read_timeout_s: float, shutdown_timeout_s: float,
        access_log: bool = False) -> None:
    """Serve `app` on the bound `sock` until SIGINT/SIGTERM; returns within about `shutdown_timeout_s`
    of the signal, whatever clients are doing."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    config = uvicorn.Config(
        app, log_level="warning", access_log=access_log, lifespan="on", server_header=False, date_header=False,
        http=bounded_protocol(AutoHTTPProtocol, read_timeout_s),
        timeout_keep_alive=max(1, min(5, int(read_timeout_s))),
        timeout_graceful_shutdown=shutdown_timeout_s)  # type: ignore[arg-type] - asyncio.timeout takes a float
    uvicorn.Server(config).run(sockets=[sock])
