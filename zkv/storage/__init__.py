"""zkv.storage: the embedded log-structured engine (DESIGN.md §2.8). ``from zkv.storage import LogStore``."""

from zkv.storage.logstore import LogStore

__all__ = ["LogStore"]
