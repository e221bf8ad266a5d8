"""zkv: a Dynamo-style key-value store. Public names only."""

from typing import TYPE_CHECKING

from zkv.errors import (
    AuthenticationError,
    InvalidRequest,
    QuorumError,
    RequestTimeout,
    TooManySiblings,
    Unavailable,
    ZkvError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:  # (for type checkers: at run time they come from __getattr__, lazily)
    from zkv.client import AsyncClient, Client, GetResult


def __getattr__(name: str):
    # The client pulls in pyzmq; import it lazily so `import zkv.storage` stays light.
    if name in ("Client", "AsyncClient", "GetResult"):
        from zkv import client

        return getattr(client, name)
    raise AttributeError(f"module 'zkv' has no attribute {name!r}")


__all__ = [
    "Client",
    "AsyncClient",
    "GetResult",
    "ZkvError",
    "InvalidRequest",
    "QuorumError",
    "TooManySiblings",
    "Unavailable",
    "RequestTimeout",
    "AuthenticationError",
    "__version__",
]
