"""The node's two storage engines under its data directory, opened with limits that fit what
they store: `data` (one encoded version per key) and `handoff` (hints for absent owners)."""

from __future__ import annotations

import os
import time

from zkv import wire
from zkv.config import NodeConfig
from zkv.node.handoff import HandoffStore
from zkv.security import private_data
from zkv.storage import LogStore


def open_stores(cfg: NodeConfig) -> tuple[LogStore, HandoffStore]:
    """The node's two engines under cfg.data_dir: data, and handoff (hints for absent owners).
    With keys, what the node writes is its user's only (security.private_data)."""
    if cfg.keys:
        private_data(cfg.data_dir)
    os.makedirs(cfg.data_dir, exist_ok=True)
    mode = "interval" if cfg.sync == "interval" else "none"
    # the engine stores versions (encoded DVV sets: the value, its dots, maybe siblings), so
    # its record limit is that of a version, not of a client value: a value of exactly
    # max_value_size must fit (it did not, and failed as "bad context")
    store = LogStore(os.path.join(cfg.data_dir, "data"), sync=mode,
                     sync_interval_ms=cfg.sync_interval_ms, max_key_size=cfg.max_key_size,
                     max_value_size=version_limit(cfg.max_value_size),
                     min_free_bytes=cfg.min_free_mb << 20)
    handoff_dir = os.path.join(cfg.data_dir, "handoff")
    legacy = os.path.join(cfg.data_dir, "hints")  # its name before 0.2
    if os.path.isdir(legacy) and not os.path.exists(handoff_dir):
        os.rename(legacy, handoff_dir)
    return store, HandoffStore(handoff_dir, _wall_ms, sync=mode, max_key_size=cfg.max_key_size,
                               max_value_size=version_limit(cfg.max_value_size),
                               min_free_bytes=cfg.min_free_mb << 20)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def version_limit(max_value: int) -> int:
    """Largest stored version: a few siblings of the largest value, within the engine's 2 GiB."""
    return min(1 << 31, 4 * (max_value + wire.MAX_CONTEXT))
