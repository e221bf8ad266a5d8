"""Namespace registry: which namespaces exist and their N, default R/W and conflict mode.

Pure (no I/O, no clock): the node hands it the member count, an HLC timestamp and its node
id when creating, feeds it registries received by gossip, and saves `to_builtins()` with
cluster.json. Contract: DESIGN.md 2.6.

Rules (decided here, issue 15):
- A name is 1..64 of [A-Za-z0-9_.-] (not "." or ".."); at most MAX_NAMESPACES exist.
- 1 <= n <= min(members, 16) at creation; 1 <= r, w <= n; r and w default to a majority of
  n (n // 2 + 1); conflicts is "siblings" (default) or "lww". Bad settings raise
  `zkv.errors.InvalidRequest` naming every problem.
- N and the conflict mode are fixed at creation: both are part of every stored key (below),
  and N cannot change without moving data. The default r and w and the ttl can be altered
  (`Registry.alter`, `zkv namespace alter`): the altered version carries `changed`, the HLC
  timestamp of the alter, and of two versions of one create the later alter wins everywhere
  (rank), so the registry stays a join of its versions. Per-request r/w still override the
  defaults (`Namespace.quorums`).
- `pr`/`pw` (0 = none, at most n) are the default primary quorums of its gets and writes
  (zkv/node/quorum.py): a request's own pr or pw replaces them, as r and w do; a request
  cannot ask for none in a namespace that has them (alter them to 0 for that).
- `ttl` (seconds, 0 = none, at most MAX_TTL) is how long a value lives after its write, and
  needs `conflicts="lww"`: a value's age is its write's HLC stamp, which only lww values carry
  (zkv/node/expiry.py applies it). An alter that lowers or sets it applies to every value at
  once (one written long enough ago expires now). One that raises or removes it never brings
  back a value that had expired: `expired_before` (ms, wall clock) says that every value
  written at or before it has expired, whatever the ttl (the alter's time minus the old ttl;
  a replica whose sweep had not dropped such a value yet would serve it again, and read
  repair spread it).
- A write may carry its own ttl (`put(..., ttl=)`, seconds) in a namespace whose values have
  room for one (`write_ttl`: every lww namespace created once every member serves
  FEATURE_WRITE_TTL) and whose own ttl is at least as long (`check_write_ttl`). It is not
  served after its ttl, but every copy stays stored until the namespace's ttl expires it:
  until then it still hides the older values of its key that a lagging replica may hold (as
  a Cassandra cell that expired becomes a tombstone). Past the namespace's ttl dropping it is
  safe, as every older write of the key has expired by the namespace's rule too.
- `drop` ends a namespace (as Cassandra's DROP TABLE) and `truncate` empties it, keeping its
  settings (as TRUNCATE, Redis' FLUSHDB): both need every member to serve FEATURE_DROP. A
  drop keeps the name's last version with `dropped` set (the HLC timestamp of the drop: a
  tombstone that gossip carries to every node, which the registry keeps for good), and a
  create of that name afterwards, or a truncate, makes the name's next *generation*
  (`gen` + 1). A stored key names its generation (below), so every key of an older
  generation, or of a dropped one, is *dead* (`is_dead`): never served nor stored again
  (a write fan-out, hint, transfer or exchange that brings one is a no-op), dropped from
  each node's store and hint store by the background sweep (zkv/node/expiry.py), and left
  out of listings. A key written to a node that has not heard of the drop yet is stored
  there until it does, then purged: a write that races a drop may be acknowledged and lost,
  as in Cassandra. Of a name's versions the highest generation ranks first, then a dropped
  one before the live one of the same create, so registries still converge.
- `create` with the same name and the same settings is idempotent (returns the existing
  one); with different settings it is refused.
- Two nodes may create one name concurrently with different settings before gossip meets.
  Every node keeps, per name, the version with the lowest rank (created HLC timestamp,
  creator node id as UTF-8, then the settings); `merge` returns a `Conflict` for each loser
  it saw so the node can log and count it. "Lowest rank per name" is a join (min is
  commutative, associative, idempotent), so registries converge whatever the gossip order.
- "default" is built from the cluster settings with created=0 and creator="", so it ranks
  below any created namespace and every node of one cluster builds the identical one.

Gossip encoding (msgpack via msgspec; bounded by `max_bytes` and MAX_NAMESPACES):

    [REGISTRY_VERSION: uint, [namespace, ...]]      # namespaces sorted by name, unique
    namespace = {"name": str, "n": uint, "r": uint, "w": uint, "conflicts": str,
                 "created": uint (HLC u64, zkv.hlc layout), "creator": str, "ttl": uint,
                 "changed": uint (HLC u64 of the last alter, 0: none),
                 "expired_before": uint (ms since the Unix epoch, 0: none),
                 "write_ttl": bool (its values have room for a ttl of their own),
                 "pr": uint, "pw": uint (default primary quorums, 0: none),
                 "gen": uint (its generation: 0 until a drop or truncate, <= MAX_GEN),
                 "dropped": uint (HLC u64 of its drop, 0: live)}

("ttl" was added later: a node of an older version ignores it and relays the namespace with
ttl 0. Of two copies of one create (same created and creator), the higher ttl ranks lower,
so such a relay never takes a TTL away. "changed" and "expired_before" came with alter: a
relay by an older node loses them, and the lowest changed ranks last, so it never undoes an
alter; an alter is refused while any member runs such a version, which would not converge.
"write_ttl" is set only when every member serves it, and ranks first when true. "pr" and
"pw" likewise: set (by a create or an alter) only while every member serves FEATURE_PRIMARY,
and of two copies of one version the higher ranks first, so a relay by an older node, which
loses them, never takes them away. "gen" and "dropped" are made only while every member
serves FEATURE_DROP, and a node of an older version cannot join once a registry holds them.)

`to_builtins()` is the same list of dicts for JSON (cluster.json); unknown fields are
ignored on decode so a newer node's extra fields do not break an older one.

Storage keys (how a namespaced key is stored, issue 15; `storage_key` / `key_settings`):

    default namespace:  the user key itself (data written before namespaces stays readable)
    any other:          b"\x00" + bytes([n, mode]) + name (ASCII) + gen + b"\x00" + user key
                        mode 0 = siblings, 1 = lww, 2 = lww with room for a write's ttl
                        gen: b"" for generation 0, else b"#" + its decimal digits ("#"
                        is no name character, so a name and a generation never blur)

A stored key names its namespace's N and conflict mode, so every replica, hint, Merkle tree
and reaping decision works from the stored key alone, without the registry: a replica that
has not heard of a namespace yet still stores, collapses (lww) and exchanges its keys with
the right owners. The partition is that of the stored key, and the owners are the first N
nodes of that partition's walk (`Membership.ring(n)`). Because of the prefix, keys of the
default namespace may not begin with byte 0x00 (refused with InvalidRequest), and a
namespaced key may be at most max_key_size - len(prefix) bytes (the name's length + 4, and
the generation's digits + 1 after a truncate). Two nodes creating one
name concurrently with different settings: the losing version's writes stay stored under
their own prefix (replicated with their own N) but are no longer reachable by name.

Stored values (what a coordinator stores for a client's value; readers strip the head,
`Namespace.head`):

    siblings (mode 0):       the value itself
    lww (mode 1):            stamp (8 bytes, the write's HLC timestamp, big-endian) + value
    lww, write_ttl (mode 2): stamp (8) + ttl (4 bytes, big-endian seconds; 0: the write has
                             none of its own, the namespace's applies) + value
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator
from typing import TypeGuard

import msgspec

from zkv.errors import InvalidRequest

REGISTRY_VERSION = 1
DEFAULT = "default"
MODES = ("siblings", "lww")
MAX_N = 16
MAX_NAMESPACES = 1024
MAX_NODE_ID_BYTES = 255
MAX_TTL = 10 * 366 * 86400  # seconds: ten years
MAX_GEN = (1 << 32) - 1  # a name's generations (drop + create, truncate)
DEFAULT_MAX_BYTES = 1 << 20  # an encoded registry; ~70 bytes a namespace
STAMP_BYTES = 8  # an lww value's head: its write's HLC stamp
TTL_BYTES = 4  # ... then, in a write_ttl namespace, the write's own ttl in seconds (0: none)
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
_MAX_U64 = (1 << 64) - 1


class Namespace(msgspec.Struct, frozen=True, kw_only=True):
    """One namespace's settings (immutable)."""

    name: str
    n: int
    r: int
    w: int
    conflicts: str = "siblings"
    created: int = 0  # HLC timestamp of the create (zkv.hlc); 0 for "default"
    creator: str = ""  # node id that created it; "" for "default"
    ttl: int = 0  # seconds a value lives after its write (lww only); 0: no expiry
    changed: int = 0  # HLC timestamp of the last alter (r, w, ttl); 0: as created
    expired_before: int = 0  # ms: a value written at or before it has expired (alter); 0: none
    write_ttl: bool = False  # lww values carry room for a write's own ttl (stored-key mode 2)
    pr: int = 0  # default primary quorums of its gets and writes (0: none; README, "Strict
    pw: int = 0  # quorums"): made or altered only while every member serves FEATURE_PRIMARY
    gen: int = 0  # generation: a create after a drop, or a truncate, makes the next one
    dropped: int = 0  # HLC timestamp of its drop (0: live); the registry keeps the tombstone

    @property
    def lww(self) -> bool:
        return self.conflicts == "lww"

    @property
    def head(self) -> int:
        """Bytes before the client's value in a stored value (0: siblings; the module
        docstring's "Stored values")."""
        if self.conflicts != "lww":
            return 0
        return STAMP_BYTES + TTL_BYTES if self.write_ttl else STAMP_BYTES

    def check_write_ttl(self, ttl: object) -> None:
        """InvalidRequest unless a write of this namespace may carry this ttl of its own
        (seconds): the namespace keeps every copy of a write until its own ttl has passed,
        so that an expired write still hides the older values a lagging replica holds."""
        check_ttl_seconds(ttl)
        assert isinstance(ttl, int)
        if self.conflicts != "lww":
            raise InvalidRequest(f"ttl={ttl}: a write's ttl needs an lww namespace (a value's "
                                 f"age is its write's timestamp); {self.name!r} keeps siblings")
        if not self.write_ttl:
            raise InvalidRequest(f"ttl={ttl}: namespace {self.name!r} was created when a zkv "
                                 f"version without per-write ttls ran in the cluster; its "
                                 f"values live the namespace's ttl (create a new namespace)")
        if not self.ttl:
            raise InvalidRequest(
                f"ttl={ttl}: namespace {self.name!r} has no ttl, so its writes carry none "
                f"(zkv namespace alter {self.name} --ttl D gives it one: a write's own ttl may "
                "be at most that)")
        if ttl > self.ttl:
            raise InvalidRequest(
                f"ttl={ttl}: namespace {self.name!r} keeps a write at most its own ttl "
                f"({self.ttl}s), and a write's ttl may not be longer: an expired write must "
                f"stay stored until then, hiding older copies (zkv namespace alter {self.name} "
                "--ttl D raises it)")

    def settings(self) -> tuple[int, int, int, str, int, int, int]:
        """What a create asks for; two versions with equal settings are the same namespace."""
        return self.n, self.r, self.w, self.conflicts, self.ttl, self.pr, self.pw

    def rank(self) -> tuple:
        """Total order among versions of one name: the lowest is kept everywhere. Of one
        create's versions the last alter (-changed); -ttl and -expired_before last: a copy
        relayed by an older node, which lost those fields, never wins over the original.
        The highest generation first, and a dropped version before the live one: a drop
        and what follows it win over every version they ended."""
        return (-self.gen, not self.dropped, self.created, self.creator.encode("utf-8"),
                -self.changed,
                (self.n, self.r, self.w, self.conflicts), -self.ttl, -self.expired_before,
                not self.write_ttl, -self.pr, -self.pw, self.dropped)

    @property
    def expires(self) -> bool:
        """Do any of its values expire (a ttl, or values an alter left expired)?"""
        return bool(self.ttl or self.expired_before)

    def describe(self) -> str:
        """n=3 r=2 w=2 lww ttl=60s: the settings in one line (logs, conflicts)."""
        return (f"n={self.n} r={self.r} w={self.w}"
                + (f" pr={self.pr}" if self.pr else "") + (f" pw={self.pw}" if self.pw else "")
                + f" {self.conflicts}" + (f" ttl={self.ttl}s" if self.ttl else "")
                + (" (dropped)" if self.dropped else ""))

    def quorums(self, r: int | None = None, w: int | None = None) -> tuple[int, int]:
        """Per-request (r, w): None or 0 means this namespace's default; 1..n otherwise."""
        r = r or self.r
        w = w or self.w
        bad = [f"{k}={v} (must be 1..n={self.n})" for k, v in (("r", r), ("w", w))
               if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= self.n]
        if bad:
            raise InvalidRequest(f"namespace {self.name!r}: " + ", ".join(bad))
        return r, w


class Conflict(msgspec.Struct, frozen=True):
    """Two nodes created one name with different settings; `lost` lost to `kept`."""

    name: str
    kept: Namespace
    lost: Namespace

    def __str__(self) -> str:
        k, d = self.kept, self.lost
        return (f"namespace {self.name!r}: kept {k.describe()} "
                f"(created by {k.creator or 'the cluster'}), dropped {d.describe()} "
                f"(created by {d.creator or 'the cluster'})")


def check_ttl_seconds(ttl: object) -> None:
    """InvalidRequest unless `ttl` is a write's own ttl in range (whole seconds, 1..MAX_TTL);
    what it may be in a namespace is Namespace.check_write_ttl's."""
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
        raise InvalidRequest(f"ttl={ttl!r}: must be a whole number of seconds between 1 and "
                             f"{MAX_TTL}")


def valid_name(name: object) -> bool:
    """Does `name` follow the namespace name syntax?"""
    return isinstance(name, str) and bool(_NAME.match(name)) and name not in (".", "..")


def problems(name: object, n: object, r: object, w: object, conflicts: object,
             members: int | None = None, ttl: object = 0, pr: object = 0,
             pw: object = 0) -> list[str]:
    """Every reason these settings are invalid ([] when valid). `members`: check n against
    the cluster size too (creation only)."""
    out = []
    if not valid_name(name):
        out.append(f"name {name!r}: 1 to 64 characters of A-Z a-z 0-9 _ . - (not . or ..)")

    def is_int(v: object) -> TypeGuard[int]:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(n) or not 1 <= n <= MAX_N:
        out.append(f"n={n!r}: must be between 1 and {MAX_N}")
    elif members is not None and n > members:
        out.append(f"n={n}: the cluster has only {members} member(s)")
    for k, v in (("r", r), ("w", w)):
        if not is_int(v) or not 1 <= v <= (n if is_int(n) and 1 <= n <= MAX_N else MAX_N):
            out.append(f"{k}={v!r}: must be between 1 and n={n!r}")
    for k, v in (("pr", pr), ("pw", pw)):
        if not is_int(v) or not 0 <= v <= (n if is_int(n) and 1 <= n <= MAX_N else MAX_N):
            out.append(f"{k}={v!r}: must be between 0 (none) and n={n!r}")
    if conflicts not in MODES:
        out.append(f"conflicts={conflicts!r}: must be one of {', '.join(MODES)}")
    if not is_int(ttl) or not 0 <= ttl <= MAX_TTL:
        out.append(f"ttl={ttl!r}: must be between 0 (no expiry) and {MAX_TTL} seconds")
    elif ttl and conflicts != "lww":
        out.append(f"ttl={ttl}: needs conflicts=lww (a value's age is its write's timestamp, "
                   f"which only lww values carry)")
    return out


def _raise(what: str, found: list[str]) -> None:
    if found:
        raise InvalidRequest(f"{what}: " + "; ".join(found))


def make(name: str, n: int, r: int | None = None, w: int | None = None,
         conflicts: str = "siblings", *, members: int, created: int,
         creator: str, ttl: int = 0, write_ttl: bool = False, pr: int = 0,
         pw: int = 0) -> Namespace:
    """A validated new namespace (r, w default to a majority of n; `write_ttl`: if lww, its
    values have room for a write's own ttl)."""
    if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
        r = n // 2 + 1 if r is None else r
        w = n // 2 + 1 if w is None else w
    _raise(f"cannot create namespace {name!r}",
           problems(name, n, r, w, conflicts, members, ttl, pr, pw))
    _check_origin(created, creator, InvalidRequest)
    assert r is not None and w is not None  # problems() refused anything else
    return Namespace(name=name, n=n, r=r, w=w, conflicts=conflicts, created=created,
                     creator=creator, ttl=ttl, write_ttl=write_ttl and conflicts == "lww",
                     pr=pr, pw=pw)


def default_namespace(n: int, r: int, w: int, conflicts: str = "siblings") -> Namespace:
    """The "default" namespace from the cluster settings (identical on every node)."""
    _raise("bad cluster settings for the default namespace",
           problems(DEFAULT, n, r, w, conflicts))
    return Namespace(name=DEFAULT, n=n, r=r, w=w, conflicts=conflicts)


def _check_origin(created: object, creator: object, exc: type[Exception]) -> None:
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created <= _MAX_U64:
        raise exc(f"created={created!r}: must be an HLC timestamp (0..2**64-1)")
    if not isinstance(creator, str) or len(creator.encode("utf-8")) > MAX_NODE_ID_BYTES:
        raise exc(f"creator={creator!r}: must be a node id of at most 255 UTF-8 bytes")


_DECODER = msgspec.msgpack.Decoder(tuple[int, list[Namespace]])

# ---- storage keys (see the module docstring) -------------------------------------------------
MODE_BYTE = {"siblings": 0, "lww": 1}


def prefix(ns: Namespace) -> bytes:
    """What precedes a user key in the stored key (b"" for the default namespace)."""
    if ns.name == DEFAULT:
        return b""
    mode = 2 if ns.write_ttl else MODE_BYTE[ns.conflicts]
    gen = b"#%d" % ns.gen if ns.gen else b""
    return b"\x00" + bytes((ns.n, mode)) + ns.name.encode("ascii") + gen + b"\x00"


def version_tag(ns: Namespace) -> int:
    """A number (never 0) naming this version of a namespace: its generation, its create
    (HLC timestamp and creator) and its last alter. A client sends the tag of the version it
    cached with each owner read and key listing (wire.Read.ns_ver, Keys.ns_ver), and a node
    holding another version does not answer from its store: the client would read the copies
    with the settings of a version that has ended (an lww stamp taken for a value, a sibling
    taken for a stamp, another ttl). Built from these fields alone, not the whole struct, so
    a version with fields a client's zkv does not know still has the same tag there."""
    return zlib.crc32(b"%d %d %s %d" % (ns.gen, ns.created, ns.creator.encode("utf-8"),
                                        ns.changed)) or 1


def storage_key(ns: Namespace, key: bytes) -> bytes:
    """The key under which `key` of namespace `ns` is stored, routed and replicated."""
    return prefix(ns) + key if ns.name != DEFAULT else key


def key_settings(skey: bytes) -> tuple[int, bool] | None:
    """(n, lww) of a namespaced stored key; None for a key of the default namespace."""
    if len(skey) < 5 or skey[0] != 0 or not 1 <= skey[1] <= MAX_N or skey[2] > 2:
        return None
    end = skey.find(b"\x00", 3)
    if end < 4:
        return None
    return skey[1], skey[2] != 0


def is_lww(skey: bytes) -> bool:
    """Is this stored key in an lww namespace? (Its prefix says so.)"""
    if skey[:1] != b"\x00":
        return False
    ks = key_settings(skey)
    return ks is not None and ks[1]


def head_of_key(skey: bytes) -> int:
    """Bytes before the client's value in a stored value of this stored key (Namespace.head,
    from the key's mode byte: tools and tests that read stores)."""
    if skey[:1] != b"\x00" or key_settings(skey) is None:
        return 0
    return (0, STAMP_BYTES, STAMP_BYTES + TTL_BYTES)[skey[2]]


def split_key(skey: bytes) -> tuple[str, bytes]:
    """(namespace name, user key) of a stored key (debug and tests)."""
    if key_settings(skey) is None:
        return DEFAULT, skey
    end = skey.find(b"\x00", 3)
    return skey[3:end].split(b"#", 1)[0].decode("ascii", "replace"), skey[end + 1:]


def generation(skey: bytes) -> tuple[bytes, int] | None:
    """(namespace name as bytes, generation) of a namespaced stored key; None for a key of
    the default namespace or one whose generation is malformed."""
    if key_settings(skey) is None:
        return None
    end = skey.find(b"\x00", 3)
    name, sep, gen = skey[3:end].partition(b"#")
    if not sep:
        return name, 0
    if not gen.isdigit() or len(gen) > 10 or gen[:1] == b"0":
        return None
    return name, int(gen)


class Registry:
    """Every namespace this node knows; merge-by-gossip keeps the lowest rank per name."""

    def __init__(self, default: Namespace, namespaces: Iterable[Namespace] = ()) -> None:
        if default.name != DEFAULT:
            raise ValueError(f"the default namespace must be named {DEFAULT!r}")
        # every name's winning version, the dropped ones (tombstones) too: what gossip carries
        self._all: dict[str, Namespace] = {DEFAULT: default}
        self._ns: dict[str, Namespace] = {DEFAULT: default}  # ... the live ones (updated in place)
        # the live namespace named `name` (a str), or None: the dict's own get, a C call where
        # a request names its namespace (`get` says why an unknown name is refused)
        self.find = self._ns.get
        # stored-key prefix (namespaces.prefix) -> (ttl ms, expired_before ms), of the
        # namespaces whose values expire (`expiry_of`)
        self.expiry_ms: dict[bytes, tuple[int, int]] = {}
        # name (ASCII bytes) -> how many of its generations ended (every one below it is dead:
        # `is_dead`; its generation, + 1 if dropped), of the names that have any; empty until
        # a drop or truncate
        self.dead_gens: dict[bytes, int] = {}
        self._dead_memo: dict[bytes, bool] = {}  # stored-key prefix -> is_dead's verdict
        self.tags: dict[str, int] = {}  # live name -> version_tag of its version here
        self.merge(namespaces)

    @classmethod
    def for_cluster(cls, n: int, r: int, w: int) -> Registry:
        return cls(default_namespace(n, r, w))

    # -- reading
    def get(self, name: str | None = None) -> Namespace:
        """The live namespace `name` (None: "default"); unknown or dropped raises
        InvalidRequest."""
        name = DEFAULT if name is None else name
        ns = self._ns.get(name) if isinstance(name, str) else None
        if ns is None:
            if isinstance(name, str) and name in self._all:
                raise InvalidRequest(f"namespace {name!r} was dropped (`zkv namespace create` "
                                     f"makes it again, empty)")
            names = self.names()  # (the first 20: 1,024 names made a 4 KB error)
            known = ", ".join(names[:20]) + (f" and {len(names) - 20} more (`zkv namespace "
                                             f"list`)" if len(names) > 20 else "")
            raise InvalidRequest(f"unknown namespace {name!r} (create it with "
                                 f"`zkv namespace create`; known: {known})")
        return ns

    def names(self) -> list[str]:
        return sorted(self._ns)

    def __contains__(self, name: object) -> bool:
        return name in self._ns

    def __iter__(self) -> Iterator[Namespace]:
        """The live namespaces, by name."""
        return (self._ns[k] for k in sorted(self._ns))

    def __len__(self) -> int:
        return len(self._ns)

    def versions(self) -> list[Namespace]:
        """Every name's version, the dropped ones too (what gossip and cluster.json carry)."""
        return [self._all[k] for k in sorted(self._all)]

    def version_of(self, name: str) -> Namespace | None:
        """The version this registry keeps for `name`, live or dropped (None: never heard)."""
        return self._all.get(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Registry) and self._all == other._all

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Registry({self.versions()!r})"

    def is_dead(self, skey: bytes) -> bool:
        """Is this stored key of a dropped namespace, or of a generation that a truncate or a
        create after a drop ended (the module docstring)? Never for a name this registry
        does not hold, nor for a generation newer than the one it holds."""
        if not self.dead_gens or skey[:1] != b"\x00":
            return False
        end = skey.find(b"\x00", 3)
        if end < 4:
            return False  # (no namespace's key: never judged, never memoised)
        verdict = self._dead_memo.get(skey[:end])  # (a key's prefix decides: one dict get)
        if verdict is None:
            verdict = False
            found = generation(skey)
            if found is not None:
                verdict = found[1] < self.dead_gens.get(found[0], 0)
            if len(self._dead_memo) >= MAX_NAMESPACES * 4:
                self._dead_memo.clear()
            self._dead_memo[skey[:end]] = verdict
        return verdict

    # -- changing
    def create(self, name: str, n: int | None = None, r: int | None = None,
               w: int | None = None, conflicts: str = "siblings", *, members: int,
               created: int, creator: str, ttl: int = 0, write_ttl: bool = False,
               pr: int = 0, pw: int = 0) -> Namespace:
        """Create a namespace (n defaults to the default namespace's n, capped by members).

        Same name and same settings: returns the existing namespace (idempotent). Same name,
        other settings, or a bad setting: InvalidRequest. A name that was dropped is made
        again as its next generation (empty: the dropped one's keys stay dead).
        """
        if n is None:
            n = min(self._ns[DEFAULT].n, max(members, 1))
        new = make(name, n, r, w, conflicts, members=members, created=created, creator=creator,
                   ttl=ttl, write_ttl=write_ttl, pr=pr, pw=pw)
        old = self._ns.get(name)
        if old is not None:
            if old.settings() == new.settings():
                return old
            raise InvalidRequest(
                f"namespace {name!r} already exists with {old.describe()}; its r, w, pr, pw "
                f"and ttl change with `zkv namespace alter` (Client.namespace_alter), its n "
                f"and conflicts are fixed")
        gone = self._all.get(name)
        if gone is None and len(self._all) >= MAX_NAMESPACES:
            raise InvalidRequest(f"cannot create namespace {name!r}: the cluster already has "
                                 f"{MAX_NAMESPACES} namespaces (dropped ones included)")
        if gone is not None:
            new = msgspec.structs.replace(new, gen=self._next_gen(gone))
        self._all[name] = new
        self._index()
        return new

    def alter(self, name: str, r: int | None = None, w: int | None = None,
              ttl: int | None = None, *, changed: int, now_ms: int, pr: int | None = None,
              pw: int | None = None) -> Namespace:
        """Change a namespace's default r, w, pr and pw and its ttl (None: as it is; pr/pw 0:
        none); `changed`: an
        HLC timestamp after its last alter, `now_ms` the wall clock (the cutoff of a ttl
        raised or removed: the module docstring). Returns the new version (the same one if
        nothing changes). InvalidRequest for "default" (the cluster's settings), an unknown
        name, or bad settings."""
        if name == DEFAULT:
            raise InvalidRequest(f"namespace {DEFAULT!r} takes the cluster's settings; it "
                                 f"cannot be altered")
        old = self.get(name)
        r = old.r if r is None else r
        w = old.w if w is None else w
        ttl = old.ttl if ttl is None else ttl
        pr = old.pr if pr is None else pr
        pw = old.pw if pw is None else pw
        _raise(f"cannot alter namespace {name!r}",
               problems(name, old.n, r, w, old.conflicts, ttl=ttl, pr=pr, pw=pw))
        if (r, w, ttl, pr, pw) == (old.r, old.w, old.ttl, old.pr, old.pw):
            return old
        if not isinstance(changed, int) or not old.changed < changed <= _MAX_U64:
            raise InvalidRequest(f"cannot alter namespace {name!r}: changed={changed!r} must "
                                 f"follow {old.changed}")
        before = old.expired_before
        if old.ttl and (ttl == 0 or ttl > old.ttl):  # what had expired stays expired
            before = max(before, now_ms - old.ttl * 1000)
        new = msgspec.structs.replace(old, r=r, w=w, ttl=ttl, changed=changed,
                                      expired_before=before, pr=pr, pw=pw)
        self._all[name] = new
        self._index()
        return new

    def drop(self, name: str, *, dropped: int) -> Namespace:
        """End namespace `name`: its version with `dropped` (an HLC timestamp) set, which
        makes every key of the name dead. Dropping a dropped name returns its tombstone
        (a retried drop); "default" or an unknown name raise InvalidRequest."""
        self._check_mine(name, "dropped")
        if name in self._all and name not in self._ns:
            return self._all[name]
        old = self.get(name)  # (InvalidRequest: unknown)
        if not isinstance(dropped, int) or not 0 < dropped <= _MAX_U64:
            raise InvalidRequest(f"cannot drop namespace {name!r}: dropped={dropped!r} must be "
                                 f"an HLC timestamp")
        new = msgspec.structs.replace(old, dropped=dropped)
        self._all[name] = new
        self._index()
        return new

    def truncate(self, name: str, *, created: int, creator: str,
                 write_ttl: bool = False) -> Namespace:
        """Empty namespace `name`, keeping its settings: its next generation, created at
        `created` by `creator` (every key of the current one is dead). `write_ttl`: the new
        generation's lww values may have room for a write's own ttl (every member serves
        it). InvalidRequest for "default", an unknown or a dropped name."""
        self._check_mine(name, "truncated")
        old = self.get(name)
        _check_origin(created, creator, InvalidRequest)
        new = msgspec.structs.replace(old, gen=self._next_gen(old), created=created,
                                      creator=creator, changed=0, expired_before=0,
                                      write_ttl=old.write_ttl or (write_ttl and old.lww))
        self._all[name] = new
        self._index()
        return new

    @staticmethod
    def _check_mine(name: str, what: str) -> None:
        if name == DEFAULT:
            raise InvalidRequest(f"namespace {DEFAULT!r} holds the keys written without one; it "
                                 f"cannot be {what} (delete its keys, or use namespaces)")

    @staticmethod
    def _next_gen(old: Namespace) -> int:
        if old.gen >= MAX_GEN:
            raise InvalidRequest(f"namespace {old.name!r} was dropped or truncated {MAX_GEN} "
                                 f"times: use another name")
        return old.gen + 1

    def merge(self, other: Registry | Iterable[Namespace]) -> list[Conflict]:
        """Fold in another registry (from gossip or disk); returns the conflicts resolved.

        Per name the lowest `rank()` wins; a version of the same generation with different
        settings that loses is reported (whether it was ours or theirs). Names beyond
        MAX_NAMESPACES (dropped ones included) are ignored in name order, so the cap too is
        applied identically everywhere.
        """
        incoming = other._all.values() if isinstance(other, Registry) else other
        conflicts = []
        for ns in incoming:
            cur = self._all.get(ns.name)
            if cur is None:
                self._all[ns.name] = ns
                continue
            if cur == ns:
                continue
            kept, lost = (ns, cur) if ns.rank() < cur.rank() else (cur, ns)
            self._all[ns.name] = kept
            if kept.gen == lost.gen and (kept.settings(), kept.write_ttl) != (
                    lost.settings(), lost.write_ttl) and (kept.created, kept.creator) != (
                    lost.created, lost.creator):
                conflicts.append(Conflict(ns.name, kept, lost))  # (not one create relayed
                # by an older node without its ttl)
        if len(self._all) > MAX_NAMESPACES:
            keep = [DEFAULT] + [k for k in sorted(self._all) if k != DEFAULT]
            self._all = {k: self._all[k] for k in keep[:MAX_NAMESPACES]}
        self._index()
        return conflicts

    def _index(self) -> None:
        """Derive the live names, the expiry rules and the dead generations from `_all`."""
        self._ns.clear()
        self._ns.update((k, v) for k, v in self._all.items() if not v.dropped)
        self.tags = {k: version_tag(v) for k, v in self._ns.items()}
        self.expiry_ms = {prefix(ns): (ns.ttl * 1000, ns.expired_before)
                          for ns in self._ns.values() if ns.expires}
        self.dead_gens = {ns.name.encode("ascii"): ns.gen + (ns.dropped > 0)
                          for ns in self._all.values() if ns.gen or ns.dropped}
        self._dead_memo = {}

    def expiry_of(self, skey: bytes) -> tuple[int, int] | None:
        """(ttl in ms, expired_before in ms) of the namespace a stored key belongs to; None
        when its values never expire (or it is a key of a namespace this registry does not
        hold, e.g. the losing version of a name). expiry.expired takes both."""
        if not self.expiry_ms or skey[:1] != b"\x00":
            return None
        end = skey.find(b"\x00", 3)
        return self.expiry_ms.get(skey[:end + 1]) if end > 3 else None

    # -- codec
    def encode(self) -> bytes:
        return msgspec.msgpack.encode((REGISTRY_VERSION, self.versions()))

    def to_builtins(self) -> list[dict]:
        """JSON-ready list of namespaces, the dropped ones too (for cluster.json)."""
        return msgspec.to_builtins(self.versions())

    @classmethod
    def from_builtins(cls, items: object) -> Registry:
        """Inverse of `to_builtins`; bad content raises ValueError."""
        try:
            nss = msgspec.convert(items, list[Namespace])
        except msgspec.ValidationError as exc:
            raise ValueError(f"bad namespace list: {exc}") from None
        return cls._from_list(nss)

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Registry:
        """A registry from gossip; anything malformed raises ValueError (drop the message)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError("a namespace registry is bytes")
        if len(data) > max_bytes:
            raise ValueError(f"namespace registry is {len(data)} bytes, over the "
                             f"{max_bytes}-byte limit")
        try:
            version, nss = _DECODER.decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise ValueError(f"corrupt namespace registry: {exc}") from None
        if version != REGISTRY_VERSION:
            raise ValueError(f"namespace registry version {version}; this zkv reads "
                             f"{REGISTRY_VERSION}")
        return cls._from_list(nss)

    @classmethod
    def _from_list(cls, nss: list[Namespace]) -> Registry:
        if len(nss) > MAX_NAMESPACES:
            raise ValueError(f"{len(nss)} namespaces, over the limit of {MAX_NAMESPACES}")
        names = [ns.name for ns in nss]
        if names != sorted(set(names)):
            raise ValueError("namespace registry not sorted by name with unique names")
        for ns in nss:
            found = problems(ns.name, ns.n, ns.r, ns.w, ns.conflicts, ttl=ns.ttl, pr=ns.pr,
                             pw=ns.pw)
            if not 0 <= ns.changed <= _MAX_U64 or not 0 <= ns.expired_before < 1 << 48:
                found.append(f"changed={ns.changed}, expired_before={ns.expired_before}: "
                             f"out of range")
            elif ns.expired_before and ns.conflicts != "lww":
                found.append("expired_before: needs conflicts=lww")
            if ns.write_ttl and ns.conflicts != "lww":
                found.append("write_ttl: needs conflicts=lww")
            if not 0 <= ns.gen <= MAX_GEN or not 0 <= ns.dropped <= _MAX_U64:
                found.append(f"gen={ns.gen}, dropped={ns.dropped}: out of range")
            elif ns.name == DEFAULT and (ns.gen or ns.dropped):
                found.append("the default namespace is never dropped nor truncated")
            if found:
                raise ValueError(f"bad namespace {ns.name!r}: " + "; ".join(found))
            _check_origin(ns.created, ns.creator, ValueError)
        default = next((ns for ns in nss if ns.name == DEFAULT), None)
        if default is None:
            raise ValueError(f"namespace registry without {DEFAULT!r}")
        return cls(default, nss)


__all__ = ["Namespace", "Conflict", "Registry", "make", "default_namespace", "problems",
           "prefix", "storage_key", "key_settings", "split_key", "generation",
           "DEFAULT", "MODES", "MAX_N", "MAX_NAMESPACES", "MAX_TTL", "MAX_GEN", "REGISTRY_VERSION",
           "STAMP_BYTES", "TTL_BYTES"]
