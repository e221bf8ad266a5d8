"""Loaded by every Python process whose PYTHONPATH starts with this folder (see run.py):
with ZKV_TURN_PROFILE=<dir> set, a zkv node counts the CPU time (its thread's, not the wall
clock) and the calls of each part of its loop turn, and writes them to <dir>/<pid>.txt when it
exits (other processes, the client's, write nothing). Each wrapper costs ~1 us per call,
included in the figures. Without the variable nothing happens."""

import os

if os.environ.get("ZKV_TURN_PROFILE"):
    import atexit
    import collections
    import time

    _ns: collections.Counter = collections.Counter()
    _calls: collections.Counter = collections.Counter()

    def _wrap(cls, name: str, label: str) -> None:
        orig = getattr(cls, name)
        clock = time.thread_time_ns

        def timed(*args, **kwargs):
            t = clock()
            try:
                return orig(*args, **kwargs)
            finally:
                _ns[label] += clock() - t
                _calls[label] += 1

        setattr(cls, name, timed)

    def _install() -> None:
        from zkv.node import conns, core, reactor, transport

        for cls, name, label in (
                (transport.Node, "turn", "turn"),
                (reactor.Reactor, "poll", "poll"),
                (transport.Node, "_drain_router", "drain ROUTER"),
                (transport.Node, "_drain", "drain other"),
                (core.NodeCore, "handle", "handle"),
                (conns.Connections, "tick", "conns.tick"),
                (core.NodeCore, "tick", "core.tick"),
                (transport.Node, "flush", "flush"),
                (transport.Node, "_send_frames", "send frames"),
                (core.NodeCore, "persist", "persist")):
            _wrap(cls, name, label)

    def _dump() -> None:
        if not _calls["turn"]:
            return  # not a node (the client driving the load)
        path = os.path.join(os.environ["ZKV_TURN_PROFILE"], f"{os.getpid()}.txt")
        with open(path, "w") as f:
            f.write(f"process {time.process_time_ns()} 1\n")
            for label, ns in _ns.items():
                f.write(f"{label.replace(' ', '_')} {ns} {_calls[label]}\n")

    _install()
    atexit.register(_dump)
