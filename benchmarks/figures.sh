#!/bin/bash
# The figures the closing notes report, in one go (about 6 minutes; keep the machine quiet):
# the fuzz run, issue 12's throughput matrix and get floor, issue 9's harness load, and the
# engine's goals. Needs redis-benchmark on PATH for issue 12's baseline (.ci/run installs it;
# locally: apt-get install redis-tools, or your distribution's redis package).
#   bash benchmarks/figures.sh 2>&1 | tee figures.out
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
echo "== commit $(git rev-parse --short HEAD 2>/dev/null)"
echo "== python tools/fuzz_node.py --seed 45 --frames 60000"
python tools/fuzz_node.py --seed 45 --frames 60000 2>&1 | tail -2
echo "== zkv bench --throughput --matrix \"1:1,64\" --batch 0 --duration 4"
(cd /tmp && zkv bench --throughput --matrix "1:1,64" --batch 0 --duration 4 \
    --out "$(mktemp -d)" 2>&1 | grep -E "ops/s|^\||interleaved")
echo "== python benchmarks/get_floor.py"
(cd /tmp && python "$ROOT/benchmarks/get_floor.py" 2>&1 | tail -1)
echo "== python tools/simulate.py --load --client sim|core|many (3 runs each)"
for i in 1 2 3; do
    for c in sim core many; do python tools/simulate.py --load --client $c; done
done
echo "== python -m pytest benchmarks/bench_engine.py --benchmark-only -q -k \"reopen or put_seq\""
python -m pytest benchmarks/bench_engine.py --benchmark-only -q -k "reopen or put_seq" 2>&1 \
    | grep -E "median|passed|failed"
