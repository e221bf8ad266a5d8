"""Loaded by every Python process whose PYTHONPATH starts with this folder (see run.py):
with ZKV_TURN_PROFILE=<dir> set, a zkv node counts the CPU time (its thread's, not the wall
clock) and the calls of each part of its loop turn, and writes them to <dir>/<pid>.txt when it
exits (other processes, the client's, write nothing). Each wrapper costs ~1 us per call,
included in the figures. Without the variable nothing happens.

It also keeps each turn's busy time on the wall clock beside its thread CPU (both without
the turn's poll, where it waits for input): a histogram of the busy times and the LONGEST
turns, each with its CPU and what it was spent on (the parts that hold no other part, and
the garbage collector's passes as "gc"). A turn never blocks outside its poll, so wall time
beyond CPU is time the node was ready to run and the machine ran something else (or a page
fault's I/O)."""

import os

if os.environ.get("ZKV_TURN_PROFILE"):
    import atexit
    import collections
    import signal
    import time

    _ns: collections.Counter = collections.Counter()
    _calls: collections.Counter = collections.Counter()
    LONGEST = 10  # turns kept, by busy wall time
    BUCKETS = 12  # busy-time histogram: < 50 us, then doubling (the last: everything longer)
    _busy = [0] * BUCKETS
    _longest: list[tuple[int, int, str]] = []  # heap of (busy wall ns, CPU ns, its parts)
    _turn: collections.Counter = collections.Counter()  # this turn's CPU by part
    _since = [0]  # the process's CPU (ns) when the figures were last reset
    _reset_asked = [False]  # SIGUSR1 (run.py, once the load's warm-up is over)

    def _reset() -> None:
        """Forget everything counted so far (at the start of a turn, after SIGUSR1)."""
        _reset_asked[0] = False
        _ns.clear()
        _calls.clear()
        _busy[:] = [0] * BUCKETS
        _longest.clear()
        _since[0] = time.process_time_ns()

    # what a longest turn's CPU is told by: the parts that hold no other part, and within
    # core.tick its background jobs (the rest of core.tick: timers, the ops' timeouts)
    LEAVES = ("handle", "conns.tick", "send frames", "persist", "gossip", "export", "background",
              "hint sweep", "transfers", "gc")

    def _wrap(cls, name: str, label: str) -> None:
        orig = getattr(cls, name)
        clock = time.thread_time_ns

        def timed(*args, **kwargs):
            t = clock()
            try:
                return orig(*args, **kwargs)
            finally:
                t = clock() - t
                _ns[label] += t
                _calls[label] += 1
                _turn[label] += t

        setattr(cls, name, timed)

    def _watch_gc() -> None:
        """The collector's passes as a part ("gc"), wherever in the turn they ran."""
        import gc

        clock, started = time.thread_time_ns, [0]

        def callback(phase, info):
            if phase == "start":
                started[0] = clock()
            else:
                t = clock() - started[0]
                _ns["gc"] += t
                _calls["gc"] += 1
                _turn["gc"] += t

        gc.callbacks.append(callback)

    def _wrap_turn(cls) -> list[int]:
        """Node.turn timed on both clocks. Its busy time and the CPU kept with it leave the
        poll out (its wait, and its CPU: `poll` adds both to the list returned); the "turn"
        part's CPU is the whole turn's."""
        import heapq

        orig, in_poll = cls.turn, [0, 0]  # this turn's poll: wall ns, CPU ns
        wall, cpu = time.perf_counter_ns, time.thread_time_ns

        def turn(self, *args, **kwargs):
            if _reset_asked[0]:
                _reset()
            w, c = wall(), cpu()
            in_poll[0] = in_poll[1] = 0
            _turn.clear()
            try:
                return orig(self, *args, **kwargs)
            finally:
                c = cpu() - c
                _ns["turn"] += c
                _calls["turn"] += 1
                busy = wall() - w - in_poll[0]
                c -= in_poll[1]
                b, x = 0, busy // 50_000
                while x and b < BUCKETS - 1:
                    x >>= 1
                    b += 1
                _busy[b] += 1
                if len(_longest) < LONGEST or busy > _longest[0][0]:
                    # the turn's CPU by part (the parts that contain no other part)
                    if _turn["export"]:  # (not counted twice: _gossip holds it)
                        _turn["gossip"] -= _turn["export"]
                    parts = ",".join(f"{k.replace(' ', '_')}={_turn[k]}" for k in LEAVES
                                     if _turn[k] * 100 >= c)
                    if len(_longest) < LONGEST:
                        heapq.heappush(_longest, (busy, c, parts))
                    else:
                        heapq.heapreplace(_longest, (busy, c, parts))

        cls.turn = turn
        return in_poll

    def _install() -> None:
        from zkv.node import background, conns, core, reactor, status, transfer, transport

        in_poll = _wrap_turn(transport.Node)
        poll = reactor.Reactor.poll
        wall, cpu = time.perf_counter_ns, time.thread_time_ns

        def timed_poll(self, timeout):  # the "poll" part, timed on both clocks
            w, c = wall(), cpu()
            try:
                return poll(self, timeout)
            finally:
                c = cpu() - c
                in_poll[0] += wall() - w
                in_poll[1] += c
                _ns["poll"] += c
                _calls["poll"] += 1

        reactor.Reactor.poll = timed_poll
        for cls, name, label in (
                (transport.Node, "_drain_router", "drain ROUTER"),
                (transport.Node, "_drain", "drain other"),
                (core.NodeCore, "handle", "handle"),
                (conns.Connections, "tick", "conns.tick"),
                (core.NodeCore, "tick", "core.tick"),
                (transport.Node, "flush", "flush"),
                (transport.Node, "_send_frames", "send frames"),
                (core.NodeCore, "persist", "persist"),
                (core.NodeCore, "_gossip", "gossip"),  # (export is called within it)
                (status.MetricsExport, "export", "export"),
                (background.Background, "tick", "background"),
                (core.NodeCore, "_sweep_hints", "hint sweep"),
                (transfer.Transfers, "tick", "transfers")):
            _wrap(cls, name, label)
        _watch_gc()
        signal.signal(signal.SIGUSR1, lambda signum, frame: _reset_asked.__setitem__(0, True))

    def _dump() -> None:
        if not _calls["turn"]:
            return  # not a node (the client driving the load)
        path = os.path.join(os.environ["ZKV_TURN_PROFILE"], f"{os.getpid()}.txt")
        with open(path, "w") as f:
            f.write(f"process {time.process_time_ns() - _since[0]} 1\n")
            for label, ns in _ns.items():
                f.write(f"{label.replace(' ', '_')} {ns} {_calls[label]}\n")
            f.write("busy " + " ".join(map(str, _busy)) + "\n")
            for busy, c, parts in sorted(_longest, reverse=True):
                f.write(f"longest {busy} {c} {parts}\n")

    _install()
    atexit.register(_dump)
