"""CurveZMQ keys, the ZAP handler and socket options: who may talk to a node (DESIGN.md 2.5).

Keys (pyzmq's certificate format, as `zmq.auth.create_certificates` writes them; every
`*.key_secret` file has mode 0600):

    DIR/cluster.key, DIR/cluster.key_secret      the cluster's key pair, held by every node
    DIR/clients/NAME.key, NAME.key_secret         a client key pair (metadata role = "admin"
                                                  for an admin client key)

`keygen(DIR)` writes the cluster pair and an admin client key `DIR/clients/admin`;
`keygen(DIR, client=NAME, admin=...)` adds one client key. A client is configured with the
path `DIR/clients/NAME` (its key pair) and finds the cluster's *public* key `cluster.key` next
to it or one directory up, so a client machine needs NAME.key_secret + cluster.key only.

Roles. A node's ZAP handler (`Authenticator`) admits a CURVE connection whose public key is
the cluster key (User-Id "peer") or one of the `DIR/clients/*.key` files (User-Id
"client:NAME" or "admin:NAME"); everything else is refused. (ZAP does not see the client's
routing identity, so the transport enforces the other half: a frame whose identity claims
b"peer:..." but whose User-Id is not "peer" is a client's. Peers' routing identities carry a
random suffix, b"peer:<id>/<nonce>", so no client can take over a peer's reply route with
ROUTER_HANDOVER by guessing it.) The transport reads the User-Id of every request frame (`role_of`) and the node core decides
which messages each role may send (zkv/node/core.py ROLE_MESSAGES). The allow-list is
reloaded when a key file is added, removed or changed (checked at most every RELOAD_CHECK
seconds, on the next handshake).

Socket roles: `server_socket` (the ROUTER and the gossip PUB: CURVE server, ZAP domain
"zkv"), `peer_socket` (a node's DEALERs and SUBs: CURVE client with the cluster pair, server
key = the cluster key), `client_socket` (a client's DEALER with its own pair). With keys,
CURVE servers refuse plain-text connections at the handshake.

A client learns that it was refused from its socket monitor (`HandshakeWatch`):
EVENT_HANDSHAKE_FAILED_AUTH (the ZAP handler said no) or EVENT_HANDSHAKE_FAILED_PROTOCOL /
NO_DETAIL (no key, or the wrong server key) become `AuthenticationError` naming the endpoint,
instead of a timeout. `request()` is a one-shot client call built on all of this (tests, the
fuzz tool, and the reference for the client's integration).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable

import zmq
import zmq.auth

from zkv import errors, wire
from zkv.errors import ZkvError
from zkv.node import seal

log = logging.getLogger("zkv.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"zkv"
GOSSIP_DOMAIN = b"zkv-gossip"  # the gossip PUB: cluster peers only, no client key
CLUSTER = "cluster"
CLIENTS = "clients"
PEER_USER = "peer"
RELOAD_CHECK = 0.2  # seconds between checks of the key files for changes
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ROLE_RE = re.compile(r'^\s*role\s*=\s*"?([a-z]+)"?\s*$', re.M)


AuthenticationError = errors.AuthenticationError


def has_curve() -> bool:
    """CurveZMQ available, and backed by libsodium rather than the slow tweetnacl fallback."""
    if not zmq.has("curve"):
        return False
    import glob as _glob

    libs = os.path.join(os.path.dirname(os.path.dirname(zmq.__file__)), "pyzmq.libs")
    bundled = _glob.glob(os.path.join(libs, "libzmq*"))
    for lib in bundled:
        with open(lib, "rb") as fh:
            if b"tweetnacl" in fh.read():
                return False
    return True


# ---- keys ---------------------------------------------------------------------------------
def _write_pair(directory: str, name: str, metadata: dict | None = None) -> tuple[str, str]:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    old = os.umask(0o077)  # the secret is never readable by others, not even for a moment
    try:
        public, secret = zmq.auth.create_certificates(directory, name, metadata=metadata)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    if metadata:  # pyzmq writes metadata to the secret file only; the node reads the public one
        with open(public) as fh:
            text = fh.read()
        lines = "".join(f"    {k} = {v}\n" for k, v in metadata.items())
        with open(public, "w") as fh:
            fh.write(text.replace("metadata\n", "metadata\n" + lines, 1))
    return public, secret


def keygen(directory: str, client: str | None = None, admin: bool = False,
           overwrite: bool = False) -> list[str]:
    """`zkv keygen DIR`: the cluster key pair and an admin client key (DIR/clients/admin);
    `zkv keygen DIR --client NAME [--admin]`: one more client key. Returns the files written.
    Refuses to overwrite an existing key (a new cluster key locks every node out)."""
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ZkvError(f"{directory} is a file, not a keys directory")
    written: list[str] = []
    if client is None:
        if os.path.exists(os.path.join(directory, CLUSTER + ".key_secret")) and not overwrite:
            raise ZkvError(f"{directory} already holds a cluster key; refusing to overwrite it")
        written += _write_pair(directory, CLUSTER)
        client, admin = "admin", True
    elif not os.path.exists(os.path.join(directory, CLUSTER + ".key")):
        raise ZkvError(f"{directory} holds no cluster key: `zkv keygen {directory}` makes it "
                       "(and an admin client key) first; --client adds keys beside it")
    if not NAME_RE.match(client):
        raise ZkvError(f"client name {client!r}: 1-64 characters of [A-Za-z0-9_.-]")
    cdir = os.path.join(directory, CLIENTS)
    if os.path.exists(os.path.join(cdir, client + ".key")) and not overwrite:
        raise ZkvError(f"client key {client} already exists in {cdir}")
    written += _write_pair(cdir, client, {"role": "admin" if admin else "client"})
    return written


def _load_pair(path: str) -> tuple[bytes, bytes]:
    """(public, secret) from NAME.key_secret; ZkvError naming the file when unusable."""
    secret_path = path if path.endswith(".key_secret") else path + ".key_secret"
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
    except (OSError, ValueError) as exc:
        raise ZkvError(f"cannot read key {secret_path}: {exc}") from None
    if not secret:
        raise ZkvError(f"{secret_path} holds no secret key")
    mode = os.stat(secret_path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by others (mode %o); it should be 0600", secret_path,
                    stat.S_IMODE(mode))
    return public, secret


def _load_public(path: str) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ZkvError(f"cannot read key {path}: {exc}") from None
    return public


class NodeKeys:
    """What a node holds: the cluster key pair, and where client keys are listed."""

    def __init__(self, directory: str) -> None:
        self.dir = os.path.abspath(directory)
        self.public, self.secret = _load_pair(os.path.join(self.dir, CLUSTER))
        self.clients_dir = os.path.join(self.dir, CLIENTS)
        self.seal_key = seal.seal_key(self.secret)  # contexts given to clients (node/seal.py)


class ClientKeys:
    """A client's key pair and the cluster's public key (`Client(keys="DIR/clients/NAME")`)."""

    def __init__(self, path: str) -> None:
        path = os.path.abspath(path)
        if os.path.isdir(path):  # (a `zkv keygen DIR` itself: the nodes' keys, not a client's)
            names = sorted({f[:-len(".key_secret")] for f in os.listdir(
                os.path.join(path, CLIENTS)) if f.endswith(".key_secret")}) if os.path.isdir(
                os.path.join(path, CLIENTS)) else []
            raise ZkvError(f"keys {path} is a directory: pass a client's key, "
                           f"DIR/{CLIENTS}/NAME (" + (", ".join(
                               os.path.join(path, CLIENTS, n) for n in names[:3])
                               if names else f"make one: zkv keygen {path} --client NAME")
                           + ")")
        if not os.path.exists(path + ".key_secret") and not os.path.exists(path):
            raise ZkvError(f"keys {path}: no such key ({path}.key_secret does not exist; "
                           f"`zkv keygen DIR --client NAME` makes DIR/{CLIENTS}/NAME)")
        for suffix in (".key_secret", ".key"):
            if path.endswith(suffix):
                path = path[: -len(suffix)]
        self.name = os.path.basename(path)
        self.public, self.secret = _load_pair(path)
        here = os.path.dirname(path)
        for cand in (os.path.join(here, CLUSTER + ".key"),
                     os.path.join(os.path.dirname(here), CLUSTER + ".key")):
            if os.path.exists(cand):
                self.server_public = _load_public(cand)
                break
        else:
            raise ZkvError(f"no {CLUSTER}.key (the cluster's public key) next to {path} "
                           "or one directory up")


def client_keys(keys) -> ClientKeys | None:
    """Accept None, a path, or ClientKeys (what `Client(keys=...)` should call)."""
    if keys is None or isinstance(keys, ClientKeys):
        return keys
    return ClientKeys(os.fspath(keys))


# ---- socket options -------------------------------------------------------------------------
def server_socket(sock: zmq.Socket, keys: NodeKeys, peers_only: bool = False) -> None:
    """ROUTER / PUB of a node: CURVE server; the ZAP handler decides who gets in
    (`peers_only`: the gossip PUB, which no client key may subscribe to)."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, GOSSIP_DOMAIN if peers_only else ZAP_DOMAIN)
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def peer_socket(sock: zmq.Socket, keys: NodeKeys) -> None:
    """A node's DEALER to a peer or SUB to a peer's gossip: CURVE client with the cluster pair."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def client_socket(sock: zmq.Socket, keys: ClientKeys) -> None:
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def announce(keys: NodeKeys | None, listen: str) -> None:
    """Say at a node's start how it is reached: with CurveZMQ, or in plain text (a warning)."""
    if keys is not None:
        log.info("CurveZMQ on every socket (keys in %s); plain text is refused", keys.dir)
    else:
        log.warning("serving in plain text without authentication (no --keys): anyone who can "
                    "reach %s can read and write; development only", listen)


_FINGERPRINT = 8  # characters of a client key's public key (Z85) at the end of its User-Id


def _user_parts(user: str) -> tuple[str, str]:
    """A client key's User-Id ("ROLE:NAME/FINGERPRINT") as ("ROLE:NAME", FINGERPRINT); any
    other ("peer") as (user, "")."""
    if len(user) > _FINGERPRINT + 1 and user[-_FINGERPRINT - 1] == "/" and ":" in user:
        return user[:-_FINGERPRINT - 1], user[-_FINGERPRINT:]
    return user, ""


def role_of(user_id: str | None) -> str | None:
    """The node core's role for a ZAP User-Id ("peer", "admin", "client"), None if unknown."""
    if not user_id:
        return None
    if user_id == PEER_USER:
        return "peer"
    kind = user_id.split(":", 1)[0]
    return kind if kind in ("admin", "client") else None


# ---- the ZAP handler ------------------------------------------------------------------------
def _key_changes(before: dict[str, str], now: dict[str, str],
                 describe: Callable[[str], str]) -> str:
    """What a reload changed, for its log line: "; added ...; removed ...; replaced ..."
    (User-Id -> public key, before and now)."""
    parts = []
    for what, users in (("added", sorted(set(now) - set(before))),
                        ("removed", sorted(set(before) - set(now))),
                        ("replaced (a new key pair)",
                         sorted(u for u in set(now) & set(before) if now[u] != before[u]))):
        if users:
            parts.append(f"{what}: {', '.join(describe(u) for u in users)}")
    return "".join(f"; {p}" for p in parts)


class Authenticator:
    """ZAP (RFC 27) handler thread on a node's context; allow-list reloaded on key changes."""

    def __init__(self, ctx: zmq.Context, keys: NodeKeys) -> None:
        self.ctx = ctx
        self.keys = keys
        self.allowed: dict[bytes, str] = {}  # z85 public key -> User-Id
        self.users: frozenset[str] = frozenset()  # the User-Ids allowed now
        self.publics: dict[str, str] = {}  # "ROLE:NAME" -> its public key (removed ones too)
        self.signature: tuple = ()
        self.next_check = 0.0
        self.denied = 0
        self.granted = 0
        self._stop = threading.Event()
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)  # before any CURVE server socket binds
        self.reload(force=True)
        self.thread = threading.Thread(target=self._run, name="zkv-zap", daemon=True)
        self.thread.start()

    def _files(self) -> list[str]:
        return sorted(glob.glob(os.path.join(self.keys.clients_dir, "*.key")))

    def role_of(self, user_id: object) -> str | None:
        """The role of a request frame's ZAP User-Id, None if its key is not allowed now: a
        key removed, replaced by a new pair under its name, or turned from admin to client
        stops being served on the connections it opened too, not only for new ones (a
        security review: a revoked key's open connection still wrote at once and read 20 s
        later; another: a key pair made again under its name kept the old one's open
        connections writing, as the User-Id named the key's name only)."""
        uid = str(user_id)
        return role_of(uid) if uid in self.users else None

    def why_refused(self, user_id: object) -> str:
        """Why `role_of` refused a connection's User-Id, for its refusal."""
        base, _ = _user_parts(str(user_id))
        role, _, name = base.partition(":")
        for user in self.users:
            now, _ = _user_parts(user)
            if now == base:
                return ("this connection's key was replaced by a new key pair under its name "
                        "(zkv keygen): reconnect with the new one")
            if now.partition(":")[2] == name and name:
                return (f"this connection's key {name!r} is a {now.partition(':')[0]} key now, "
                        f"no longer {'an' if role == 'admin' else 'a'} {role} key: reconnect")
        return ("this connection's key is no longer allowed (removed from the node's keys "
                "dir): reconnect with another")

    def describe(self, user: str) -> str:
        """A User-Id as a log names it: its role, name and public key's first characters."""
        base, public = _user_parts(user)
        role, _, name = base.partition(":")
        public = public or self.publics.get(base, "")[:8]
        return (f"{role} key {name!r}" if name else f"key {user!r}") + (
            f" (public key {public}...)" if public else "")

    def reload(self, force: bool = False) -> bool:
        """Re-read the allow-list if any key file changed; True when it did (the ZAP
        thread's, once it runs)."""
        files = self._files()
        sig = []
        for f in [os.path.join(self.keys.dir, CLUSTER + ".key"), *files]:
            try:
                st = os.stat(f)
                sig.append((f, st.st_mtime_ns, st.st_size))
            except OSError:
                pass
        sig_t = tuple(sig)
        if sig_t == self.signature and not force:
            return False
        allowed = {zmq.utils.z85.encode(zmq.utils.z85.decode(self.keys.public)): PEER_USER}
        for f in files:
            name = os.path.basename(f)[: -len(".key")]
            try:
                with open(f) as fh:
                    text = fh.read()
                public = _load_public(f)
            except (OSError, ZkvError) as exc:
                log.warning("skipping client key %s: %s", f, exc)
                continue
            m = _ROLE_RE.search(text)
            role = "admin" if m and m.group(1) == "admin" else "client"
            if public in allowed and allowed[public] == PEER_USER:
                log.warning("client key %s is the cluster key: ignored", f)
                continue
            # (its public key's first characters in the User-Id: a new pair under the same
            # name is another user, and the old pair's open connections are refused)
            allowed[public] = f"{role}:{name}/{public[:_FINGERPRINT].decode()}"
        changed = bool(self.signature) and allowed != self.allowed
        before = {_user_parts(user)[0]: public.decode() for public, user in self.allowed.items()
                  if user != PEER_USER}
        now = {_user_parts(user)[0]: public.decode() for public, user in allowed.items()
               if user != PEER_USER}
        self.publics.update(now)
        self.allowed = allowed
        self.users = frozenset(allowed.values())
        self.signature = sig_t
        if changed:
            log.info("client keys reloaded: %d client key(s)%s", len(allowed) - 1,
                     _key_changes(before, now, self.describe))
        return True

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            self._reload_due()  # (handshakes or not: a key removed stops its open connections)
            try:
                if not poller.poll(200):
                    continue
                frames = self.sock.recv_multipart()
            except zmq.ZMQError:
                return  # context terminated
            try:
                self.sock.send_multipart(self._answer(frames))
            except zmq.ZMQError:
                return

    def _reload_due(self) -> None:
        """Re-read the key files if RELOAD_CHECK has passed since they were last read (this
        thread's: the node's loop only reads `users`)."""
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + RELOAD_CHECK
            self.reload()

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = frames[:6]
        creds = frames[6:]

        def no(code: bytes, text: str) -> list[bytes]:
            self.denied += 1
            if self.denied <= 20 or self.denied % 1000 == 0:
                log.warning("refused a %s connection from %s: %s (%d refused)",
                            mechanism.decode("ascii", "replace")[:10],
                            wire.clip(address.decode("ascii", "replace"), 60), text, self.denied)
            return [b"1.0", request_id, code, text.encode(), b"", b""]

        if version != b"1.0":
            return [b"1.0", request_id, b"500", b"ZAP version", b"", b""]
        if domain not in (ZAP_DOMAIN, GOSSIP_DOMAIN):
            return no(b"400", "unknown ZAP domain")
        if mechanism != b"CURVE" or len(creds) != 1 or len(creds[0]) != 32:
            return no(b"400", "plain text refused: this node requires CurveZMQ keys")
        self._reload_due()
        user = self.allowed.get(zmq.utils.z85.encode(creds[0]))
        if user is None and self.reload():  # a key added this instant (a stat per refusal,
            user = self.allowed.get(zmq.utils.z85.encode(creds[0]))  # cheap next to CURVE)
        if user is None:
            return no(b"400", "unknown key")
        if domain == GOSSIP_DOMAIN and user != PEER_USER:
            return no(b"400", f"{user} may not listen to gossip")
        self.granted += 1
        return [b"1.0", request_id, b"200", b"OK", user.encode(), b""]

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close(0)


# ---- data at rest ----------------------------------------------------------------------------
def private_data(data_dir: str) -> str | None:
    """A node with --keys: what it creates from now on is its user's only (umask 077: files
    0600, dirs 0700), and a data dir others can read is named (a WARNING, returned): its
    segments hold the values the keys keep off the network (an outside review found them 0644
    under a 0755 dir). The operator fixes the dir (as PostgreSQL asks of its data dir)."""
    os.umask(0o077)
    try:
        mode = stat.S_IMODE(os.stat(data_dir).st_mode)
    except FileNotFoundError:
        return None  # (made now, 0700)
    if not mode & 0o077:
        return None
    why = (f"data dir {data_dir} is mode {mode:04o}: other local users can read the values "
           f"it stores, which --keys keeps off the network (chmod -R go-rwx {data_dir})")
    log.warning("%s", why)
    return why


# ---- a client learning it was refused -------------------------------------------------------
_FAILED: dict[int, str] = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the node refused this client's key",
           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "CurveZMQ handshake failed (no key, or "
                                                "not this cluster's key)",
           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "CurveZMQ handshake failed (no key, or "
                                                 "not this cluster's key)"}


# errnos of a handshake that failed with no refusal by the other side: its timer (EAGAIN), or
# the path lost under it (TCP_MAXRT giving up on a lossy or black-holed link: ETIMEDOUT; ICMP
# unreachables). A gray node whose port took connections and lost their data made clients of a
# keyless cluster raise AuthenticationError ("a node that requires keys") after two such
# handshakes, 742 of 2.25M calls with four healthy nodes up (an outside run).
_NOT_A_REFUSAL = frozenset({errno.EAGAIN, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                            errno.ENETUNREACH, errno.EHOSTDOWN})


class HandshakeWatch:
    """The socket monitor of one client socket: `failure()` is why its handshake with
    `endpoint` failed (None while none did). Create it before connecting."""

    def __init__(self, sock: zmq.Socket, endpoint: str) -> None:
        self.endpoint = endpoint
        events = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED
                  | zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_DELAYED
                  | zmq.EVENT_CONNECT_RETRIED)
        self.owner: zmq.Socket = sock.get_monitor_socket(events)
        # an asyncio socket's monitor is an asyncio socket too: read it through a plain view
        self.mon: zmq.Socket = zmq.Socket.shadow(self.owner.underlying)
        self.sock = sock
        self.failed: str | None = None
        self.ok = False
        self.connected = False  # the TCP connection is up (its handshake may not be done)
        # a connect() in progress: its SYN sent, neither answered nor refused yet. A refused
        # one ends within a millisecond on a LAN (its start and end read together); one still
        # open when the events were last read and ended since timed out (its SYNs lost: the
        # redial follows in sockopts.RECONNECT_IVL_MS), and counts as dialing until then
        self._connecting = False  # a connect() begun (CONNECT_DELAYED), not yet ended
        self._was_connecting = False  # ... so as of the end of the last read of the events
        self._redial = False  # the last connect() timed out: its redial is due
        self.was_connected = False  # ... was, at some point (and its handshake never done)
        # a connection whose handshake had succeeded closed: the node served here, so a
        # refusal since is a node stopped or restarting, not a port that is no zkv node's (an
        # outside run read "not a zkv --listen endpoint" for seconds after a node's SIGTERM)
        self.served = False
        self.keyed = sock.getsockopt(zmq.MECHANISM) == zmq.CURVE  # (keys set before this)
        # handshakes cut off in a row by the other side closing the connection, no refused
        # connect (a process gone) or handshake timeout (one paused) between. One is a node
        # killed or restarted during it (an outside run's client raised AuthenticationError
        # for 5 s after a paused node was killed, while two nodes served); a second, on the
        # redial is a refusal: a wrong cluster key, or keys this side lacks
        self._cut = 0
        self._reached = False  # the current connect() attempt reached TCP's CONNECTED

    def failure(self) -> str | None:
        from zmq.utils.monitor import parse_monitor_message

        while True:
            try:
                ev = parse_monitor_message(self.mon.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            except zmq.ZMQError:
                break
            if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.ok, self.failed, self._cut = True, None, 0
            elif ev["event"] == zmq.EVENT_CONNECT_DELAYED:
                self._connecting, self._reached = True, False
            elif ev["event"] == zmq.EVENT_CONNECT_RETRIED:
                self._redial = self._was_connecting  # (else refused: begun and ended at once)
                self._connecting = self._was_connecting = False
                if not self._reached:  # refused or timed out: no process there, for now
                    self._cut, self.was_connected = 0, False
            elif ev["event"] == zmq.EVENT_CONNECTED:
                self.connected = self.was_connected = self._reached = True
                self._connecting = self._redial = False
            elif ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and (
                    ev["value"] in _NOT_A_REFUSAL or self._cut == 0):
                # its handshake timed out (a node paused past handshake_ivl, 30 s: an outside
                # run read "a node that requires keys" for it) or its path was lost, or the
                # first cut-off: not (yet) a refusal; the call fails over meanwhile
                # (unconnected_why). (A keyed node refuses plain text with a mechanism
                # mismatch, or, as a CI rehearsal found, by closing first: a cut-off again on
                # the redial)
                self._cut = 0 if ev["value"] in _NOT_A_REFUSAL else 1
            elif ev["event"] == zmq.EVENT_DISCONNECTED:
                if self.ok:
                    self.served, self.was_connected = True, False
                self.connected = self.ok = False
            elif ev["event"] in _FAILED:
                detail = _FAILED[ev["event"]]
                if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    detail += f" (ZAP status {int(ev['value'])})"
                elif not self.keyed:  # (no CurveZMQ on this side: an operator's run read
                    # "CurveZMQ handshake failed" for a seed given a node's metrics port)
                    detail = ("ZeroMQ handshake failed: a node that requires keys (this side "
                              "has none), or not a zkv --listen endpoint (a --gossip or "
                              "metrics port?), or a node at its connection cap")
                self.failed = detail
        self._was_connecting = self._connecting
        return self.failed

    @property
    def dialing(self) -> bool:
        """A TCP connect under way or due again: its SYN neither answered nor refused (as of
        the last `failure()`)."""
        return self._connecting or self._redial

    def error(self) -> AuthenticationError | None:
        why = self.failure()
        return AuthenticationError(f"{self.endpoint}: {why}") if why else None

    def unconnected_why(self) -> str:
        """Why a connection that `error()` found no refusal on is not usable yet (after it)."""
        if self.connected and not self.ok:
            return ("it accepted the TCP connection but did not complete the ZeroMQ handshake: "
                    "paused (SIGSTOP), overloaded, on a slow link, or not a zkv node")
        if self.connected:
            return ("its connection is up but takes no more requests (the queue to it is "
                    "full): paused (SIGSTOP), starved of CPU, or overloaded")
        if self._cut:  # (not connected: said above)
            return ("it closed the TCP connection during the ZeroMQ handshake: stopped or "
                    "restarting, at its connection cap, or not a zkv --listen endpoint")
        if self.was_connected and not self.ok:  # (a --gossip port: its PUB socket closes a
            # DEALER's connection at the handshake; it read "no TCP connection")
            return ("it accepted the TCP connection and closed it before a ZeroMQ handshake: "
                    "not a zkv --listen endpoint (a --gossip port?)")
        if self.dialing:
            return ("no answer to the TCP connection request yet: a slow or lossy link, its "
                    "host down, or a firewall dropping it")
        if self.served:
            return ("no TCP connection since it closed the last one: stopped or restarting, "
                    "or not listening there any more")
        if _named_host(self.endpoint):  # (a name that does not resolve looks the same)
            return ("no TCP connection: down, not listening there, or its host name does not "
                    "resolve")
        return "no TCP connection: down, or not listening there"

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.owner.close(0)


def request(endpoint: str, msgs: list, keys=None, timeout: float = 2.0,
            ctx: zmq.Context | None = None, identity: bytes | None = None) -> list:
    """Send one frame of `msgs` to a node and return the messages of its answer.

    AuthenticationError (naming the endpoint) if the node refuses the handshake,
    zkv.errors.RequestTimeout if nothing answers in `timeout` seconds."""
    keys = client_keys(keys)
    own = ctx is None
    ctx = ctx or zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    if keys is not None:
        client_socket(sock, keys)
    watch = HandshakeWatch(sock, endpoint)
    try:
        sock.connect(endpoint)
        sock.send(wire.encode(msgs))
        deadline = time.monotonic() + timeout
        while True:
            err = watch.error()
            if err is not None:
                raise err
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.RequestTimeout(f"{endpoint}: no answer within {timeout}s")
            if sock.poll(min(50, max(1, int(left * 1000)))):
                return wire.decode(sock.recv(), 1 << 30)
    finally:
        watch.close()
        sock.close(0)
        if own:
            ctx.term()


def _named_host(endpoint: str) -> bool:
    """True when `endpoint` names its host (tcp://db1:7001) rather than giving an address: libzmq
    reports a name that does not resolve as it does a refused connection, and looking it up
    here could block on a resolver."""
    import ipaddress

    from zkv.config import parse_endpoint

    try:
        host, _ = parse_endpoint(endpoint)
    except ValueError:
        return False
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host != "*"
    return False
