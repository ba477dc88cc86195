#!/usr/bin/env bash
# Where the factory's memory per agent goes (issue 14, item 4: "what limits each figure, named with
# the profile that shows it"). Runs this checkout's factory (file sink, symbols kept) under
# heaptrack with N simulated agents from the `fleet` example, stops it at the end of the window
# and prints the heap at its peak grouped by the factory's own call site nearest the allocation,
# in bytes per agent. Everything runs on loopback in a temp dir; every process is stopped on exit.
#
#   bench/factory_heap.sh                 # 5,000 agents, one push every 10 s (mostly idle)
#   RATE=1 bench/factory_heap.sh 10000    # 10,000 agents at 1 batch/s (heaptrack slows the
#                                         # factory: at this load a backlog inflates the peak)
#   TOP=40 bench/factory_heap.sh          # more rows
#
# Needs heaptrack and heaptrack_print (Debian's `heaptrack` package).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${1:-5000}
rate=${RATE:-0.1}
window=${WINDOW:-15}
top=${TOP:-25}
for tool in heaptrack heaptrack_print python3; do
  command -v "$tool" > /dev/null || { echo "bench/factory_heap.sh needs $tool (apt-get install heaptrack)" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)"

echo "==> building (release with symbols, and the fleet example)"
cargo build --release --quiet -p autofactory --example fleet
cargo build --quiet --profile symbench --config 'profile.symbench.inherits="release"' \
  --config 'profile.symbench.strip=false' --config 'profile.symbench.debug=1' \
  -p autofactory --bin autofactory
factory=$root/target/symbench/autofactory
fleet=$root/target/release/examples/fleet

dir=$(mktemp -d /tmp/factory-heap.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin=$(free_port)
token="heap-token-$RANDOM$RANDOM"
cat > "$dir/factory.json" << JSON
{ "listen": "127.0.0.1:$port", "admin_listen": "127.0.0.1:$admin", "data_dir": "$dir/data",
  "token": "$token", "sink": { "kind": "file" } }
JSON
heaptrack -o "$dir/heap" "$factory" run --quiet --config "$dir/factory.json" > "$dir/factory.log" 2>&1 &
pids+=($!)
fpid=""
for _ in $(seq 100); do
  fpid=$(pgrep -f "^$factory run --quiet --config $dir/factory.json" || true)
  [ -n "$fpid" ] && curl -sf "http://127.0.0.1:$admin/metrics" > /dev/null 2>&1 && break
  sleep 0.2
done
[ -n "$fpid" ] || { echo "the factory did not start under heaptrack" >&2; cat "$dir/factory.log" >&2; exit 1; }
ramp=$(( n / 1000 > 10 ? n / 1000 : 10 ))
echo "==> $n agents at $rate batch/s each, ramp $ramp s, window $window s (factory pid $fpid under heaptrack)"
"$fleet" --addr "127.0.0.1:$port" --token "$token" --clients "$n" --rate "$rate" --ramp "$ramp" \
  --warmup 10 --seconds "$window" --factory-pid "$fpid" --admin "127.0.0.1:$admin" --label heap \
  2> "$dir/fleet.err" | grep -v '^RESULT' || { cat "$dir/fleet.err" >&2; exit 1; }
kill "$fpid"
wait "${pids[0]}" 2> /dev/null || true
pids=()
heaptrack_print -f "$dir"/heap*.zst --print-peaks 0 --print-allocators 0 --print-leaks 0 \
  --print-temporary 0 --flamegraph-cost-type peak -F "$dir/peak.collapsed" > /dev/null 2>&1
python3 - "$dir/peak.collapsed" "$n" "$top" << 'PY'
import collections, re, sys
path, n, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ours = ('autofactory::', 'tungstenite', 'fjall::', 'lsm_tree', 'async_io::', 'async_executor', 'async_task')
def short(f):
    f = re.sub(r'::h[0-9a-f]{16}', '', f).split(' (')[0]
    for a, b in (('_$u7b$$u7b$closure$u7d$$u7d$', '{closure}'), ('$LT$', '<'), ('$GT$', '>'), ('$u20$', ' '), ('$C$', ','), ('..', '::')):
        f = f.replace(a, b)
    return f[:90]
total, by = 0, collections.Counter()
for line in open(path):
    stack, _, v = line.rstrip().rpartition(' ')
    v = int(v); total += v
    frames = [short(f) for f in stack.split(';')]
    mine = [f for f in frames if any(k in f for k in ours)]
    by[' <- '.join(reversed(mine[-2:])) or '(outside the factory and its runtime)'] += v
print(f"heap at its peak: {total / 2**20:.1f} MiB = {total / 1024 / n:.2f} KiB per agent ({n} agents)")
print(f"{'KiB/agent':>9}  {'MiB':>6}  where (the deepest factory or runtime frame, and its caller)")
for k, v in by.most_common(top):
    print(f"{v / 1024 / n:9.2f}  {v / 2**20:6.1f}  {k}")
PY
