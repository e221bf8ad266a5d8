"""Wire format: every message between clients and nodes and between nodes, and its codec.

One ZeroMQ frame carries a batch of messages (coalescing: everything one loop turn sends to
one peer travels in one frame). A frame is a msgpack array, encoded with msgspec:

    frame   = [WIRE_VERSION: uint, [message, ...]]        # at most MAX_BATCH messages
    message = [TAG: uint, rid: uint, field, ...]          # a tagged array-like msgspec Struct

Sizes are checked before decoding: a frame longer than its limit is dropped unread
(`frame_limit`); msgspec never allocates more than the frame holds, and typed decoding
rejects wrong types. Keys and values are then checked against the configured limits
(`check_key`, `check_value`). Version vectors travel as the opaque bytes of `zkv._core.dvv`;
a client's context is version 2 of dvv's context format when the key has write ids (it
carries up to 4 of them, ~70 bytes): a node older than that refuses such a context as
malformed, so upgrade every node before clients get contexts from a new one. With --keys
a context a node gives a client is sealed for its key (17 bytes in front, zkv/node/seal.py):
a node of a version before seals refuses it as malformed (the upgrade steps: seal.py).

Measured with timeit on the development machine: a put of a 1 KiB value encodes in ~0.35 us
and a frame decodes (typed, validated) in ~0.8 us, against ~8-10 us for one zmq send and a
~60-200 us loopback round trip; a Cython codec could not move the round trip, so msgspec it is.

Message tags (uint):
    1 Get     2 Put     3 Delete     4 RingInfo   5 Status     6 Repair
    7 NsCreate  8 NsList                                            (namespaces, issue 15)
    10 GetOk  11 PutOk  12 Error     13 RingOk    14 StatusOk   15 RepairOk   16 NsOk
    20 RGet   21 RPut   22 RGetOk    23 RPutOk    24 Forward  25 Join   26 JoinOk
    27 TreeLevel  28 TreeLevelOk  29 LeafKeys  31 LeafKeysOk  32 Reap
    33 RGetHashes  34 RGetHashesOk                                   (anti-entropy)
    9 Cluster  17 ClusterOk  35 Fetch  36 FetchOk          (membership changes, transfers)
    37 Read   38 ReadOk                                 (client-coordinated reads, FEATURE_READ)
    39 Snapshot  40 SnapshotOk                         (a node's stores hard-linked, FEATURE_SNAPSHOT)
    41 Keys   42 KeysOk                                 (listing a namespace's keys, FEATURE_KEYS;
                                                         with their copies, FEATURE_ITEMS)
    43 Config  44 ConfigOk                              (a node's settings, changed while it runs,
                                                         FEATURE_CONFIG)
    18 NsAlter                                          (a namespace's r, w, ttl changed,
                                                         FEATURE_NS_ALTER; answered by NsOk)
    45 NsDrop                                           (a namespace dropped or truncated,
                                                         FEATURE_DROP; answered by NsOk)
    30 Gossip (on the PUB/SUB channel, one message per frame)

Evolving a message: new fields go at the END with a default. A decoder fills a missing
trailing field with its default and ignores trailing fields it does not know (msgspec's
array_like rule), so old and new peers keep understanding each other.

Fields added so far:
    Put.wid, Delete.wid (bytes, b"" = none)   the write id (issue 10): WID_SIZE (16) random
        bytes the client picks per put/delete call and keeps across that call's retries and
        failovers, so a replica can recognise a retried write as the same one; at most MAX_WID
        bytes. A node that does not know the field ignores it.
    Gossip.cluster, JoinOk.cluster (bytes)   the cluster state (zkv.node.ownership), issue 11
    Gossip.progress_epoch, Gossip.progress    the sender's incoming transfers, issue 11
    Put.floor, PutOk.stamp, GetOk.stamp (uint, 0..2^64-1, 0 = none)   lww namespaces, issue
        15: the HLC stamp (zkv.hlc layout) of the value written or read, and the highest
        stamp a client has seen, which the coordinator observes before stamping, so a
        client's later write is ordered after every value it has already seen even when the
        coordinator's clock runs behind (and it does not hold the key)
    RingOk.owners, RingOk.tokens              the current ring's members and placement tokens
                                              (a replacement is placed by the old node's id)
    Gossip.progress_n, Fetch.n                transfers of namespaces whose N is not the
        cluster's (issue 11 x 15); an old source ignores Fetch.n and answers every key of the
        partition (more bytes, nothing lost)
    RGetOk.unsure (bool)                      a refilling replica's answer (README, "A lost
        disk is refilled before its answers count"); an older coordinator counts it, as before
    TreeLevel.more (list of partitions, at most MAX_ROOTS)   level 0 only: the roots of these
        partitions too, so one round trip per peer checks a whole round of partitions
        (background.RootsOp). An older node ignores the field and answers one root; the
        asker then exchanges the others one by one, as before
    Member.features (uint bit set, FEATURE_*)  what the member's own version serves; set by
        the node in its own record and gossiped with it. A record relayed by an older node
        loses the field (0: nothing beyond the base protocol), which only makes clients more
        careful: they send Read to a node only when its record says FEATURE_READ, so an
        older node never gets a message it cannot decode
    Keys.values (bool), KeysOk.copies (list of bytes)   a page of keys with each key's copy
        as the owner stores it (an encoded DVV set; deleted keys too, so a client merging r
        owners' copies sees a delete one of them missed). Clients ask for it only of nodes
        whose record says FEATURE_ITEMS (an older one would ignore the field and answer keys
        alone)
    Forward.stamp (uint, 0 = none)           an lww Put's HLC stamp, given by the node that
        received it from the client (the write is ordered by when it entered the cluster, not
        by when a retried forward landed). An older coordinator ignores it and stamps on
        arrival, as before
    NsCreate.ttl (uint seconds, 0 = none)     a namespace whose values expire (lww only,
        zkv/node/expiry.py). Clients send it only when every member's record says FEATURE_TTL
        (an older node would ignore it and create the namespace without expiry), and a node
        refuses it while any member's record lacks FEATURE_TTL
    RingOk.ns_digest (uint, 0 = none)         crc32 of the node's namespace registry: a client
        that sees it change reloads the namespaces it cached (an alter). An older client
        ignores it and keeps its cache (an alter's new r or w reaches it when it reloads)
    Config.save (bool)                        write the settings into the node's --config file
        (`zkv config --save`). Clients send it only to a node whose record says
        FEATURE_CONFIG_SAVE (an older one would ignore it: the change would not be saved)
    GetOk.expires (uint ms, 0 = never)        when the value returned stops being served (its
        namespace's ttl or its write's own, zkv/node/expiry.py): GetResult.expires_at. An
        older node sends none (0: the client cannot tell)
    Put.ttl (uint seconds, 0 = none)          the write's own ttl (zkv/node/expiry.py), in a
        namespace whose values have room for it (Namespace.write_ttl, stored-key mode 2: made
        only while every member's record says FEATURE_WRITE_TTL). A node refuses it in any
        other namespace; a client sends it only when asked for one
    Get.pr, Put.pw, Delete.pw (uint 0..255, 0 = none)   primary quorums (Riak's PR/PW): of
        the answers counted, at least this many must come from the key's owners themselves,
        not from stand-ins (zkv/node/quorum.py). Clients send them only when every member's
        record says FEATURE_PRIMARY (an older node would ignore them: a sloppy answer where
        a strict one was asked for)
    Forward.gen (-1 = unknown)                 the generation of the request's namespace where
        it entered the cluster (zkv/node/namespaces.py): a forwarded write whose namespace
        was truncated, or dropped and made again, since is refused, not written into the
        next generation. An older node ignores it
    Read.ns_ver, Keys.ns_ver (uint, 0 = none); ReadOk.ns_changed, KeysOk.ns_changed (bool)
                                              the version of the namespace the client reads
        the answer with (namespaces.version_tag); a node holding another one reads nothing
        and says so, and the client learns the namespaces again (a client that cached a
        namespace since dropped and made again with another conflict mode took lww stamps
        for values). An older node ignores the field and answers, as before
    NsCreate.pr/pw (0 = none), NsAlter.pr/pw (-1 = as it is)   a namespace's default primary
        quorums; sent, and taken by a node, only while every member's record says
        FEATURE_PRIMARY, and a node of an older version cannot join while a namespace has them
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from zkv.errors import InvalidRequest

WIRE_VERSION = 1
MAX_BATCH = 4096  # messages in one frame
# bytes a client puts in one frame of several requests: under any node's frame_limit (327,688
# at the smallest settings), whose socket drops a connection that sends a larger frame (an
# AsyncClient gathering 100 puts of 8 MiB sent them in frames of 64 MiB and more: every one
# failed). A request larger than this goes in a frame of its own.
CLIENT_FRAME = 256 * 1024
FRAME_OVERHEAD = 64 * 1024  # bytes allowed beyond key + value + context in a client frame
FRAME_SLACK = 48  # bytes a message's encoding takes besides its key, value and context, about
DEFAULT_MAX_KEY = 64 * 1024  # 64 KiB
DEFAULT_MAX_VALUE = 16 * 1024 * 1024  # 16 MiB
MAX_CONTEXT = 64 * 1024  # an encoded version vector; ~N entries in practice
WID_SIZE = 16  # bytes of a client-chosen write id (Put.wid / Delete.wid)
MAX_WID = 32  # longest write id accepted
# Bounds on membership fields, enforced while decoding (so an oversized name never reaches a
# log line or a table); the full rules (id and endpoint syntax, clock bounds) are applied by
# zkv.node.membership.validate_member before a record is merged or saved.
MAX_ID = 64  # == config.NODE_ID_RE's upper bound
MAX_ENDPOINT = 270  # "tcp://" + a 253-byte host name + ":65535"
MAX_RACK = 64
MAX_MEMBERS = 1024  # records in one Gossip / JoinOk / RingOk (and the cluster's member cap)
MAX_COUNTER = (1 << 63) - 1  # incarnation / heartbeat: non-negative int64
MAX_ERROR_TEXT = 4096
MAX_NS_NAME = 64  # == namespaces._NAME's upper bound
MAX_NS_REGISTRY = 1 << 20  # == namespaces.DEFAULT_MAX_BYTES
MAX_NS_N = 16  # == namespaces.MAX_N
MAX_NS_GEN = (1 << 32) - 1  # == namespaces.MAX_GEN
MAX_TREE_LIST = 1 << 16  # parents/leaves one TreeLevel/LeafKeys names (a tree has 1024 leaves)
MAX_REAP = 1 << 16  # keys one Reap names
MAX_ROOTS = 1024  # partitions whose roots one TreeLevel asks for (TreeLevel.more)
FEATURE_READ = 1  # Member.features: the node answers Read (client-coordinated reads)
FEATURE_SNAPSHOT = 2  # Member.features: the node answers Snapshot (an admin's)
FEATURE_KEYS = 4  # Member.features: the node answers Keys
FEATURE_ITEMS = 8  # Member.features: ... and Keys.values (KeysOk.copies)
FEATURE_CONFIG = 16  # Member.features: the node answers Config (an admin's)
FEATURE_TTL = 32  # Member.features: the node takes NsCreate.ttl and expires values
FEATURE_CONFIG_SAVE = 64  # Member.features: the node takes Config.save
FEATURE_NS_ALTER = 128  # Member.features: the node answers NsAlter (and merges alters)
FEATURE_WRITE_TTL = 256  # Member.features: the node stores Put.ttl (write_ttl namespaces)
FEATURE_PRIMARY = 512  # Member.features: the node takes Get.pr, Put.pw and Delete.pw
FEATURE_DROP = 1024  # Member.features: the node answers NsDrop and purges dead generations
# Member.features: the node can store writes under BLAKE3(write id, value) (coordinator.
# stored_wid); every node does once every serving member can (a retry through an older
# node, stored under the id itself, would not be known as the same write)
FEATURE_HASHED_WIDS = 2048
FEATURES = (FEATURE_READ | FEATURE_SNAPSHOT | FEATURE_KEYS | FEATURE_ITEMS
            | FEATURE_CONFIG | FEATURE_TTL | FEATURE_CONFIG_SAVE
            | FEATURE_NS_ALTER | FEATURE_WRITE_TTL | FEATURE_PRIMARY
            | FEATURE_DROP | FEATURE_HASHED_WIDS)  # what this version serves
MAX_KEYS_PAGE = 10_000  # keys one KeysOk carries at most (and about KEYS_PAGE_BYTES of them)
KEYS_PAGE_BYTES = 1 << 20

NodeId = Annotated[str, msgspec.Meta(max_length=MAX_ID)]
Endpoint = Annotated[str, msgspec.Meta(max_length=MAX_ENDPOINT)]
Counter = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
NsName = Annotated[str, msgspec.Meta(max_length=MAX_NS_NAME)]
NsRegistry = Annotated[bytes, msgspec.Meta(max_length=MAX_NS_REGISTRY)]
NsN = Annotated[int, msgspec.Meta(ge=0, le=MAX_NS_N)]
Small = Annotated[int, msgspec.Meta(ge=0, le=255)]
SealPrefix = Annotated[bytes, msgspec.Meta(max_length=32)]  # ReadOk.seal (17 bytes, seal.py)
Stamp = Annotated[int, msgspec.Meta(ge=0)]  # an HLC timestamp (zkv.hlc); msgpack caps it at u64

# Error codes carried by Error.code
E_INVALID = 1  # -> InvalidRequest
E_QUORUM = 2  # -> QuorumError(required, acked)
E_UNAVAILABLE = 3  # -> Unavailable
E_TIMEOUT = 4  # -> RequestTimeout
E_INTERNAL = 5  # -> ZkvError
BUSY = "busy, retry"  # how an E_UNAVAILABLE that asks to be sent again (soon) begins
# E_UNAVAILABLE refusals a node makes before it stores or sends anything of the request (the
# others -- a node shutting down, a turn's writes that missed the disk, a forward that stood
# still -- may come after copies went out): `refused_unwritten` says which
NO_WRITES = "takes no writes now"  # (its disk, a start on a full one)
STILL_JOINING = "is still joining"
PRIMARY_SHORT = "stand-ins do not count toward it"  # (a pr/pw too few owners can meet)


def refused_unwritten(message: str) -> bool:
    """An E_UNAVAILABLE's message says the node refused the request before storing or
    sending any of it (a write so refused, and never sent elsewhere, was not stored)."""
    return (message.startswith(BUSY) or NO_WRITES in message or STILL_JOINING in message
            or message.endswith(PRIMARY_SHORT))
# in an E_QUORUM: the coordinator ended early, every replica it saw up having answered (its
# view of who is up, not a wait, failed the request: another coordinator may see more)
ASKED_ALL = "every replica that could be asked has answered"


# gc=False: messages are plain data (bytes, numbers, strings, lists of Members) that never
# refer back to anything holding them, so the collector need not track them: every frame
# decodes to untracked structs, and a young collection has fewer objects to walk
# (benchmarks/sim_instructions.py: 253,588 -> 251,383 instructions per batched operation).
class _Msg(msgspec.Struct, array_like=True, tag_field="t", frozen=False, gc=False):
    rid: int


# ---- client -> node -------------------------------------------------------------------------
class Get(_Msg, tag=1):
    key: bytes
    r: int = 0  # 0: the namespace's default
    ns: NsName = ""  # namespace ("": "default")
    pr: Small = 0  # answers that must come from the key's owners, not stand-ins (0: none)


class Put(_Msg, tag=2):
    key: bytes
    value: bytes
    context: bytes = b""
    w: int = 0
    wid: bytes = b""  # write id, WID_SIZE bytes (b"": none); the same on every retry of a call
    ns: NsName = ""  # namespace ("": "default")
    floor: Stamp = 0  # lww: the highest HLC stamp this client has seen (0: none)
    ttl: Counter = 0  # seconds the value is served (a write_ttl namespace; 0: its own ttl)
    pw: Small = 0  # acknowledgements that must come from the key's owners (0: none)


class Delete(_Msg, tag=3):
    key: bytes
    context: bytes = b""
    w: int = 0
    wid: bytes = b""  # write id, as Put.wid
    ns: NsName = ""  # namespace ("": "default")
    pw: Small = 0  # as Put.pw


class RingInfo(_Msg, tag=4):
    pass


class Status(_Msg, tag=5):
    pass


class NsCreate(_Msg, tag=7):
    """Admin -> node: create a namespace (0 = default n / majority r, w). Answered by NsOk."""

    name: NsName
    n: Small = 0  # the node checks the real bounds (1..min(members, 16)) and says why
    r: Small = 0
    w: Small = 0
    conflicts: Annotated[str, msgspec.Meta(max_length=16)] = "siblings"
    ttl: Counter = 0  # seconds a value lives (lww only; 0: no expiry; FEATURE_TTL)
    pr: Small = 0  # default primary quorums (0: none; FEATURE_PRIMARY)
    pw: Small = 0


class NsAlter(_Msg, tag=18):
    """Admin -> node: change a namespace's default r and w and its ttl (-1: as it is; ttl 0:
    no expiry). Answered by NsOk (`created`: its name) once every member that is up has
    it, or Error (unknown name, bad settings, a member without FEATURE_NS_ALTER)."""

    name: NsName
    r: Annotated[int, msgspec.Meta(ge=-1, le=255)] = -1
    w: Annotated[int, msgspec.Meta(ge=-1, le=255)] = -1
    ttl: Annotated[int, msgspec.Meta(ge=-1, le=MAX_COUNTER)] = -1
    pr: Annotated[int, msgspec.Meta(ge=-1, le=255)] = -1  # (0: none; FEATURE_PRIMARY)
    pw: Annotated[int, msgspec.Meta(ge=-1, le=255)] = -1


class NsDrop(_Msg, tag=45):
    """Admin -> node: drop a namespace (every key of it is purged, the name may be created
    again), or with `truncate` empty it and keep its settings (zkv/node/namespaces.py).
    Answered by NsOk (`created`: its name) once every member that is up has it, or Error
    (the default namespace, an unknown name, a member without FEATURE_DROP). `gen`: the
    generation to end (-1: the current one); once it has ended (a retry of this request,
    or another admin's), the node answers with the name's version as it is, ending nothing
    more, so a retried truncate does not empty the namespace a second time."""

    name: NsName
    truncate: bool = False
    gen: Annotated[int, msgspec.Meta(ge=-1, le=MAX_NS_GEN)] = -1


class NsList(_Msg, tag=8):
    """Client -> node: every namespace the node knows. Answered by NsOk."""


class Read(_Msg, tag=37):
    """Client -> owner: the version this node holds for a key, for a read the client
    coordinates itself (zkv.client.core, "Client-coordinated reads"). Answered by ReadOk,
    never forwarded or fanned out: the node reads its own store and nothing else."""

    key: bytes
    ns: NsName = ""  # namespace ("": "default")
    # the version of `ns` the client reads the copies with (namespaces.version_tag; 0: none
    # given): a node holding another version answers ReadOk with `ns_changed`, unread
    ns_ver: Counter = 0


# ---- node -> client -------------------------------------------------------------------------
class GetOk(_Msg, tag=10):
    values: list[bytes]
    context: bytes
    replicas: int = 0  # replicas that answered before the reply
    stamp: Stamp = 0  # lww: the HLC stamp of the value returned (0: none)
    expires: Stamp = 0  # wall ms at which the value stops being served (0: never, or unknown)


class ReadOk(_Msg, tag=38):
    dvv: bytes  # the encoded DVV set this node holds (b"": nothing, or not `owner`)
    # True: this node is one of the key's N owners in its current ring and its copy counts
    # toward R (not refilling after a lost disk, not a new owner of it not yet verified).
    # False: nothing was read; the client asks a coordinator instead
    owner: bool = False
    # with owner False: an owner whose copies do not count yet (refilling after a lost disk,
    # for minutes, or an owner since an ownership change not yet settled and verified, for
    # seconds): the client stops asking it for a while rather than pay a round trip per
    # get; without it (not an owner in this node's ring) the client's ring is stale
    refilling: bool = False
    # with --keys: what sealing the context of this copy puts before it (zkv/node/seal.py,
    # 17 bytes); the client puts it before the context it derives (b"": not sealed)
    seal: SealPrefix = b""
    # with owner False: Read.ns_ver is not this node's version of the namespace (altered,
    # truncated, or dropped and made again since one of the two learnt it): nothing read
    ns_changed: bool = False


class PutOk(_Msg, tag=11):
    context: bytes
    acked: int = 0
    stamp: Stamp = 0  # lww: the HLC stamp of the value written (0: none)


class Error(_Msg, tag=12):
    code: int
    message: Annotated[str, msgspec.Meta(max_length=MAX_ERROR_TEXT)]
    required: int = 0  # E_QUORUM: R or W; E_INVALID: a sibling refusal's limit (0: another)
    acked: int = 0  # E_QUORUM: replicas that answered; E_INVALID: the siblings it would make


class Member(msgspec.Struct, array_like=True, gc=False):  # (plain data: as _Msg)
    id: NodeId
    listen: Endpoint
    gossip: Endpoint
    rack: Annotated[str, msgspec.Meta(max_length=MAX_RACK)]
    incarnation: Counter
    heartbeat: Counter
    leaving: bool = False
    features: Counter = 0  # FEATURE_* bits this member's version serves (0: an older one)


Members = Annotated[list[Member], msgspec.Meta(max_length=MAX_MEMBERS)]


class RingOk(_Msg, tag=13):
    q: int
    n: int
    r: int
    w: int
    members: Members
    down: Annotated[list[NodeId], msgspec.Meta(max_length=MAX_MEMBERS)]
    # the members the node's current ring is made of ([] from an older node: every member
    # not leaving) and the placement tokens of those placed by another id (issue 11, replace)
    owners: Annotated[list[NodeId], msgspec.Meta(max_length=MAX_MEMBERS)] = []
    tokens: Annotated[dict[NodeId, NodeId], msgspec.Meta(max_length=MAX_MEMBERS)] = {}
    # crc32 of the node's namespace registry (0: an older node): a client that saw another
    # one forgets the namespaces it cached (an alter changed their r, w or ttl)
    ns_digest: Counter = 0


class NsOk(_Msg, tag=16):
    registry: NsRegistry  # the node's whole registry (Registry.encode)
    created: NsName = ""  # NsCreate: the namespace created (or found identical)


class StatusOk(_Msg, tag=14):
    info: dict  # JSON-able status document (see zkv/node/status.py)


# ---- node <-> node --------------------------------------------------------------------------
class RGet(_Msg, tag=20):
    key: bytes
    owner: NodeId = ""  # non-empty: read the version held as a hint for this absent owner


class RPut(_Msg, tag=21):
    key: bytes
    dvv: bytes  # encoded DVV set to sync into the replica
    owner: NodeId = ""  # non-empty: the receiver stands in for this absent owner (a hint)


class RGetOk(_Msg, tag=22):
    dvv: bytes  # b"" when the replica has nothing
    # True: this replica lost its data (it came back with an empty disk) and has not yet
    # exchanged this key's partition with every other owner, so what it holds may be older
    # than a write it lost, or nothing: the coordinator merges it but does not count it
    unsure: bool = False


class RPutOk(_Msg, tag=23):
    ok: bool = True


class Forward(_Msg, tag=24):
    """A client request handed to a node of the key's preference list (one hop)."""

    inner: Get | Put | Delete
    stamp: Stamp = 0  # an lww Put: the HLC stamp the forwarding node gave it on receipt
    # the generation of the request's namespace where it entered the cluster (-1: an older
    # sender, resolved on arrival): a write is refused in any other one (a truncate or a
    # drop and create came between: it must not land in the next generation)
    gen: Annotated[int, msgspec.Meta(ge=-1, le=MAX_NS_GEN)] = -1


class Join(_Msg, tag=25):
    member: Member


class JoinOk(_Msg, tag=26):
    q: int
    n: int
    r: int
    w: int
    members: Members
    cluster: Annotated[bytes, msgspec.Meta(max_length=256 * 1024)] = b""
    namespaces: NsRegistry = b""  # Registry.encode


class TreeLevel(_Msg, tag=27):
    """Anti-entropy: the hashes at `level` of the partition's Merkle tree of the children of
    `parents` (nodes of level - 1 that differed); level 0 asks for the root, and with `more`
    for the roots of those partitions too, in order after `partition`'s."""

    partition: int
    level: int
    parents: Annotated[list[int], msgspec.Meta(max_length=MAX_TREE_LIST)]
    n: NsN = 0  # the trees of keys whose namespace has this N (0: the cluster's N)
    more: Annotated[list[int], msgspec.Meta(max_length=MAX_ROOTS)] = []


class TreeLevelOk(_Msg, tag=28):
    hashes: bytes  # the nodes' hashes, each cut to antientropy.TREE_HASH (6) bytes, concatenated


class LeafKeys(_Msg, tag=29):
    """Anti-entropy: (key, version digest) of every key in these leaves of the partition."""

    partition: int
    leaves: Annotated[list[int], msgspec.Meta(max_length=MAX_TREE_LIST)]
    n: NsN = 0  # as TreeLevel.n


class LeafKeysOk(_Msg, tag=31):
    hashes: bytes  # u64 LE key hashes, concatenated
    digests: bytes  # their version digests, each cut to WIRE_HASH (8) bytes, concatenated


class RGetHashes(_Msg, tag=33):
    """Anti-entropy pull: the versions of the partition's keys with these u64 LE key hashes."""

    partition: int
    hashes: bytes
    n: NsN = 0  # as TreeLevel.n


class RGetHashesOk(_Msg, tag=34):
    keys: list[bytes]
    dvvs: list[bytes]


class Reap(_Msg, tag=32):
    """Drop these tombstones if the held version still has this digest (all owners agreed)."""

    keys: Annotated[list[bytes], msgspec.Meta(max_length=MAX_REAP)]
    digests: Annotated[list[bytes], msgspec.Meta(max_length=MAX_REAP)]


class Repair(_Msg, tag=6):
    """Client -> node: exchange now (`partition` -1: every partition this node replicates)."""

    partition: int = -1


class RepairOk(_Msg, tag=15):
    info: dict


class Keys(_Msg, tag=41):
    """Client -> owner: a page of the live keys of namespace `ns` in ring partition
    `partition` whose key hash is at least `cursor`, in hash order (whole groups of equal
    hashes), those beginning with `prefix` only (zkv/node/listing.py). Answered by KeysOk.
    `values`: every stored key (deleted ones too) with its copy, in KeysOk.copies."""

    partition: Annotated[int, msgspec.Meta(ge=0)]
    ns: NsName = ""  # ("": "default")
    cursor: Annotated[int, msgspec.Meta(ge=0)] = 0  # (a key hash: below 2**64)
    prefix: Annotated[bytes, msgspec.Meta(max_length=DEFAULT_MAX_KEY)] = b""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_KEYS_PAGE)] = 1000
    values: bool = False  # (FEATURE_ITEMS)
    ns_ver: Counter = 0  # as Read.ns_ver: another version here answers KeysOk.ns_changed


class KeysOk(_Msg, tag=42):
    keys: list[bytes]  # user keys (the namespace's prefix taken off)
    cursor: int  # where the next page starts
    done: bool  # the partition has no more
    owner: bool = True  # False: this node is no owner whose copy it vouches for (nothing read)
    copies: list[bytes] = []  # Keys.values: each key's stored copy (an encoded DVV set)
    ns_changed: bool = False  # with owner False: as ReadOk.ns_changed (nothing listed)


SnapshotAction = Literal["take", "list", "remove"]


class Snapshot(_Msg, tag=39):
    """Admin -> node, its snapshots (zkv/node/snapshots.py): "take" hard-links its stores as
    they are now under DATA_DIR/snapshots/`name`; "list" every snapshot there; "remove"
    deletes `name`. Answered by SnapshotOk, or Error (a name taken or unknown, a full disk)."""

    name: NsName = ""  # (the namespace name syntax: namespaces.valid_name)
    action: SnapshotAction = "take"


class SnapshotOk(_Msg, tag=40):
    # take: the manifest (snapshots.take); list: {"snapshots": [...]}; remove: {"removed",
    # "freed"}
    info: dict


MAX_SETTINGS = 64  # settings one Config changes at most (NodeConfig has fewer)


class Config(_Msg, tag=43):
    """Admin -> node: its settings (zkv/config.py), and the runtime ones among them changed
    to the values `changes` names (as text, as a flag takes them; none: only read).
    Answered by ConfigOk, or Error (an unknown setting, a bad value, one that needs a
    restart: nothing is changed then)."""

    changes: Annotated[dict[Annotated[str, msgspec.Meta(max_length=64)],
                            Annotated[str, msgspec.Meta(max_length=MAX_ENDPOINT)]],
                       msgspec.Meta(max_length=MAX_SETTINGS)] = {}
    save: bool = False  # and write them into the node's --config file (FEATURE_CONFIG_SAVE)


class ConfigOk(_Msg, tag=44):
    # {"settings": {name: value}, "runtime": [names a running node takes], "changed":
    # {name: [old, new]}} (zkv.node.core.NodeCore.reconfigure)
    info: dict


class Cluster(_Msg, tag=9):
    """Admin -> node: a membership change or query (issue 11). `action` is one of leave,
    replace, force-remove (staged), plan, commit, auto_commit (node "true"/"false")."""

    action: Annotated[str, msgspec.Meta(max_length=16)]
    node: NodeId = ""
    other: NodeId = ""


class ClusterOk(_Msg, tag=17):
    info: dict


class Fetch(_Msg, tag=35):
    """Transfer (pending owner -> source): the partition's versions whose key hash is at
    least `cursor`, in hash order, up to about `max_bytes`."""

    partition: int
    cursor: Annotated[int, msgspec.Meta(ge=0)]
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024 * 1024)]
    n: NsN = 0  # only keys whose namespace has this N (0: the cluster's N), as TreeLevel.n


class FetchOk(_Msg, tag=36):
    keys: list[bytes]
    dvvs: list[bytes]
    next: int  # the cursor to ask with next
    done: bool  # no key of the partition hashes at or above `next`
    total: int = 0  # bytes the partition holds at the source (0: unknown)


class Gossip(_Msg, tag=30):
    sender: NodeId
    q: int
    n: int
    r: int
    w: int
    members: Members
    fingerprint: bytes = b""
    cluster: Annotated[bytes, msgspec.Meta(max_length=256 * 1024)] = b""  # ownership.encode
    progress_epoch: int = 0  # the cluster epoch `progress` describes
    # this sender's incoming transfers: (partition, bytes done, bytes total, phase)
    progress: Annotated[list[tuple[int, int, int, int]],
                        msgspec.Meta(max_length=65536)] = []
    namespaces: NsRegistry = b""  # Registry.encode
    # incoming transfers of keys whose namespace's N is not the cluster's (issue 15):
    # (N, partition, bytes done, bytes total, phase)
    progress_n: Annotated[list[tuple[int, int, int, int, int]],
                          msgspec.Meta(max_length=65536)] = []
    # the sender takes no writes now (its disk: full, or failing): coordinators send its
    # replicas' writes to stand-ins, as for a node that is down (an older sender: False)
    no_writes: bool = False
    # the sender's wall clock (ms) when it sent this: its peers tell a clock of theirs far from
    # the others' (an older sender: 0, not compared)
    wall_ms: int = 0
    # the sender is stopping (its last gossip, at a clean shutdown): its peers count it down at
    # once instead of after the failure detector's seconds of silence, as Cassandra's
    # shutdown announcement does, until it beats again (an older sender: False)
    stopping: bool = False
    # members whose heartbeats the sender hears but that answered none of its requests for a
    # while (reach.py: their --advertise cannot be dialed while --advertise-gossip can); a
    # member reading itself here says so (an older sender: [], nothing said)
    unanswered: Annotated[list[NodeId], msgspec.Meta(max_length=MAX_MEMBERS)] = []


Message = (
    Get
    | Put
    | Delete
    | RingInfo
    | Status
    | NsCreate
    | NsAlter
    | NsDrop
    | NsList
    | Read
    | ReadOk
    | NsOk
    | GetOk
    | PutOk
    | Error
    | RingOk
    | StatusOk
    | RGet
    | RPut
    | RGetOk
    | RPutOk
    | Forward
    | Join
    | JoinOk
    | TreeLevel
    | TreeLevelOk
    | LeafKeys
    | LeafKeysOk
    | RGetHashes
    | RGetHashesOk
    | Reap
    | Repair
    | RepairOk
    | Snapshot
    | SnapshotOk
    | Config
    | ConfigOk
    | Keys
    | KeysOk
    | Cluster
    | ClusterOk
    | Fetch
    | FetchOk
    | Gossip
)


class Frame(msgspec.Struct, array_like=True):
    v: int
    msgs: Annotated[list[Message], msgspec.Meta(max_length=MAX_BATCH)]


# what a node's request socket (its ROUTER) takes: requests only. A reply type there was
# decoded whole before being refused, and its untyped `info` dicts let one frame expand ~57x
# in memory (a security review: a 16 MiB frame of empty arrays in a StatusOk, 1.2 GB and an
# 11.7 s turn); decoded with this union it is refused at the first byte that names it
Request = (
    Get | Put | Delete | RingInfo | Status | NsCreate | NsAlter | NsDrop | NsList | Read
    | RGet | RPut | Forward | Join | TreeLevel | LeafKeys | RGetHashes | Reap | Repair
    | Snapshot | Config | Keys | Cluster | Fetch
)


class RequestFrame(msgspec.Struct, array_like=True):
    v: int
    # bounded while decoding: a 64 MiB frame of 3-byte RingInfo requests (22M of them) was
    # decoded whole (~4 s, ~750 MB) before the MAX_BATCH check below refused it
    msgs: Annotated[list[Request], msgspec.Meta(max_length=MAX_BATCH)]


class _Head(msgspec.Struct, array_like=True):
    v: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)
_request_decoder = msgspec.msgpack.Decoder(RequestFrame)
_head_decoder = msgspec.msgpack.Decoder(_Head)


class WireError(ValueError):
    """A frame that cannot be accepted: too big, wrong version, undecodable."""


def encode(msgs: list) -> bytes:
    """One frame holding `msgs` (a list of message structs)."""
    # a Frame (array_like) is encoded as the array [v, msgs]: so is this tuple, byte for
    # byte, without building and freeing the struct (~500 instructions of ~2,600 a frame)
    return _encoder.encode((WIRE_VERSION, msgs))


def encode_one(msg) -> bytes:
    return _encoder.encode((WIRE_VERSION, [msg]))  # (a Frame's bytes: see encode)


def frames(msgs: list, limit: int) -> list[bytes]:
    """Encode msgs as few frames as fit under `limit` bytes and MAX_BATCH (usually one).
    Puts are first packed by the bytes they carry, so a batch of large values is not encoded
    whole only to be split (the review: 20 puts of 8 MiB took 856 ms and 312 MiB to frame,
    one encode 151 ms); a packed run whose encoding still exceeds `limit` (other messages
    count only their few bytes here) is halved until it fits or holds one message."""
    out = []
    runs: list[list] = []
    run: list = []
    held = 0
    for msg in msgs:
        size = FRAME_SLACK
        if type(msg) is Put:  # (one comparison for the others: this runs per message sent)
            size += len(msg.key) + len(msg.value) + len(msg.context or b"")
        if run and (held + size > limit or len(run) >= MAX_BATCH):
            runs.append(run)
            run, held = [], 0
        run.append(msg)
        held += size
    if run:
        runs.append(run)
    stack = runs[::-1]
    while stack:
        chunk = stack.pop()
        payload = encode(chunk)
        if len(payload) > limit and len(chunk) > 1:
            half = len(chunk) // 2
            stack += [chunk[half:], chunk[:half]]
            continue
        out.append(payload)
    return out


def request_size(msg) -> int:
    """The bytes a client request holds while in flight: a write's value and context (a
    Forward's inner request's); 0 for a read."""
    if type(msg) is Forward:
        msg = msg.inner
    t = type(msg)
    if t is Put:  # (`or`: a request made in process, not decoded, may hold None)
        return len(msg.value or b"") + len(msg.context or b"")
    return len(msg.context or b"") if t is Delete else 0


def frame_limit(max_key: int, max_value: int) -> int:
    """Largest frame accepted from a client or peer.

    A peer batch may hold many versions, so peers get a multiple of one client request.
    """
    return 4 * (max_key + max_value + MAX_CONTEXT) + FRAME_OVERHEAD


def decode(data: bytes | memoryview, limit: int, requests: bool = False) -> list:
    """Messages of one frame; WireError for anything malformed, oversized or of another version
    (`requests`: a request socket's frame, whose messages may be requests only: `Request`).

    Nothing else escapes: msgspec's errors, RecursionError (arrays or maps nested past the
    decoder's depth limit, e.g. inside StatusOk.info), MemoryError and any other exception
    raised while decoding become a WireError, so the boundary has exactly one error type."""
    if len(data) > limit:
        raise WireError(f"frame of {len(data)} bytes exceeds the {limit}-byte limit")
    if len(data) < 3:
        _check_version(data)
        raise WireError("frame too short")
    try:
        frame = (_request_decoder if requests else _decoder).decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        _check_version(data)  # another version's frame: say so, whatever its shape
        raise WireError(f"undecodable frame: {clip(str(exc), 200)}") from None
    except RecursionError:
        raise WireError("undecodable frame: nested too deeply") from None
    except MemoryError:
        raise WireError("undecodable frame: out of memory while decoding") from None
    except Exception as exc:  # whatever else a decoder may raise: still one error type
        raise WireError(f"undecodable frame: {type(exc).__name__}") from None
    if frame.v != WIRE_VERSION:
        raise WireError(f"wire version {clip(frame.v)} not supported "
                        f"(this node speaks {WIRE_VERSION})")
    if len(frame.msgs) > MAX_BATCH:
        raise WireError(f"{len(frame.msgs)} messages in one frame (max {MAX_BATCH})")
    return frame.msgs


def _check_version(data: bytes | memoryview) -> None:
    """WireError naming the version if `data` starts like a frame of another wire version."""
    try:
        v = _head_decoder.decode(data).v
    except Exception:
        return
    if v != WIRE_VERSION:
        raise WireError(f"wire version {clip(v)} not supported "
                        f"(this node speaks {WIRE_VERSION})")


def clip(value, limit: int = 80) -> str:
    """A peer-supplied value made safe for one log line: repr'd, cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def check_key(key, max_key: int = DEFAULT_MAX_KEY) -> None:
    if type(key) is not bytes:
        raise InvalidRequest(f"key must be bytes, not {type(key).__name__}")
    if not 1 <= len(key) <= max_key:
        raise InvalidRequest(f"key must be 1 to {max_key} bytes, got {len(key)}")


def check_value(value, max_value: int = DEFAULT_MAX_VALUE) -> None:
    if type(value) is not bytes:
        raise InvalidRequest(f"value must be bytes, not {type(value).__name__}")
    if len(value) > max_value:
        raise InvalidRequest(f"value of {len(value)} bytes exceeds the {max_value}-byte limit")


def check_context(context) -> None:
    if context is None:
        return
    if type(context) is not bytes:
        raise InvalidRequest(f"context must be bytes, not {type(context).__name__}")
    if len(context) > MAX_CONTEXT:
        raise InvalidRequest(f"context of {len(context)} bytes is too large")


def check_wid(wid) -> None:
    """A write id: bytes of at most MAX_WID (b"": none)."""
    if type(wid) is not bytes:
        raise InvalidRequest(f"write id must be bytes, not {type(wid).__name__}")
    if len(wid) > MAX_WID:
        raise InvalidRequest(f"write id of {len(wid)} bytes exceeds {MAX_WID}")


def check_quorum(name: str, value, n: int | None) -> None:
    """r/w must be None/0 (cluster default) or an int 1..N."""
    if value is None:
        return
    if type(value) is not int:
        raise InvalidRequest(f"{name} must be an int, not {type(value).__name__}")
    if n is None:  # N not known yet (no ring fetched): the node checks the upper bound
        if not 1 <= value <= 255:
            raise InvalidRequest(f"{name} must be between 1 and N, got {value}")
    elif not 1 <= value <= n:
        raise InvalidRequest(f"{name} must be between 1 and N={n}, got {value}")
