"""Sealed client contexts: a node takes back only a context this cluster issued for that key.

A write's causal context tells the coordinator which versions the writer has seen; the write
retires every sibling the context covers, on every replica, and its clock absorbs the whole
context. So a client that sends a context it never read can, with one message, retire
concurrent acknowledged writes it never saw (made-up counters cover their dots) or grow the
key's clock with made-up ids until the per-key size limit refuses every write to it. The
plausibility bound on counters (dvv.MAX_AHEAD) limits how far, not whether.

With --keys every node holds the cluster's secret key, so every context a node gives a
client (a coordinator's GetOk and PutOk, an owner's ReadOk for a client-coordinated read) is
sealed: tagged with a keyed BLAKE2b MAC over the storage key it is for and the context. A
client write's context is opened where it enters the cluster (the node the client sent it
to; peers forward the bare context): a forged or altered tag, or a context sealed for another
key (or namespace), is refused (InvalidRequest, nothing stored; counted in
zkv_contexts_refused). Without keys there is no trust to protect (anyone may connect and
write anything): nothing is sealed, and a sealed context is taken with its tag dropped
unchecked.

Cost, with keys. Timed alone (timeit): ~1.5 us per owner read (decode, context, MAC) and
~0.5 us per MAC. In a node serving sequential requests each runs cold (the loop wakes for one
request): py-spy of a keyed 3-node cluster under a get-then-put loop put ~3 us of wall time
on each MAC, and a get's p50 was 5-30 us longer than with `--context-seals off` (RESULTS.md).
hashlib's keyed BLAKE2b (a standard MAC) took about half the node's time in the MAC of the
blake3 binding, so it makes the tag; blake3's derive_key makes the key.

Modes (NodeConfig.context_seals, `zkv-node --context-seals`), for a rolling upgrade from a
version without seals, whose nodes refuse a sealed context as malformed:
    require  (default) seal what this node issues; refuse an unsealed context
    accept   seal what this node issues; take an unsealed one as before
    off      issue bare contexts; take unsealed ones (and sealed ones, checked)
Upgrade: restart every node on the new version with `off`, then each with `accept`, then each
with the default. Contexts are opaque to clients, but a client of a version before seals
derives its owner reads' contexts itself, unsealed: upgrade clients before `require`.

Format of a sealed context (bytes):
    1   SEALED (0x53, "S"); a bare context starts with 1 or 2 (dvv.pxd), or is empty
    16  tag: BLAKE2b (hashlib) keyed with the seal key, 16-byte digest, over
            4 bytes big-endian len(skey) | skey | the bare context
    *   the bare context (dvv.pxd)
The empty context and that of an absent key (NOTHING: both make a blind write) are never
sealed. The seal key is BLAKE3's derive_key of the cluster's CurveZMQ secret under
SEAL_KEY_CONTEXT, so every node derives the same key, and a new cluster key pair voids every
context issued before it (clients read again).
"""

from __future__ import annotations

import hmac
import struct
from hashlib import blake2b

import blake3

from zkv._core import dvv
from zkv.config import SEAL_MODES as MODES
from zkv.errors import InvalidRequest

SEALED = 0x53
TAG = 16
PREFIX = 1 + TAG  # bytes a seal adds
_SEALED_BYTE = bytes((SEALED,))
_LEN = struct.Struct(">I").pack  # the storage key's length, in front of it in the MAC's input
# the context of an absent key: covers nothing, adds no id (a blind write's), never sealed
NOTHING = dvv.EMPTY.context()
SEAL_KEY_CONTEXT = "zkv 2026-12-04 client context seal v1"


def seal_key(cluster_secret: bytes) -> bytes:
    """The 32-byte seal key every node derives from the cluster's CurveZMQ secret key."""
    return blake3.blake3(cluster_secret, derive_key_context=SEAL_KEY_CONTEXT).digest()


def bare(context: bytes) -> bytes:
    """The bare context of a sealed one, its seal unchecked (a client reading its own
    contexts: the dvv context functions take bare contexts only), else `context` itself."""
    return context[PREFIX:] if context[:1] == _SEALED_BYTE else context


class Sealer:
    """Seals and opens contexts with one key (None: no keys, nothing sealed or checked)."""

    __slots__ = ("key", "keyed", "issue", "require")

    def __init__(self, key: bytes | None, mode: str = "require") -> None:
        if mode not in MODES:
            raise ValueError(f"context seal mode {mode!r}: one of {', '.join(MODES)}")
        if key is not None and len(key) != 32:
            raise ValueError("a seal key is 32 bytes")
        self.key = key or b""
        self.keyed = key is not None  # else nothing is sealed, and no seal checked
        self.issue = self.keyed and mode != "off"  # seal what this node gives clients
        self.require = self.keyed and mode == "require"  # refuse unsealed contexts

    def _tag(self, skey: bytes, context: bytes) -> bytes:
        return blake2b(_LEN(len(skey)) + skey + context, key=self.key, digest_size=TAG).digest()

    def prefix(self, skey: bytes, context: bytes) -> bytes:
        """What sealing `context` for `skey` puts before it (b"": not sealed here)."""
        if not self.issue or not context or context == NOTHING:
            return b""
        return bytes((SEALED,)) + self._tag(skey, context)

    def seal(self, skey: bytes, context: bytes) -> bytes:
        """`context` as this node gives it to a client for the storage key `skey`."""
        return self.prefix(skey, context) + context

    def open(self, skey: bytes, context: bytes) -> bytes:
        """The bare context of a client's write to `skey`; InvalidRequest when the cluster
        did not issue it for this key (or it is unsealed and seals are required)."""
        if not context:
            return context
        if context[0] != SEALED:
            if self.require and context != NOTHING:
                raise InvalidRequest(
                    "context is not sealed by this cluster: pass the context a get or put "
                    "of this key returned, unchanged (or none, for a blind write)")
            return context
        bare = context[PREFIX:]
        if self.keyed and (
                len(context) <= PREFIX
                or not hmac.compare_digest(context[1:PREFIX], self._tag(skey, bare))):
            raise InvalidRequest(
                "context was not issued by this cluster for this key (its seal does not "
                "match): pass the context a get or put of this key returned, unchanged")
        return bare
