"""Client and AsyncClient: the application's way in (DESIGN.md §2.1), token-aware with failover.

One socket-free core (`zkv.client.core`: routing, ring refresh, suspicion, failover plans,
request validation, result mapping, update()) run by two thin drivers: `Client` (blocking,
`zkv.client.sync`) and `AsyncClient` (asyncio, `zkv.client.aio`), which share their socket
preparation and read-only views (`zkv.client.base`). Both expose the same methods: get, put,
delete, update, get_many, put_many, delete_many, status, ring_info, repair.
"""

from zkv.client.aio import AsyncClient
from zkv.client.core import (
    CONNECT_WAIT,
    HEDGE_FLOOR,
    RING_REFRESH,
    SLOW,
    SUSPECT_FOR,
    UNREACHABLE,
    ClientCore,
    GetResult,
    Send,
)
from zkv.client.sync import Client

__all__ = [
    "Client",
    "AsyncClient",
    "GetResult",
    "ClientCore",
    "Send",
    "UNREACHABLE",
    "SLOW",
    "HEDGE_FLOOR",
    "CONNECT_WAIT",
    "RING_REFRESH",
    "SUSPECT_FOR",
]
