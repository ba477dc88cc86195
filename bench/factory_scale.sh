#!/usr/bin/env bash
# Factory at fleet scale (issue 10, item 3): for each N, a real `autofactory` process (file sink,
# then a real InfluxDB 1.x) and the `fleet` example simulating N agents over the real protocol at
# one batch per second each. Prints, per run: connections held, batches/s and points/s
# acknowledged, ack latency p50/p99, the factory's RSS, peak RSS and CPU (from /proc/<pid>), and
# influxd's CPU; with InfluxDB, the same points POSTed straight to it in the same run and the ratio.
# Ends with one table. Everything runs on loopback in a temp dir; every process is stopped on exit.
#
#   bench/factory_scale.sh                    # N = 1000 5000 10000, sinks file and influx
#   bench/factory_scale.sh 1000               # only N = 1000
#   SINKS=file WINDOW=20 bench/factory_scale.sh 1000 5000
#   CLOSED_LOOP=1 bench/factory_scale.sh      # also the closed-loop ceiling (N=1000, batch on ack)
#   PERF=1 bench/factory_scale.sh             # also perf profiles of the factory (symbols kept)
#   FLEET_KEY=1 bench/factory_scale.sh 5000   # factories with a fleet_key (fleet inventory points on)
#
# Needs influxd (Debian's `influxdb` package) for the influx runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000 10000)
sinks=${SINKS:-file influx}
window=${WINDOW:-30}

echo "==> building (release)"
cargo build --release --quiet -p autofactory --bin autofactory --example fleet
bin=$root/target/release
fleet=$bin/examples/fleet
factory_bin=$bin/autofactory
if [ "${PERF:-0}" = 1 ]; then
  # The release profile strips symbols; this one is the release profile with them kept, so
  # `perf report` can name the factory's functions. Same optimisation, same code.
  echo "==> building (release with symbols, for perf)"
  cargo build --quiet --profile symbench --config 'profile.symbench.inherits="release"' \
    --config 'profile.symbench.strip=false' -p autofactory --bin autofactory
  factory_bin=$root/target/symbench/autofactory
fi

# One descriptor per agent in the generator and one in the factory (both inherit this).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10100 ]; then
  echo "warning: ulimit -n is $(ulimit -n); 10,000 agents need more (raise the hard limit)" >&2
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/autofact-scale.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url, what
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "$2 did not answer $1" >&2
  return 1
}

influxd=""
if [[ " $sinks " == *" influx "* ]]; then
  influxd=${AUTOFACT_INFLUXD:-$(command -v influxd || echo /usr/bin/influxd)}
  [ -x "$influxd" ] || { echo "influxd not found: apt-get install influxdb, or SINKS=file" >&2; exit 2; }
  echo "==> $("$influxd" version 2>/dev/null | head -1)"
fi
influx_url=""
influx_pid=""
# A fresh influxd for each run, so one run's series, cache and compactions do not slow the next.
start_influx() { # label
  local hp rp d=$dir/influx-$1
  hp=$(free_port); rp=$(free_port)
  mkdir -p "$d"
  cat > "$d/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rp"
[meta]
  dir = "$d/meta"
[data]
  dir = "$d/data"
  wal-dir = "$d/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$hp"
  log-enabled = false
  auth-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
EOF
  "$influxd" -config "$d/influxdb.conf" > "$d/out.log" 2>&1 &
  influx_pid=$!
  pids+=("$influx_pid")
  influx_url="http://127.0.0.1:$hp"
  wait_http "$influx_url/ping" influxd
}
stop_influx() {
  kill "$influx_pid" 2>/dev/null || true
  wait "$influx_pid" 2>/dev/null || true
  rm -rf "$dir/influx-$1"
  influx_pid=""
}

echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
results=()
run() { # sink N rate label
  local sink=$1 n=$2 rate=$3 label=$4
  local port admin token fdir sinkjson
  port=$(free_port); admin=$(free_port)
  token="scale-token-$RANDOM$RANDOM"
  local fleet_key=""
  [ "${FLEET_KEY:-0}" = 1 ] && fleet_key=', "fleet_key": "bench-fleet-key-0123456789abcdef0123456789"'
  fdir="$dir/factory-$label"
  if [ "$sink" = influx ]; then
    start_influx "$label"
    sinkjson="{ \"kind\": \"influxdb\", \"url\": \"$influx_url\", \"database\": \"fleet_${label//[^a-z0-9]/_}\", \"create_database\": true }"
  else
    sinkjson='{ "kind": "file" }'
  fi
  cat > "$dir/factory-$label.json" <<JSON
{ "listen": "127.0.0.1:$port", "admin_listen": "127.0.0.1:$admin", "data_dir": "$fdir",
  "token": "$token", "sink": $sinkjson$fleet_key }
JSON
  "$factory_bin" run --quiet --config "$dir/factory-$label.json" > "$dir/factory-$label.log" 2>&1 &
  local fpid=$!
  pids+=("$fpid")
  wait_http "http://127.0.0.1:$admin/metrics" "factory ($label)"
  echo
  echo "==> $label: $n agents, sink $sink, factory pid $fpid${influx_pid:+, influxd pid $influx_pid}, load $(cut -d' ' -f1-3 /proc/loadavg)"
  local extra=()
  if [ "$sink" = influx ]; then
    extra=(--influx-pid "$influx_pid")
  fi
  # Where the factory's threads spend the middle of the window (see bench/threads.sh).
  local ramp=$(( n / 1000 > 3 ? n / 1000 : 3 ))
  ( sleep $(( ramp + 5 + window / 3 )); "$root/bench/threads.sh" "$fpid" 40 0.25 > "$dir/threads-$label.txt" 2>&1 ) &
  local sampler=$!
  local perf=""
  if [ "${PERF:-0}" = 1 ]; then
    ( sleep $(( ramp + 5 + window / 3 )); perf record -q -F 499 -g -p "$fpid" -o "$dir/perf-$label.data" -- sleep 10 > /dev/null 2>&1 ) &
    perf=$!
  fi
  local out
  out=$("$fleet" --addr "127.0.0.1:$port" --token "$token" --clients "$n" --rate "$rate" \
        --seconds "$window" --factory-pid "$fpid" --admin "127.0.0.1:$admin" --label "$label" \
        "${extra[@]}" 2> "$dir/fleet-$label.err") || { cat "$dir/fleet-$label.err" >&2; echo "$out"; return 1; }
  echo "$out" | grep -v '^RESULT' || true
  results+=("$(echo "$out" | grep '^RESULT' || true)")
  wait "$sampler" 2>/dev/null || true
  sed 's/^/  /' "$dir/threads-$label.txt"
  if [ -n "$perf" ]; then
    wait "$perf" 2>/dev/null || true
    echo "  perf: where the factory's CPU time went (10 s in the window, self time, top 20):"
    perf report -i "$dir/perf-$label.data" -g none --no-children --sort dso,sym --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' | head -20 | cut -c1-150 | sed 's/^/  /' || true
    echo "  perf: by object (kernel, libc, the factory):"
    perf report -i "$dir/perf-$label.data" -g none --no-children --sort dso --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' | head -5 | sed 's/^/  /' || true
    echo "  perf: by thread:"
    perf report -i "$dir/perf-$label.data" -g none --no-children --sort comm --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' | head -6 | sed 's/^/  /' || true
    rm -f "$dir/perf-$label.data"
  fi
  # Graceful stop drains what the sink still holds; do not wait for a slow InfluxDB forever.
  kill "$fpid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$fpid" 2>/dev/null || true
  wait "$fpid" 2>/dev/null || true
  if [ "$sink" = influx ]; then
    stop_influx "$label"
    # InfluxDB's own rate for the same points: a fresh influxd, so it inherits nothing from the
    # factory's run (series, cache, compactions), and one then two concurrent writers.
    start_influx "$label-direct"
    local d
    d=$("$fleet" --direct-only --clients "$n" --influx "$influx_url" --influx-pid "$influx_pid" \
        --seconds "$window" --label "$label" 2>&1) || { echo "$d" >&2; return 1; }
    echo "$d" | grep -v '^RESULT' || true
    results+=("$(echo "$d" | grep '^RESULT' || true)")
    stop_influx "$label-direct"
  fi
  if grep -qiE 'error|warn' "$dir/factory-$label.log"; then
    echo "factory log (errors/warnings):"; grep -iE 'error|warn' "$dir/factory-$label.log" | sort | uniq -c | sort -rn | head -5 || true
  fi
}

for sink in $sinks; do
  for n in "${sizes[@]}"; do
    run "$sink" "$n" 1 "$sink-$n"
  done
  if [ "${CLOSED_LOOP:-0}" = 1 ]; then
    run "$sink" 1000 0 "$sink-1000-closed"
  fi
done

echo
echo "==> summary ($(date -u '+%Y-%m-%d %H:%M UTC'), window ${window} s; ratio = durable points/s through the factory / best direct POST rate)"
printf '%s\n' "${results[@]}" | python3 -c '
import sys
runs, direct = [], {}
for line in sys.stdin:
    kv = dict(x.split("=", 1) for x in line.split()[1:])
    if "direct_writers" in kv:
        direct.setdefault(kv["label"], {})[kv["direct_writers"]] = float(kv["direct_points_s"])
    elif kv:
        runs.append(kv)
cols = ["run", "agents", "held", "batches/s", "points/s", "durable/s", "p50_ms", "p99_ms", "fRSS_MiB",
        "fPeak_MiB", "fCPU%", "fWait%", "infCPU%", "genCPU%", "direct1/s", "direct2/s", "ratio", "load"]
print(" ".join("%-18s" % c if i == 0 else "%9s" % c for i, c in enumerate(cols)))
for r in runs:
    d = direct.get(r["label"], {})
    dur = float(r.get("durable_points_s", "nan"))
    best = max(d.values()) if d else float("nan")
    ratio = "%.2f" % (dur / best) if d else "-"
    vals = [r["label"], r["clients"], r["held"], r["batches_s"], r["points_s"], r["durable_points_s"],
            r["p50_ms"], r["p99_ms"], r["factory_rss_mib"], r["factory_hwm_mib"], r["factory_cpu_pct"],
            r.get("factory_wait_pct", "nan"), r["influxd_cpu_pct"], r["gen_cpu_pct"],
            "%.0f" % d["1"] if "1" in d else "-", "%.0f" % d["2"] if "2" in d else "-", ratio, r["load"]]
    print(" ".join("%-18s" % v if i == 0 else "%9s" % v for i, v in enumerate(vals)))
'
