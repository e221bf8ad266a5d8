#!/bin/bash
# Replays of fixed seeds: the md5 of each run's whole output (its CPU-time line left out),
# so two commits that decide alike print the same five sums (benchmarks/RESULTS.md).
#   bash benchmarks/replays.sh
cd "$(dirname "$0")/.." || exit 1
replay() {
    name=$1; shift
    sum=$(python tools/simulate.py "$@" 2>&1 | grep -v "CPU" | md5sum | cut -c1-12)
    echo "$name $sum   (simulate.py $*)"
}
replay many --seed 3 --client many --loss 0.02 --dup 0.01 --partitions 2 --pauses 1 --crashes 1
replay core --seed 11 --client core --loss 0.02 --partitions 2 --crashes 1
replay seed3 --seed 3 --loss 0.05 --dup 0.03 --partitions 4 --pauses 3 --crashes 2 \
    --power-losses 1 --wipes 1 --stale-views 2 --lost-extras 0.3
replay rdead --seed 5 --scenario replace-dead --loss 0.02 --crashes 1
replay member --seed 7000 --scenario membership --client core --spaces pairs:2,single:1 \
    --loss 0.02 --dup 0.01 --partitions 1 --pauses 1 --crashes 1
