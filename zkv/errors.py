"""The whole zkv exception hierarchy (DESIGN.md §2.1); every error users can catch is here."""

from __future__ import annotations


class ZkvError(Exception):
    """Base class of every error zkv raises on purpose."""


class InvalidRequest(ZkvError, ValueError):
    """Bad key, value, r/w or size; raised before a byte is sent or written."""


class TooManySiblings(InvalidRequest):
    """A write refused because it would leave its key with more siblings than the node keeps
    (zkv-node --max-siblings), or a stored version too large: `.limit`, `.siblings` (what the
    write would have left). Read the key and write back with its context to resolve them
    (Client.update does, and retries on this)."""

    def __init__(self, message: str, limit: int = 0, siblings: int = 0) -> None:
        super().__init__(message)
        self.limit = limit
        self.siblings = siblings

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.limit, self.siblings))


class QuorumError(ZkvError):
    """Fewer than R (get) or W (put/delete) replicas answered in time.

    A put or delete that raises this may still have been stored on the replicas that did answer.
    """

    def __init__(self, message: str, required: int = 0, acked: int = 0) -> None:
        super().__init__(message)
        self.required = required
        self.acked = acked

    def __reduce__(self):  # keep .required/.acked across pickling (multiprocessing benchmarks)
        return (type(self), (self.args[0] if self.args else "", self.required, self.acked))


class Unavailable(ZkvError):
    """No node of the cluster could be reached, or every node asked answered that it could not
    take the request now (busy, still joining, stopping: the message says which; nothing was
    written by such a refusal, so the call may be made again)."""


class RequestTimeout(ZkvError, TimeoutError):
    """The call did not complete within its timeout.

    A put or delete that raises this may still have been stored: its request may have reached
    a coordinator whose answer came too late (as with QuorumError). A retry of a blind put then
    stores the value again, as a sibling; a put with the context of a read replaces it."""


class AuthenticationError(ZkvError):
    """The node refused this client's key (or it has none): nothing was read or written.
    The message names the endpoint."""


class StoreLocked(ZkvError):
    """Another live process holds the storage directory's lock."""


class CorruptRecord(ZkvError):
    """A stored record failed its CRC check; it is never returned as a value."""


class StorageFull(ZkvError):
    """The storage engine takes no writes for now: its disk is full (or under the free-space
    reserve it was given), or writing it out failed. Nothing of the refused write was stored;
    reads still work. The message says why and where."""


__all__ = [
    "ZkvError",
    "InvalidRequest",
    "TooManySiblings",
    "QuorumError",
    "Unavailable",
    "RequestTimeout",
    "AuthenticationError",
    "StoreLocked",
    "CorruptRecord",
    "StorageFull",
]
