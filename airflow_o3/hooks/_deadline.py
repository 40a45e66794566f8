"""A requests adapter whose connections stop waiting for a reply's headers at the attempt's deadline.

The socket's read timeout bounds each wait for a byte, so a server that trickles its status line
and headers a byte at a time would hold a worker for days. While a deadline is set (see
:func:`deadline`), each connection starts a timer as it waits for the reply's headers; if the
headers have not all arrived when it fires, it shuts the socket down, and the wait ends with a
connection error the hook reports as the attempt's timeout. The body is bounded by the hook's own
reader. Imported only when the hook opens its session (it needs requests and urllib3).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from urllib3.poolmanager import PoolManager, ProxyManager
    from urllib3.response import HTTPResponse

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("o3_deadline", default=None)


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Within this block, a request sent on this thread waits for its reply's headers until ``at``
    (a ``time.monotonic()`` value) at the latest."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


class _Watchdog:
    """One daemon thread that shuts down the sockets whose reply headers are late, for every request
    of the process: a timer thread per request would cost more than a loopback call itself."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: dict[int, tuple[float, HTTPConnection]] = {}  # by ticket: when, and whose socket
        self._count = itertools.count()
        self._thread: threading.Thread | None = None
        self._until = 0.0  # when the thread wakes next: only a sooner deadline needs to wake it

    def watch(self, at: float, connection: HTTPConnection) -> int:
        """Shut ``connection``'s socket down at ``at`` unless :meth:`release` comes first."""
        ticket = next(self._count)
        with self._wake:
            self._due[ticket] = (at, connection)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="o3-deadline-watchdog", daemon=True)
                self._thread.start()
            elif at < self._until:
                self._wake.notify()
        return ticket

    def release(self, ticket: int) -> None:
        with self._wake:
            self._due.pop(ticket, None)

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                for ticket in [ticket for ticket, (at, _) in self._due.items() if at <= now]:
                    _cut(self._due.pop(ticket)[1])
                self._until = min((at for at, _ in self._due.values()), default=now + 3600)
                self._wake.wait(self._until - now)


_WATCHDOG = _Watchdog()


def _by_deadline(connection: HTTPConnection, getresponse: Callable[[], HTTPResponse]) -> HTTPResponse:
    """``getresponse()``, but the socket is shut down if the headers have not arrived by the deadline."""
    at = _deadline.get()
    if at is None:
        return getresponse()
    ticket = _WATCHDOG.watch(at, connection)
    try:
        return getresponse()
    finally:
        _WATCHDOG.release(ticket)


def _cut(connection: HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Connection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 itself
        return _by_deadline(self, super().getresponse)


class _TlsConnection(_Connection, HTTPSConnection):
    """:class:`_Connection`'s ``getresponse`` over TLS (it comes first in the method order)."""


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


_POOLS: dict[str, Any] = {"http": _Pool, "https": _TlsPool}


class DeadlineAdapter(HTTPAdapter):
    """:class:`HTTPAdapter` whose connections honour :func:`deadline` (direct and through an HTTP
    proxy; a SOCKS proxy keeps its own connections and only the per-byte read timeout)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        manager: PoolManager = self.poolmanager
        manager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> ProxyManager:
        manager: ProxyManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager
