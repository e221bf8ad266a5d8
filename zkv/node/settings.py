"""A running node's settings: what `zkv config` (Config) reads and changes, and what SIGHUP
takes from the --config file read again. Only config.RUNTIME settings change while a node runs
(limits and throttles, read where they are used, or pushed here into the part holding them:
the engines' disk reserve and fsync period, the sibling limits, the I/O budget, the log
level); every other one needs a restart, and a change to one is refused (Config) or logged
(SIGHUP). A change is saved only when asked (`zkv config --save`, Config.save): written into
the node's --config file, which is what a restart starts from (`save`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from zkv import config as configs
from zkv.config import NodeConfig
from zkv.errors import InvalidRequest

log = logging.getLogger("zkv.node")


def change(core, texts: dict[str, str], save_to_file: bool = False) -> dict:
    """Config: set the runtime settings `texts` names (name -> text, as a flag takes it), all
    or none (InvalidRequest: an unknown setting, a bad value, one set at start only);
    `save_to_file`: and write them, with every runtime setting changed before, into the
    --config file first (`save`; if that fails nothing changes). Returns ConfigOk's
    document (`info`, with "saved" when saved)."""
    changes: dict[str, Any] = {name: configs.parse_setting(name, text)
                               for name, text in texts.items()}
    fixed = sorted(set(changes) - configs.RUNTIME)
    if fixed:
        raise InvalidRequest(f"{', '.join(fixed)}: set at start only (restart the node with the "
                             f"new value); a running node takes "
                             f"{', '.join(sorted(configs.RUNTIME))}")
    new = dataclasses.replace(core.cfg, **changes)
    if _switches_aae(core.cfg, new):
        raise InvalidRequest(f"aae_interval {new.aae_interval}: anti-entropy cannot be turned "
                             f"{'off' if new.aae_interval == 0 else 'on'} while the node runs "
                             f"(its Merkle trees exist from the start or not at all): restart "
                             f"it with the new value; a running node takes any value above 0")
    saved = save(core, new) if save_to_file else None
    doc = info(core, reconfigure(core, new))
    if saved is not None:
        doc["saved"] = saved
    return doc


def _switches_aae(old: NodeConfig, new: NodeConfig) -> bool:
    """Would `new` turn anti-entropy on or off (aae_interval to or from 0)? Only a restart can."""
    return (old.aae_interval == 0) != (new.aae_interval == 0)


def save(core, new: NodeConfig) -> dict:
    """Write into the node's --config file every runtime setting whose value in `new` a
    restart would not start with (the file and the command line as they are now): those this
    Config changes and those changed before (Redis' CONFIG REWRITE). A setting the command
    line gives as a flag is not written (the flag would still win at a restart): the answer
    names it. Returns {"path", "written": {name: value}, "flag_wins": [names]};
    InvalidRequest if the node started without --config or the file cannot be read or
    replaced (then nothing is written, nor changed)."""
    path = core.cfg.config
    if not path:
        raise InvalidRequest("this node started without --config: there is no file to save "
                             "to (start it with --config FILE, or put the settings on its "
                             "command line)")
    restart = configs.reread(core.cfg, core.flags)  # (InvalidRequest if it does not load)
    flags = core.flags or {}
    differ = [name for name in sorted(configs.RUNTIME)
              if getattr(new, name) != getattr(restart, name)]
    flag_wins = [name for name in differ if flags.get(name) is not None]
    written = {name: getattr(new, name) for name in differ if name not in flag_wins}
    if written:
        try:
            configs.save_settings(path, written)
        except InvalidRequest as exc:  # (answered to the admin too; the log keeps it)
            log.warning("%s (settings not saved: %s)", exc,
                        ", ".join(f"{k} = {v!r}" for k, v in written.items()))
            raise
        log.info("settings saved to %s: %s", path,
                 ", ".join(f"{k} = {v!r}" for k, v in written.items()))
    return {"path": path, "written": written, "flag_wins": flag_wins}


def reconfigure(core, new: NodeConfig) -> dict[str, tuple[Any, Any]]:
    """Take `new`'s runtime settings (the others are left as they are) into every part of the
    node holding one; returns name -> (old, new) of those that changed."""
    diff: dict[str, tuple[Any, Any]] = {
        name: both for name, both in configs.differences(core.cfg, new).items()
        if name in configs.RUNTIME}
    if not diff:
        return {}
    from zkv.node.core import MAX_IDENTITIES  # (core imports this module)

    # the audit line first: a log_level change applied before it silenced its own line
    # (`--set log_level=WARNING` logged nothing). A change of the log level is a WARNING,
    # logged under the old level, or under the new one if the old one shows no warnings
    line = "settings changed: %s", ", ".join(f"{k} {old!r} -> {now!r}"
                                             for k, (old, now) in sorted(diff.items()))
    relevel = "log_level" in diff
    if not relevel:
        log.info(*line)
    elif log.isEnabledFor(logging.WARNING):
        log.warning(*line)
        relevel = False
    cfg = core.cfg = dataclasses.replace(core.cfg, **{k: v[1] for k, v in diff.items()})
    for store in (core.store, core.handoff.store):
        if hasattr(store, "min_free_bytes"):  # (the simulator's stores have no disk)
            store.min_free_bytes = cfg.min_free_mb << 20
    if hasattr(core.store, "set_sync_interval_ms"):
        core.store.set_sync_interval_ms(cfg.sync_interval_ms)
    core.replica.max_siblings, core.replica.sibling_warn = cfg.max_siblings, cfg.sibling_warn
    core.transfers.budget.set_rate(cfg.transfer_rate)
    core.max_identities = min(MAX_IDENTITIES, cfg.max_connections)
    for hook in core.settings_hooks:  # (the transport's connection cap)
        hook(cfg)
    logging.getLogger("zkv").setLevel(cfg.log_level)
    if relevel:  # (from a level that showed no warnings)
        log.warning(*line)
    return diff


def since_start(core) -> dict[str, list]:
    """name -> [at start, now] of every setting changed while the node runs (`zkv status`
    shows them: what a restart from the same command line and file would undo, unless the
    file says so too)."""
    return {k: list(v) for k, v in sorted(configs.differences(core.started_cfg,
                                                              core.cfg).items())}


# settings fixed by the cluster (its first node's, carried by gossip): name -> the cluster's key
CLUSTER_WIDE = {"ring_size": "q", "n": "n", "r": "r", "w": "w"}  # (and auto_commit: its state)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(NodeConfig)}


def ignored(core) -> dict[str, list]:
    """The cluster-wide settings this node was given (a flag or its --config file) that the
    cluster's differ from: name -> [given, the cluster's]. They were ignored without a word,
    and `zkv config` showed them as if in force (an outside run). A node embedded without
    its command line (`core.flags` None) counts a value other than the default as given."""
    cluster = _cluster_values(core)
    if core.flags is not None:
        given = configs.given(core.flags)
        said = [name for name in cluster if name in given]
    else:
        said = [name for name in cluster if getattr(core.cfg, name) != _DEFAULTS[name]]
    return {name: [getattr(core.cfg, name), cluster[name]] for name in said
            if getattr(core.cfg, name) != cluster[name]}


def _cluster_values(core) -> dict[str, Any]:
    """The cluster-wide settings as the cluster has them (those it knows)."""
    out = {name: core.membership.settings[key] for name, key in CLUSTER_WIDE.items()
           if key in core.membership.settings}
    if core.membership.cluster is not None:
        out["auto_commit"] = core.membership.cluster.auto_commit
    return out


def warn_ignored(core) -> None:
    """Log the settings `ignored` names (at start on a saved cluster, and at a join)."""
    for name, (given, theirs) in ignored(core).items():
        log.warning("%s %s ignored: the cluster's is %s (fixed when it was founded; a new "
                    "namespace takes its own n, r and w)", name, given, theirs)


def info(core, changed: dict[str, tuple[Any, Any]]) -> dict:
    """Every setting as the node runs with it (the cluster-wide ones as the cluster has them;
    `ignored`: those given otherwise), the runtime ones, and what just changed."""
    running = {name: getattr(core.cfg, name) for name in configs.FIELDS}
    running.update(_cluster_values(core))
    return {"settings": running, "runtime": sorted(configs.RUNTIME),
            "changed": {k: list(v) for k, v in sorted(changed.items())},
            "ignored": ignored(core)}


def reload(core) -> None:
    """SIGHUP: the settings a restart would start with now (config.reread: the command
    line's flags, `core.flags`, over the --config file read again); the runtime ones are
    taken, the others it changes logged as waiting for the next restart. A file that does not
    load changes nothing."""
    try:
        new = configs.reread(core.cfg, core.flags)
    except InvalidRequest as exc:
        log.error("SIGHUP: %s; nothing changed", exc)
        return
    fixed = sorted(set(configs.differences(core.cfg, new)) - configs.RUNTIME)
    if _switches_aae(core.cfg, new):
        fixed.append("aae_interval (to or from 0)")
        new = dataclasses.replace(new, aae_interval=core.cfg.aae_interval)
    if not reconfigure(core, new):
        log.info("SIGHUP: %s read again; no runtime setting changed", core.cfg.config)
    if fixed:
        log.warning("SIGHUP: %s changes %s, which take effect at the next restart only",
                    core.cfg.config, ", ".join(fixed))
