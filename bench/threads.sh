#!/usr/bin/env bash
# A poor man's profiler for "what limits this process": samples every thread of PID from
# /proc/PID/task/*/{comm,stat,wchan} SAMPLES times, INTERVAL seconds apart, and prints for each
# thread group (name with digits folded) how often its threads were running or runnable (R), and
# where they slept otherwise (wchan: futex_* = a lock, condvar or channel; do_epoll_wait = idle in
# the reactor; folio_wait_bit, *sync*, submit_bio_wait = waiting for the disk).
#
#   bench/threads.sh PID [SAMPLES=50] [INTERVAL=0.1]
set -uo pipefail
pid=${1:?usage: threads.sh PID [SAMPLES] [INTERVAL]}
exec python3 - "$pid" "${2:-50}" "${3:-0.1}" <<'PY'
import collections, os, re, sys, time
pid, samples, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count = collections.Counter()
def read(p):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return None
for _ in range(samples):
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        break
    for t in tasks:
        base = f"/proc/{pid}/task/{t}"
        comm, stat, wchan = read(base + "/comm"), read(base + "/stat"), read(base + "/wchan")
        if comm is None or stat is None:
            continue
        state = stat[stat.rfind(")") + 2:].split()[0]
        where = "running/runnable" if state == "R" else (wchan if wchan and wchan != "0" else state)
        count[(re.sub(r"[0-9]+", "N", comm), where)] += 1
    time.sleep(interval)
print(f"thread samples of pid {pid} ({samples} samples, every {interval} s): count  thread-group  state/wchan")
for (group, where), n in sorted(count.items(), key=lambda kv: (kv[0][0], -kv[1])):
    print(f"  {n:6d}  {group:16s} {where}")
PY
