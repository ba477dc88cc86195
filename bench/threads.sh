#!/usr/bin/env bash
# A poor man's profiler for "what limits this process": samples every thread of PID from
# /proc/PID/task/*/{comm,stat,wchan} SAMPLES times, INTERVAL seconds apart, and prints for each
# thread group (name with digits folded) how often its threads were running (R), in the kernel on
# disk (D) or asleep, and where they slept (wchan: futex_* = a lock or condvar, do_epoll_wait =
# idle in the reactor, *sync*/jbd2* = waiting for fsync).
#
#   bench/threads.sh PID [SAMPLES=50] [INTERVAL=0.1]
set -uo pipefail
pid=${1:?usage: threads.sh PID [SAMPLES] [INTERVAL]}
samples=${2:-50}
interval=${3:-0.1}
out=$(for _ in $(seq "$samples"); do
  for t in /proc/"$pid"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    state=$(sed 's/.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f1)
    wchan=$(cat "$t/wchan" 2>/dev/null)
    [ "$state" = R ] && wchan=running
    echo "${comm//[0-9]/N} ${wchan:-?}"
  done
  sleep "$interval"
done)
echo "thread samples of pid $pid ($samples samples, every ${interval} s): count  thread-group  state/wchan"
echo "$out" | sort | uniq -c | sort -k2,2 -k1,1nr | awk '{printf "  %6d  %-16s %s\n", $1, $2, $3}'
