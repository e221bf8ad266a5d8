#!/bin/bash
# The simulation sweeps whose figures benchmarks/RESULTS.md reports (about 25 minutes on one
# core). Run from a checkout (or a worktree snapshot of one, with zkv/_core built):
#   bash benchmarks/sweeps.sh > sweeps.out
# Each line: the command, then simulate.py's summary ("N seed(s), K failed; ...").
cd "$(dirname "$0")/.." || exit 1
F="--loss 0.02 --dup 0.01 --partitions 2 --pauses 1 --crashes 1"
H="--loss 0.05 --dup 0.02 --partitions 2 --pauses 1 --crashes 1 --moves 1 --stale-views 1 \
--full-disks 1 --lost-extras 0.05"
ALL="--client core --loss 0.05 --dup 0.03 --partitions 4 --pauses 3 --crashes 2 \
--power-losses 1 --wipes 1 --stale-views 2 --lost-extras 0.3"
sweep() {
    echo "== $*"
    python tools/simulate.py "$@" 2>&1 | grep -E "seed\(s\), [0-9]+ failed|replay:" | tail -5
}
for ch in join leave replace remove; do
    sweep --scenario drops --change $ch --manual --client core --seeds 100 --first 2000 $F
done
for ch in join leave replace remove; do
    sweep --scenario drops --change $ch --manual --client core --seeds 50 --first 9000 $H
done
for ch in join leave replace remove; do
    sweep --scenario drops --change $ch --client sim --seeds 50 --first 4000 $F
done
sweep --scenario membership --client core --spaces pairs:2,single:1 --seeds 20 --first 7000 $F
sweep --scenario strict --seeds 100 --first 1 $F
sweep --seeds 500 --first 110000 $ALL
