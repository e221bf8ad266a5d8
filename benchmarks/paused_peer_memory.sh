#!/bin/bash
# A coordinator's anonymous memory while four clients write 1 MiB values (w=1, batches of 8)
# for 40 s with one replica SIGSTOPped, and how many frames to that peer the byte cap dropped
# (zkv_peer_frames_dropped_total). A 3-node `zkv local up` on ports 33001-33003 (gossip
# 34001.., metrics 35101..) in a temporary directory, stopped at the end.
#   bash benchmarks/paused_peer_memory.sh
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
cd "$D" || exit 1
zkv local up --no-demo --dir "$D/data" --base-port 33001 --sync none > up.log 2>&1 &
UP=$!
for _ in $(seq 60); do grep -q "Ctrl-C" up.log && break; sleep 1; done
P1=$(pgrep -f "data-dir $D/data/node1" | head -1)
P3=$(pgrep -f "data-dir $D/data/node3" | head -1)
kill -STOP "$P3"
P1=$P1 python - <<'PY'
import os, threading, time
import zkv
pid = int(os.environ["P1"])
def anon():
    return int(open(f"/proc/{pid}/status").read().split("RssAnon:")[1].split()[0]) // 1024
v = os.urandom(1 << 20)
t0, n, peak, err = time.time(), [0], [anon()], [0]
def worker(k):
    with zkv.Client(["tcp://127.0.0.1:33001"], timeout=5.0) as c:
        while time.time() - t0 < 40:
            try:
                c.put_many([(b"big:%d:%d" % (k, i), v) for i in range(8)], w=1)
                n[0] += 8
            except zkv.ZkvError:
                err[0] += 1
def watch():
    while time.time() - t0 < 42:
        peak[0] = max(peak[0], anon())
        time.sleep(0.2)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
ts.append(threading.Thread(target=watch))
[t.start() for t in ts]
[t.join() for t in ts]
print(f"puts {n[0]} errors {err[0]} node1 RssAnon peak {peak[0]} MiB, now {anon()} MiB")
PY
curl -s http://127.0.0.1:35101/metrics | grep -E "^zkv_peer_frames_dropped_total"
kill -CONT "$P3"
kill "$UP"; wait "$UP"
