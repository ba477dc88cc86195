#!/usr/bin/env bash
# Agent footprint against collectd (issue 10, item 1): runs `autofact run` (every fact kind at a
# 1 s period, pushed to a local factory with the file sink) and collectd 5.12 (plugins cpu, memory,
# load, interface, disk, df, thermal, uptime at Interval 1, the network plugin sending to a local
# UDP port that a tiny sink drains) side by side for the same time, then prints for each: RSS, peak
# RSS (VmHWM), CPU seconds (utime + stime from /proc/<pid>/stat), and the ratios agent/collectd.
# Loopback only, everything in a temp dir, every process stopped at the end.
#
#   bench/agent_vs_collectd.sh              # 60 s, agent pushes every 1 s
#   SECONDS_TO_RUN=120 PUSH_MS=10000 bench/agent_vs_collectd.sh
#   AGENT_BUILD=glibc bench/agent_vs_collectd.sh   # the plain `cargo build --release` agent
#
# The agent measured is the one shipped for x86_64 (issue 19.6): the static musl build with std
# built for size, from `cross/build x86_64-unknown-linux-musl` (AGENT_VARIANT=plain for the
# build without TLS). Every fact kind is on, `processes` included.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run_for=${SECONDS_TO_RUN:-60}
push_ms=${PUSH_MS:-1000}

collectd=/usr/sbin/collectd
if [ ! -x "$collectd" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing collectd-core (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends collectd-core >/dev/null
  else
    echo "collectd is not installed; run: sudo apt-get install --no-install-recommends collectd-core" >&2
    exit 2
  fi
fi

echo "==> building (release)"
cargo build --release --quiet -p autofact -p autofactory
bin=$root/target/release
agent_bin=$bin/autofact
case "${AGENT_BUILD:-musl}" in
musl)
  variant=${AGENT_VARIANT:-tls}
  cross/build x86_64-unknown-linux-musl "$variant"
  agent_bin=${CARGO_TARGET_DIR:-$root/target}/x86_64-unknown-linux-musl/release/autofact
  [ "$variant" = plain ] && agent_bin=$agent_bin-plain
  ;;
glibc) ;;
*) echo "AGENT_BUILD must be musl or glibc" >&2; exit 2 ;;
esac
echo "==> agent binary: $agent_bin ($(stat -c %s "$agent_bin") bytes; $(file -b "$agent_bin" | cut -d, -f1-2))"

dir=$(mktemp -d "${TMPDIR:-/tmp}/autofact-vs-collectd.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); admin=$(free_port)
token="bench-token-$RANDOM$RANDOM"

# A UDP sink for collectd's network plugin: drains packets, counts them, prints the count on TERM.
python3 - "$dir/udp.port" > "$dir/udp.out" 2>&1 <<'PY' &
import signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
n = b = 0
def done(*_):
    print(f"{n} packets, {b} bytes", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    b += len(s.recv(65535))
    n += 1
PY
udp_pid=$!
pids+=("$udp_pid")
for _ in $(seq 50); do [ -s "$dir/udp.port" ] && break; sleep 0.1; done
udp_port=$(cat "$dir/udp.port")

cat > "$dir/factory.json" <<JSON
{ "listen": "127.0.0.1:$port", "admin_listen": "127.0.0.1:$admin", "data_dir": "$dir/factory",
  "token": "$token",
  "defaults": { "periods": { "cpu_ms": 1000, "kernel_ms": 1000, "mem_ms": 1000, "swap_ms": 1000,
                             "system_ms": 1000, "net_ms": 1000, "diskio_ms": 1000, "disk_ms": 1000,
                             "temp_ms": 1000, "health_ms": 1000, "processes_ms": 1000 },
                "push_interval_ms": $push_ms } }
JSON
cat > "$dir/agent.json" <<JSON
{ "server": "127.0.0.1:$port", "data_dir": "$dir/agent", "token": "$token", "region": "bench" }
JSON
mkdir -p "$dir/collectd"
cat > "$dir/collectd.conf" <<CONF
Hostname "bench"
FQDNLookup false
Interval 1
BaseDir "$dir/collectd"
PIDFile "$dir/collectd/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin interface
LoadPlugin disk
LoadPlugin df
LoadPlugin thermal
LoadPlugin uptime
LoadPlugin network
<Plugin network>
  Server "127.0.0.1" "$udp_port"
</Plugin>
CONF

"$bin/autofactory" run --quiet --config "$dir/factory.json" > "$dir/factory.log" 2>&1 &
factory_pid=$!
pids+=("$factory_pid")
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$admin/metrics" && break; sleep 0.1; done

echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r); $("$collectd" -h 2>&1 | grep -m1 -o 'collectd [0-9][0-9.]*[0-9]')"
echo "==> load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> running autofact and collectd for ${run_for} s (agent push interval ${push_ms} ms)"
"$agent_bin" run --config "$dir/agent.json" > "$dir/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
"$collectd" -f -C "$dir/collectd.conf" > "$dir/collectd.log" 2>&1 &
collectd_pid=$!
pids+=("$collectd_pid")

sleep "$run_for"

# Read both before stopping anything; fields 14 and 15 of stat, counted after the last ')'.
sample() { # pid -> "rss_kib hwm_kib cpu_ticks threads anon_kib file_kib"
  local rss hwm thr ticks anon file
  anon=$(awk '/^RssAnon:/{print $2}' "/proc/$1/status")
  file=$(awk '/^RssFile:/{print $2}' "/proc/$1/status")
  rss=$(awk '/^VmRSS:/{print $2}' "/proc/$1/status")
  hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$1/status")
  thr=$(awk '/^Threads:/{print $2}' "/proc/$1/status")
  ticks=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}')
  echo "$rss $hwm $ticks $thr $anon $file"
}
for p in "$agent_pid" "$collectd_pid"; do
  kill -0 "$p" 2>/dev/null || { echo "process $p died early; logs:" >&2; tail -5 "$dir"/*.log >&2; exit 1; }
done
read -r a_rss a_hwm a_ticks a_thr a_anon a_file < <(sample "$agent_pid")
read -r c_rss c_hwm c_ticks c_thr c_anon c_file < <(sample "$collectd_pid")
read -r f_rss f_hwm f_ticks f_thr _ _ < <(sample "$factory_pid")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
hz=$(getconf CLK_TCK)

kill "$collectd_pid" "$agent_pid" 2>/dev/null || true
wait "$collectd_pid" "$agent_pid" 2>/dev/null || true
kill "$udp_pid" 2>/dev/null || true
wait "$udp_pid" 2>/dev/null || true
points=$(cat "$dir"/factory/facts/*.lp 2>/dev/null | wc -l)

python3 - "$run_for" "$hz" "$a_rss" "$a_hwm" "$a_ticks" "$a_thr" "$c_rss" "$c_hwm" "$c_ticks" "$c_thr" \
  "$f_rss" "$f_hwm" "$f_ticks" "$a_anon" "$a_file" "$c_anon" "$c_file" <<'PY'
import sys
secs, hz = float(sys.argv[1]), float(sys.argv[2])
a = [float(x) for x in sys.argv[3:7]]
c = [float(x) for x in sys.argv[7:11]]
f = [float(x) for x in sys.argv[11:14]]
aa, af, ca, cf = (float(x) for x in sys.argv[14:18])
mib = lambda k: k / 1024
print()
print(f"{'':22} {'RSS MiB':>8} {'peak MiB':>9} {'CPU s':>7} {'CPU s/min':>10} {'threads':>8} {'anon MiB':>9} {'file MiB':>9}")
print(f"{'autofact (agent)':22} {mib(a[0]):8.2f} {mib(a[1]):9.2f} {a[2]/hz:7.2f} {a[2]/hz*60/secs:10.3f} {a[3]:8.0f} {mib(aa):9.2f} {mib(af):9.2f}")
print(f"{'collectd 5.12':22} {mib(c[0]):8.2f} {mib(c[1]):9.2f} {c[2]/hz:7.2f} {c[2]/hz*60/secs:10.3f} {c[3]:8.0f} {mib(ca):9.2f} {mib(cf):9.2f}")
r = lambda x, y: f"{x/y:.2f}" if y else "inf"
print(f"{'ratio agent/collectd':22} {r(a[0],c[0]):>8} {r(a[1],c[1]):>9} {r(a[2],c[2]):>7}")
print(f"(the factory, not compared: RSS {mib(f[0]):.1f} MiB, peak {mib(f[1]):.1f} MiB, CPU {f[2]/hz:.2f} s)")
print(f"(CPU seconds have a resolution of 1/{hz:.0f} s)")
PY
echo "load average after: $load_after"
echo "facts the factory wrote from the agent: $points points; collectd sent $(cat "$dir/udp.out")"
if grep -qiE 'error|warn' "$dir/agent.log" "$dir/collectd.log"; then
  echo "log lines with errors/warnings:"; grep -ihE 'error|warn' "$dir/agent.log" "$dir/collectd.log" | sort | uniq -c | head -5
fi
