"""Node settings, frozen: flag > TOML file > default, each setting documented once here.

Every `zkv-node` flag can also be set in the `--config` TOML file under the same name with
`_` for `-` (DESIGN.md §2.2). Cluster-wide settings (ring_size, n, r, w) only matter on the
node that forms a cluster; joiners adopt the cluster's through the join reply and gossip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from zkv.errors import InvalidRequest

NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# what a running node takes (`zkv config --set`, SIGHUP re-reading --config): limits and
# throttles read where they are used; every other setting needs a restart (addresses, the
# data dir, cluster-wide settings, sync mode, tombstone_grace: what reaping was promised).
# aae_interval changes while it runs between positive values only (0, anti-entropy off, means
# no Merkle trees at all: switching it on or off needs a restart)
RUNTIME = frozenset({"log_level", "min_free_mb", "max_siblings", "sibling_warn",
                     "handoff_batch", "aae_concurrency", "aae_max_keys", "transfer_rate",
                     "transfer_concurrency", "replica_timeout", "sync_interval_ms",
                     "max_connections", "aae_interval"})
SYNC_MODES = ("none", "interval", "always")
SEAL_MODES = ("require", "accept", "off")  # context_seals (zkv/node/seal.py)
# tcp://HOST:PORT with HOST a name, an IPv4 address, '*' or a bracketed IPv6 literal
# (\Z and ASCII: "$" also matches before a final newline, and "\d" takes any Unicode digit;
# libzmq's connect refuses both, and a node given such a seed failed every loop turn)
_ENDPOINT_RE = re.compile(r"^tcp://(?:\[(?P<v6>[0-9A-Fa-f:.%\w-]+)\]|(?P<host>[^\s:/\[\]]+)):"
                          r"(?P<port>[0-9]{1,5})\Z", re.ASCII)
ENDPOINT_RE = _ENDPOINT_RE  # kept for older importers
# a DNS name (labels of letters, digits, hyphens not at either end; underscores too, as
# container names have them) or an IPv4 address: what libzmq's connect takes (it refused
# "-" and names with spaces after the client had made the socket: see zkv.client.sync)
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?\Z", re.ASCII)
MAX_HOST = 253  # bytes of a DNS name (RFC 1035), its final dot not counted
WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "::0", "0:0:0:0:0:0:0:0"})


def parse_endpoint(ep: object) -> tuple[str, int]:
    """(host, port) of tcp://HOST:PORT; IPv6 literals in brackets (tcp://[::1]:7001) come back
    without them. Raises ValueError with a one-line reason otherwise."""
    m = _ENDPOINT_RE.match(ep) if isinstance(ep, str) else None
    if m is None:
        raise ValueError(f"{ep!r}: expected tcp://HOST:PORT (IPv6 as tcp://[::1]:PORT)")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{ep!r}: port {port} is not between 1 and 65535")
    host = m["v6"] if m["v6"] is not None else m["host"]
    if m["v6"] is None and host != "*" and not _HOST_RE.match(host):
        raise ValueError(f"{ep!r}: {host!r} is not a host name or an IPv4 address")
    if len(host.rstrip(".")) > MAX_HOST:
        raise ValueError(f"{str(ep)[:40]!r}...: a host name of {len(host)} characters (at most "
                         f"{MAX_HOST})")
    if m["v6"] is not None:
        import ipaddress

        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{ep!r}: {host!r} is not an IPv6 address") from None
    return host, port


def is_wildcard(ep: str) -> bool:
    """True for an endpoint that binds every interface (tcp://0.0.0.0:P, tcp://*:P, tcp://[::]:P)."""
    try:
        host, _ = parse_endpoint(ep)
    except ValueError:
        return False
    return host in WILDCARD_HOSTS


def endpoint_problem(ep: object) -> str | None:
    try:
        parse_endpoint(ep)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class NodeConfig:
    id: str  # unique, stable node name; the DVV entry key of this node's writes
    listen: str  # tcp://HOST:PORT the ROUTER serving clients and peers binds (may be 0.0.0.0)
    gossip: str  # tcp://HOST:PORT the PUB socket of the gossip channel binds
    data_dir: str  # where the LogStore and cluster.json live
    seed: tuple[str, ...] = ()  # --listen endpoints of running nodes to join through
    rack: str = "default"  # failure domain; preference lists spread over racks
    config: str | None = None  # the TOML file these settings were read from
    # the endpoints peers and clients are told to use (the Member record); needed when
    # listen/gossip bind a wildcard or an address others cannot reach (NAT, containers).
    # None: same as listen; advertise_gossip None: gossip, or advertise's host + gossip's port
    advertise: str | None = None
    advertise_gossip: str | None = None
    metrics_port: int = 0  # /metrics, /healthz, /readyz over HTTP on metrics_host:PORT; 0 = off
    keys: str | None = None  # --keys DIR (from `zkv keygen DIR`): CurveZMQ on every socket,
    # peers must hold the cluster key and clients a key listed in DIR/clients; None: plain text
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 to let Prometheus on other machines scrape
    # cluster-wide (taken from the first node, carried by gossip)
    ring_size: int = 256  # Q: partitions, power of two, fixed at cluster creation
    n: int = 3  # replicas per key
    r: int = 2  # default read quorum
    w: int = 2  # default write quorum
    # storage
    sync: str = "interval"  # none | interval | always (always: fsync before acking, per loop turn)
    sync_interval_ms: int = 50
    max_key_size: int = 64 * 1024
    max_value_size: int = 16 * 1024 * 1024
    # writes are refused (reads served) while less than this is free on the data dir's file
    # system: a full disk then never fails a write already acknowledged (LogStore.check_space)
    min_free_mb: int = 64
    # connections to --listen (clients and peers): past this many the idlest is shut down;
    # each costs ~30 KB of libzmq state (issue 13), lowered to fit the fd limit (ulimit -n)
    max_connections: int = 10_000
    # timing (seconds)
    replica_timeout: float = 1.0  # a replica slower than this is skipped (QuorumError if too few)
    gossip_interval: float = 0.2  # heartbeat period
    down_after: float = 2.0  # no heartbeat for this long -> down
    sibling_warn: int = 25  # log + count a key with more siblings than this
    # a client write that would leave its key with more siblings than this is refused
    # (InvalidRequest; what replicas merge is never refused): blind writes to one key pile
    # up siblings that every later read and write of it carries. 0: no limit
    max_siblings: int = 100
    # with keys: contexts given to clients are sealed (a keyed MAC) and a client write's context
    # must carry this cluster's seal for its key (zkv/node/seal.py): require | accept | off
    # (accept and off: for a rolling upgrade from a version without seals)
    context_seals: str = "require"
    # background work (hinted handoff, anti-entropy, reaping), in small steps off the hot path
    background_interval: float = 0.05  # how often the reactor looks for background work
    handoff_batch: int = 200  # hints delivered per owner per step (throttle)
    aae_interval: float = 0.2  # seconds between planning rounds of Merkle exchanges; 0 = off
    # (then no trees are kept, nothing is exchanged and tombstones are never reaped)
    aae_concurrency: int = 8  # Merkle exchanges in flight at once (the IO/bandwidth budget;
    # an exchange that finds differences is ~7 sequential round trips, so healing speed grows
    # with it: 5 s of missed writes healed in 5.9 s at 2, 2.2 s at 8 on the dev machine)
    aae_max_keys: int = 1000  # keys pushed/pulled per exchange
    tombstone_grace: float = 60.0  # seconds a tombstone outlives agreement of all owners
    # membership changes (issue 11)
    auto_commit: bool = True  # cluster setting (first node's): commit staged changes at once
    transfer_rate: int = 32 * 1024 * 1024  # bytes/s of transfers + hints + AAE + compaction
    transfer_concurrency: int = 2  # partitions received at once by one node
    settle: float = 5.0  # seconds all members agree on a change before old owners drop data
    log_level: str = "INFO"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        problems = _type_problems(self)  # (first: the checks below compare values)
        if problems:
            raise InvalidRequest("invalid node configuration: " + "; ".join(problems))
        if not NODE_ID_RE.match(self.id or ""):
            problems.append(f"--id {self.id!r}: 1-64 characters of [A-Za-z0-9_.:-]")
        for name in ("listen", "gossip", "advertise", "advertise_gossip"):
            value = getattr(self, name)
            if value is None and name.startswith("advertise"):
                continue
            flag = "--" + name.replace("_", "-")
            why = endpoint_problem(value)
            if why:
                problems.append(f"{flag} {why}")
            elif name.startswith("advertise") and is_wildcard(value):
                problems.append(f"{flag} {value}: must be an address peers can reach, "
                                "not a wildcard")
        if not problems:
            if is_wildcard(self.listen) and self.advertise is None:
                problems.append(f"--listen {self.listen} binds every interface, so peers cannot "
                                "be told where to reach this node: set --advertise "
                                "tcp://THIS_HOST:PORT (the address peers and clients use)")
            if is_wildcard(self.gossip) and self.advertised_gossip is None:
                problems.append(f"--gossip {self.gossip} binds every interface: set "
                                "--advertise-gossip tcp://THIS_HOST:PORT (or --advertise)")
        if not problems:
            problems += self._port_clashes()
        for s in self.seed:
            why = endpoint_problem(s)
            if why:
                problems.append(f"--seed {why}")
            elif is_wildcard(s):
                problems.append(f"--seed {s}: a wildcard is not an address to connect to")
        if not 0 <= self.metrics_port <= 65535:
            problems.append(f"--metrics-port {self.metrics_port}: between 0 (off) and 65535")
        if not self.data_dir:
            problems.append("--data-dir is required")
        elif os.path.exists(self.data_dir) and not os.path.isdir(self.data_dir):
            problems.append(f"--data-dir {self.data_dir}: not a directory")
        q = self.ring_size
        if q < 2 or q > 65536 or q & (q - 1):
            problems.append(f"ring_size {q}: a power of two between 2 and 65536")
        if not 1 <= self.n <= 16:
            problems.append(f"n {self.n}: between 1 and 16")
        for name in ("r", "w"):
            if not 1 <= getattr(self, name) <= self.n:
                problems.append(f"{name} {getattr(self, name)}: between 1 and n={self.n}")
        if not 1024 <= self.transfer_rate <= 1 << 40:
            problems.append(f"transfer_rate {self.transfer_rate}: between 1024 and {1 << 40} "
                            "bytes/s")
        if not 1 <= self.transfer_concurrency <= 64:
            problems.append(f"transfer_concurrency {self.transfer_concurrency}: between 1 and 64")
        if not 16 <= self.max_connections <= 1_000_000:
            problems.append(f"max_connections {self.max_connections}: between 16 and 1000000")
        if not 0 <= self.min_free_mb <= 1 << 30:
            problems.append(f"min_free_mb {self.min_free_mb}: between 0 and {1 << 30}")
        if not 0 <= self.max_siblings <= 1_000_000:
            problems.append(f"max_siblings {self.max_siblings}: between 0 (no limit) and "
                            "1000000")
        if not 0 <= self.sibling_warn <= 1_000_000:
            problems.append(f"sibling_warn {self.sibling_warn}: between 0 and 1000000")
        if self.context_seals not in SEAL_MODES:
            problems.append(f"context_seals {self.context_seals!r}: one of "
                            f"{', '.join(SEAL_MODES)}")
        if self.sync not in SYNC_MODES:
            problems.append(f"sync {self.sync!r}: one of {', '.join(SYNC_MODES)}")
        if self.log_level not in LOG_LEVELS:
            problems.append(f"log_level {self.log_level!r}: one of {', '.join(LOG_LEVELS)}")
        for name, lo, hi in (("handoff_batch", 0, 100_000), ("aae_concurrency", 0, 4096),
                             ("aae_max_keys", 1, 1_000_000), ("sync_interval_ms", 1, 3_600_000)):
            if not lo <= getattr(self, name) <= hi:
                problems.append(f"{name} {getattr(self, name)}: between {lo} and {hi}")
        if not 0 < self.replica_timeout <= 3600:
            problems.append(f"replica_timeout {self.replica_timeout}: above 0, at most 3600 s")
        if problems:
            raise InvalidRequest("invalid node configuration: " + "; ".join(problems))

    def _port_clashes(self) -> list[str]:
        """The ports this node would bind twice (--listen, --gossip, --metrics-port on
        --metrics-host): said up front, not as the second bind's "Address already in use"
        after the data dir was opened."""
        binds = [("--listen", *parse_endpoint(self.listen)),
                 ("--gossip", *parse_endpoint(self.gossip))]
        if self.metrics_port:
            binds.append(("--metrics-port", self.metrics_host, self.metrics_port))
        problems = []
        for i, (flag, host, port) in enumerate(binds):
            for other, ohost, oport in binds[:i]:
                if port == oport and (host == ohost or host in WILDCARD_HOSTS
                                      or ohost in WILDCARD_HOSTS):
                    problems.append(f"{flag} and {other} both bind port {port} on {host}: "
                                    "each needs a port of its own")
        return problems

    @property
    def advertised_listen(self) -> str:
        """The endpoint peers and clients connect to (the Member record's listen)."""
        return self.advertise or self.listen

    @property
    def advertised_gossip(self) -> str | None:
        """The gossip endpoint peers subscribe to (the Member record's gossip)."""
        if self.advertise_gossip:
            return self.advertise_gossip
        if not is_wildcard(self.gossip):
            return self.gossip
        if self.advertise:  # the advertised host with the gossip port
            host, _ = parse_endpoint(self.advertise)
            _, port = parse_endpoint(self.gossip)
            return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        return None


FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig) if f.name != "extra"}


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false"}
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number with a fraction",
               str: "a string", list: "a list", tuple: "a list", dict: "a table"}


def _type_problems(cfg: NodeConfig) -> list[str]:
    """Each setting whose value is not of its type (from a --config file: TOML's types), as
    "NAME VALUE: EXPECTED, not GOT". A number of seconds given as an integer becomes a float
    (replica_timeout = 2). Without this a string reached a comparison ("'<' not supported
    between instances of 'int' and 'str'", no setting named) and true or 50.5 passed as
    integers."""
    problems = []
    for f in dataclasses.fields(cfg):
        name, value, declared = f.name, getattr(cfg, f.name), str(f.type)
        if name == "extra":
            continue
        if declared == "tuple[str, ...]":
            ok = isinstance(value, (tuple, list)) and all(isinstance(x, str) for x in value)
            expected = "a list of strings"
        elif declared in ("str", "str | None"):
            ok = isinstance(value, str) or (value is None and declared != "str")
            expected = "a string"
        elif declared == "bool":
            ok, expected = isinstance(value, bool), "true or false"
        elif declared == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            expected = "an integer"
        elif declared == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            expected = "a number"
            if ok and isinstance(value, int):
                object.__setattr__(cfg, name, float(value))
        else:  # (a field of a type not checked here)
            continue
        if not ok:
            got = _TYPE_NAMES.get(type(value), type(value).__name__)
            if isinstance(value, (tuple, list)):
                odd = next((x for x in value if not isinstance(x, str)), None)
                got = f"a list holding {_TYPE_NAMES.get(type(odd), type(odd).__name__)}"
            try:  # (as the TOML file has it: "2", true, [1])
                shown = json.dumps(list(value) if isinstance(value, tuple) else value)
            except (TypeError, ValueError):
                shown = repr(value)
            problems.append(f"{name} = {shown}: {expected}, not {got}")
    return problems


def parse_setting(name: str, text: str) -> object:
    """The value of setting `name` from its text (as `zkv config --set NAME=VALUE` gives it),
    typed as the setting's default is; InvalidRequest for an unknown name or a bad value."""
    f = FIELDS.get(name)
    if f is None:
        near = difflib.get_close_matches(name, list(FIELDS), n=3)
        raise InvalidRequest(f"unknown setting {name!r}"
                             + (f" (did you mean {', '.join(near)}?)" if near else "")
                             + "; `zkv config` lists the settings")
    kind = type(f.default) if f.default is not dataclasses.MISSING else str
    try:
        if kind is bool:
            if text not in ("true", "false"):
                raise ValueError("true or false")
            return text == "true"
        if kind in (int, float):
            return kind(text)
    except ValueError:
        raise InvalidRequest(f"{name}={text!r}: not {_KIND_NAMES.get(kind, kind.__name__)}"
                             ) from None
    return text


def differences(old: NodeConfig, new: NodeConfig) -> dict[str, tuple[Any, Any]]:
    """name -> (old, new) of every setting `new` changes."""
    return {name: (getattr(old, name), getattr(new, name)) for name in FIELDS
            if getattr(old, name) != getattr(new, name)}


def load(flags: dict) -> NodeConfig:
    """Merge: flags (None = not given) > TOML file named by flags['config'] > defaults."""
    merged: dict = {}
    path = flags.get("config")
    if path:
        try:
            with open(path, "rb") as fh:
                filed = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidRequest(f"cannot read config file {path}: {exc}") from None
        unknown = sorted(set(filed) - set(FIELDS))
        if unknown:
            raise InvalidRequest(f"unknown setting(s) in {path}: {', '.join(unknown)}")
        merged.update(filed)
    for k, v in flags.items():
        if v is not None and k in FIELDS:
            if k == "auto_commit" and v in ("true", "false"):  # the flag's text (the file's
                v = v == "true"  # own value is TOML's true or false: "yes" is refused)
            merged[k] = v
    if "seed" in merged:
        seeds = merged["seed"]
        merged["seed"] = (seeds,) if isinstance(seeds, str) else tuple(seeds)
    missing = [k for k in ("id", "listen", "gossip", "data_dir") if k not in merged]
    if missing:
        raise InvalidRequest(
            "missing required setting(s): " + ", ".join("--" + m.replace("_", "-") for m in missing)
        )
    try:
        return NodeConfig(**merged)
    except TypeError as exc:
        raise InvalidRequest(f"invalid node configuration: {exc}") from None


def save_settings(path: str, values: dict[str, Any]) -> None:
    """Set `values` (name -> value) in the TOML file at `path` (`zkv config --save`): every
    other line, comments and layout included, stays as it was (tomlkit). Written atomically
    to the file a symlink names (temp file beside it, fsync, rename, fsync of the directory),
    with the old file's permissions, so a crash leaves the old file or the new one, never a
    torn one. InvalidRequest (nothing written) if the file cannot be read, parsed or
    replaced."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    from zkv.storage.segment import fsync_dir

    real = os.path.realpath(path)
    tmp = f"{real}.{os.getpid()}.tmp"
    try:
        with open(real, encoding="utf-8") as fh:
            doc = tomlkit.parse(fh.read())
        for name, value in values.items():
            doc[name] = value
        text = tomlkit.dumps(doc)
        tomllib.loads(text)  # (what the next start reads: refuse to write one it cannot)
        mode = os.stat(real).st_mode & 0o7777
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as fh:
            fh.write(text.encode())  # (a buffered file: written whole)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, real)
        fsync_dir(os.path.dirname(real))
    except (OSError, UnicodeDecodeError, TOMLKitError, tomllib.TOMLDecodeError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InvalidRequest(f"cannot save to config file {path}: {exc}") from None


def given(flags: dict) -> set[str]:
    """The settings `flags` (the command line's, None = not given) or the --config file it
    names set, whatever their values (a file that does not load gives none: `load` said so)."""
    names = {k for k, v in flags.items() if v is not None and k in FIELDS}
    if flags.get("config"):
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
            with open(flags["config"], "rb") as fh:
                names.update(k for k in tomllib.load(fh) if k in FIELDS)
    return names


def reread(current: NodeConfig, flags: dict | None) -> NodeConfig:
    """The settings a restart would start with now (SIGHUP): `flags` (the command line's;
    None: those of `current` that cannot change while running) over the --config file read
    again over the defaults. InvalidRequest if there is no file or it does not load."""
    if not current.config:
        raise InvalidRequest("no --config file to read again")
    if flags is None:  # (a node embedded without its command line)
        flags = {name: getattr(current, name) for name in FIELDS if name not in RUNTIME}
    return load(flags)
