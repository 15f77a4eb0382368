#!/bin/bash
# User-space instructions per call of client variants (bench/client/variants.ts) under callgrind:
#   bash bench/client/callgrind.sh TARGET VARIANT...      (e.g. plain plainPool roster)
# TARGET: backends already running, e.g. ipv4:127.0.0.1:p1,127.0.0.1:p2 (bench/client/backend.ts).
# CONC: calls in flight (default 50); CG_ROOT: scratch directory (default /tmp/cb/cg).
# Each variant runs under valgrind (~50x slower); after WARM calls its counters are zeroed, CALLS calls
# run, and they are dumped: the dump's totals / CALLS is the figure. Needs valgrind; CWD = the repo.
T=$1; shift
D=${CG_ROOT:-/tmp/cb/cg}; rm -rf $D; mkdir -p $D
for v in "$@"; do
  DEADLINE=600000 VARIANT=$v CG_DIR=$D WARM=${WARM:-2000} CALLS=${CALLS:-1000} valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file=$D/cg-$v.%p node --import tsx bench/client/variants.ts $T ${CONC:-50} > $D/log-$v 2>&1 &
  echo $! > $D/pid-$v
done
for v in "$@"; do
  for i in $(seq 1 6000); do [ -f $D/warm-$v ] && break; sleep 0.2; done
  pid=$(cat $D/warm-$v); callgrind_control -z $pid > /dev/null 2>&1; touch $D/go-$v
done
for v in "$@"; do
  for i in $(seq 1 6000); do [ -f $D/done-$v ] && break; sleep 0.2; done
  pid=$(cat $D/warm-$v); callgrind_control -d $pid > /dev/null 2>&1; touch $D/exit-$v
done
sleep 3
for v in "$@"; do
  # The window is the dump (cg-$v.PID.1); the file written at exit holds what came after it.
  awk -v v=$v -v n=${CALLS:-1000} '/^totals:/ {s+=$2} END {printf "%s %.0f instructions per call\n", v, s/n}' $D/cg-$v.*.1
done
