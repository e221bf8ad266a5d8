"""The guided demo `zkv local up` walks a person through: quorums, a paused node, siblings, merge.

Its keys are its own (demo:cart:42, demo:cart:7: the README's examples use cart:42), and
each write replaces what the key held, so a run on a data dir kept from an earlier run shows
what the first one did (blind writes there made siblings with the old values)."""

from __future__ import annotations

import time

from zkv._core.ring import Ring
from zkv.client import Client
from zkv.local import LocalCluster

KEY, OTHER = b"demo:cart:42", b"demo:cart:7"


def _step(n: int, title: str) -> None:
    print(f"\n[{n}] {title}")


def _show(res) -> str:
    if not res.found:
        return "(not found)"
    return " | ".join(v.decode(errors="replace") for v in res.values)


def run_demo(cluster: LocalCluster) -> None:
    eps = cluster.endpoints
    with Client(eps, timeout=3.0) as c:
        ring = c.ring_info()
        n = ring.n  # (the cluster's N, not its size: 4 nodes keep 3 copies by default)
        q = min(2, n)
        _step(1, f"put demo:cart:42 = [book] with W={q}")
        old = c.get(KEY).context  # (a run before left a tombstone: replaced, not a sibling)
        t = time.perf_counter()
        ctx = c.put(KEY, b"[book]", w=q, context=old)
        print(f"    acknowledged by {q} replicas in {(time.perf_counter() - t) * 1e3:.1f} ms;"
              f" context is {len(ctx)} opaque bytes")

        _step(2, "read it back at several read quorums")
        for r in range(1, n + 1 if n <= 3 else 4):
            t = time.perf_counter()
            res = c.get(KEY, r=r)
            print(f"    R={r}: {_show(res):<24} {(time.perf_counter() - t) * 1e3:6.1f} ms"
                  f"  (R+W={r + q} {'>' if r + q > n else '<='} N={n})")

        # a replica of demo:cart:7 (the last of its preference list): the write goes on
        # with the others
        owners = Ring([(m.id, m.rack) for m in ring.members if not ring.owners
                       or m.id in ring.owners], q=ring.q, n=n,
                      tokens=ring.tokens).preflist_for_key(OTHER)
        victim = next((x for x in cluster.nodes if x.id == owners[-1]), None)
        if n >= 3 and victim is not None:
            _step(3, f"pause {victim.id} (SIGSTOP) and keep writing with W=2")
            old = c.get(OTHER).context
            cluster.pause(victim.id)
            try:
                t = time.perf_counter()
                c.put(OTHER, b"[lamp]", w=2, context=old)
                print(f"    put demo:cart:7 succeeded in {(time.perf_counter() - t) * 1e3:.1f} ms"
                      f" with {victim.id}, one of its {n} replicas, frozen: two live "
                      "replicas are a quorum")
                print(f"    get demo:cart:7 at R=2 -> {_show(c.get(OTHER, r=2))}")
            finally:
                cluster.resume(victim.id)
                print(f"    {victim.id} resumed (SIGCONT)")

    _step(4, "two clients write concurrently from the same starting point")
    with Client([eps[0]], timeout=3.0) as a, Client([eps[-1]], timeout=3.0) as b:
        base = a.get(KEY)
        a.put(KEY, b"[book, pen]", context=base.context)
        b.put(KEY, b"[book, mug]", context=base.context)
        res = a.get(KEY, r=min(2, n))
        print(f"    get demo:cart:42 -> {len(res.values)} sibling(s): {_show(res)}")
        print("    neither write was lost: the store cannot know how to merge carts, you do")

        _step(5, "merge the siblings (union of items) and write back with the read's context")
        items = sorted({item.strip() for v in res.values for item in v.decode()[1:-1].split(",")})
        merged = ("[" + ", ".join(items) + "]").encode()
        a.put(KEY, merged, context=res.context)
        print(f"    get demo:cart:42 -> {_show(a.get(KEY, r=min(2, n)))}")

        _step(6, "delete it with the context of what we saw (a tombstone)")
        cur = a.get(KEY)
        a.delete(KEY, context=cur.context)
        print(f"    get demo:cart:42 -> {_show(a.get(KEY, r=min(2, n)))}")
    print("\ndemo done.")
