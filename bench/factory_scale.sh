#!/usr/bin/env bash
# Factory at fleet scale (issue 10, item 3; issue 14, item 4): for each N, a real `autofactory`
# process (file sink, then a real InfluxDB 1.x) and the `fleet` example simulating N agents over
# the real protocol at one batch per second each. Every run is done twice back to back, first
# with the factory of BASELINE (the code before issue 14's restructuring), then with this
# checkout's, with the same generator binary and settings: labels `…@base` and `…@now`.
# Prints, per run: connections held, batches/s and points/s acknowledged against offered, ack
# latency p50/p99, the factory's RSS, its RSS per agent above its own RSS with no agent, peak RSS
# and CPU (from /proc/<pid>), and influxd's CPU; with InfluxDB, the same points POSTed straight to
# it in the same run and the ratio. Ends with one table. Everything runs on loopback in a temp
# dir; every process is stopped on exit.
#
#   bench/factory_scale.sh                    # N = 1000 5000 10000, sinks file and influx
#   bench/factory_scale.sh 1000               # only N = 1000
#   SINKS=file WINDOW=20 bench/factory_scale.sh 1000 5000
#   CLOSED_LOOP=1 bench/factory_scale.sh      # also the closed-loop ceiling (N=1000, batch on ack)
#   IDLE=20000 bench/factory_scale.sh 1000    # also N mostly idle agents (file sink, one push
#                                             # every 10 s; IDLE_RATE=0.1 batches/s each)
#   SINKS= IDLE=3000 bench/factory_scale.sh   # only the idle run
#   PERF=1 bench/factory_scale.sh             # also perf profiles of the factory (symbols kept)
#   FLEET_KEY=1 bench/factory_scale.sh 5000   # factories with a fleet_key (fleet inventory points on)
#   BASELINE=none bench/factory_scale.sh      # only this checkout's factory
#   BASELINE=<rev> …                          # compare with another revision (default 8c86337)
#   BUILD_ONLY=1 PRESET=issue14 …             # print the plan and its time, build, run nothing
#
#   PRESET=issue14 bench/factory_scale.sh     # issue 14's set, each against the baseline, with a
#                                             # PASS/FAIL line per criterion (~15 min):
#     (a) file sink, 10,000 agents at 1 batch/s: acked vs offered, ack p50/p99;
#     (b) the factory's KiB per agent in (a);
#     (c) 20,000 mostly idle agents (push every 10 s), file sink: held, RSS, KiB/agent, CPU;
#     (d) InfluxDB, closed loop, 1,000 agents: durable points/s / InfluxDB's direct rate.
#   PRESET=issue14 SCALE_DOWN=20 WINDOW=10 …  # the same at 1/20 of the agents (a check of the
#                                             # script, not the issue's figures)
#
# The baseline's factory is built once from `git archive BASELINE` into
# target/bench-baseline/<rev>/ (its own target dir, seeded from target/release so only the
# workspace crates are compiled); later runs reuse target/bench-baseline/<rev>/autofactory.
#
# Needs influxd (Debian's `influxdb` package) for the influx runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
window=${WINDOW:-30}
baseline=${BASELINE:-8c86337}
preset=${PRESET:-}
scale=${SCALE_DOWN:-1}
case "$scale" in '' | *[!0-9]* | 0) echo "SCALE_DOWN must be a positive integer, got '$scale'" >&2; exit 2 ;; esac

# The plan: one "sink agents rate kind" line per run (kind: load, closed or idle); each is run
# with the baseline's factory and then with this checkout's.
plan=()
if [ "$preset" = issue14 ]; then
  [ $# -eq 0 ] || { echo "PRESET=issue14 takes no sizes" >&2; exit 2; }
  plan+=("file $(( 10000 / scale )) 1 load")
  plan+=("file $(( 20000 / scale )) ${IDLE_RATE:-0.1} idle")
  plan+=("influx $(( 1000 / scale )) 0 closed")
elif [ -n "$preset" ]; then
  echo "unknown PRESET '$preset' (known: issue14)" >&2; exit 2
else
  sizes=("$@")
  [ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000 10000)
  for sink in ${SINKS-file influx}; do
    for n in "${sizes[@]}"; do plan+=("$sink $n 1 load"); done
    if [ "${CLOSED_LOOP:-0}" = 1 ]; then plan+=("$sink 1000 0 closed"); fi
  done
  if [ -n "${IDLE:-}" ]; then plan+=("file $IDLE ${IDLE_RATE:-0.1} idle"); fi
fi
[ ${#plan[@]} -gt 0 ] || { echo "nothing to run (SINKS is empty and no IDLE)" >&2; exit 2; }
sinks=" $(printf '%s\n' "${plan[@]}" | cut -d' ' -f1 | sort -u | tr '\n' ' ')"

# The generator holds one descriptor per agent, and so does the factory (both inherit this
# limit); a process cannot raise its hard limit without CAP_SYS_RESOURCE, so a fleet larger than
# it allows is cut down to what fits, and said so. With one destination address every connection
# also takes one loopback source port of the ephemeral range.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" = unlimited ]; then fd_room=100000000; else fd_room=$(( $(ulimit -n) - 64 )); fi
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
port_room=$(( port_hi - port_lo + 1 - 1000 ))
fits() { # agents -> agents that fit in this process's limits, with a warning if fewer
  local n=$1 cap=$fd_room why="the open-files hard limit ($(ulimit -Hn); the factory and the generator each need one per agent)"
  if [ "$port_room" -lt "$cap" ]; then cap=$port_room; why="the loopback ephemeral port range ($port_lo-$port_hi)"; fi
  if [ "$n" -gt "$cap" ]; then
    echo "warning: $n agents do not fit in $why: running $cap" >&2
    n=$cap
  fi
  echo "$n"
}

period_of() { # rate -> whole seconds between an agent's pushes (0: closed loop)
  python3 -c "import math; print(math.ceil(1 / $1) if $1 > 0 else 0)"
}
ramp_of() { # agents rate: ~1,000 new connections a second, and starts spread over at least one
  # push period, so a mostly idle fleet's pushes are spread evenly rather than in bursts
  local n=$1 p r
  p=$(period_of "$2")
  r=$(( n / 1000 > 3 ? n / 1000 : 3 ))
  echo $(( r > p ? r : p ))
}
warmup_of() { # rate: long enough that every agent has pushed once before the window
  local p
  p=$(period_of "$1")
  echo $(( p > 5 ? p : 5 ))
}

# What the whole run will take, so nobody starts a half-hour run by accident.
estimate=0
for p in "${plan[@]}"; do
  read -r sink n rate kind <<< "$p"
  n=$(fits "$n" 2>/dev/null)
  # start + ramp + warm-up + window + acks still owed + stop
  t=$(( 3 + $(ramp_of "$n" "$rate") + $(warmup_of "$rate") + window + 10 ))
  # a fresh influxd, then InfluxDB's own rate with 1 and 2 writers on another fresh one
  if [ "$sink" = influx ]; then t=$(( t + 10 + 2 * ( (window < 15 ? window : 15) + 5 ) )); fi
  estimate=$(( estimate + t ))
done
[ "$baseline" = none ] || estimate=$(( estimate * 2 ))
base_cached=""
if [ "$baseline" != none ]; then
  baseline_rev=$(git rev-parse --verify --quiet "$baseline^{commit}") \
    || { echo "BASELINE=$baseline is not a commit here (BASELINE=none to skip it)" >&2; exit 2; }
  baseline_rev=${baseline_rev:0:12}
  base_dir=$root/target/bench-baseline/$baseline_rev
  [ -x "$base_dir/autofactory" ] && base_cached=1
fi
echo "==> plan: ${#plan[@]} run(s)${baseline_rev:+ x 2 (baseline $baseline_rev, then this checkout)}, window ${window} s${preset:+, preset $preset}$( [ "$scale" = 1 ] || echo ", agents / $scale" )"
printf '      %s\n' "${plan[@]}"
echo "==> estimated time: ~$(( (estimate + 59) / 60 )) min of runs$( [ "$baseline" = none ] || [ -n "$base_cached" ] || echo ", plus ~2-5 min to build the baseline's factory" ) (more on a busy machine)"

# What @now is, taken before anything runs (the tree may be edited during a long run).
now_rev="$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- factory fbs Cargo.lock || echo ' + uncommitted changes')"
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

# The baseline's factory: its source from git (not a worktree, so the repository's worktree list
# is left alone), built in its own target dir. Seeding that dir with target/release lets cargo
# reuse the registry crates; `tar -m` gives the sources the time of extraction, so the workspace
# crates are always newer than the seeded artifacts and compiled from the baseline's code.
base_bin=""
if [ "$baseline" != none ]; then
  base_bin=$base_dir/autofactory
  [ "${PERF:-0}" = 1 ] && echo "note: the baseline's factory is built with the release profile (no symbols for perf)" >&2
  if [ -n "$base_cached" ]; then
    echo "==> baseline $baseline_rev: reusing $base_bin"
  else
    echo "==> baseline $baseline_rev: building its factory in $base_dir (release)"
    rm -rf "$base_dir/src" "$base_dir/target"
    mkdir -p "$base_dir/src" "$base_dir/target"
    git archive "$baseline_rev" | tar -x -m -C "$base_dir/src"
    [ -d "$bin" ] && cp -a "$bin" "$base_dir/target/release"
    started=$(date +%s)
    ( cd "$base_dir/src" && CARGO_TARGET_DIR=$base_dir/target cargo build --release --quiet -p autofactory --bin autofactory )
    cp "$base_dir/target/release/autofactory" "$base_bin.tmp" && mv "$base_bin.tmp" "$base_bin"
    rm -rf "$base_dir/src" "$base_dir/target"
    echo "    built in $(( $(date +%s) - started )) s"
  fi
fi

if [ "${BUILD_ONLY:-0}" = 1 ]; then
  echo "==> BUILD_ONLY=1: both factories built, nothing run"
  exit 0
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
run() { # sink N rate label factory-binary kind
  local sink=$1 n=$2 rate=$3 label=$4 fbin=$5 kind=$6
  local port admin token fdir sinkjson
  port=$(free_port); admin=$(free_port)
  token="scale-token-$RANDOM$RANDOM"
  local fleet_key="" limits=""
  [ "${FLEET_KEY:-0}" = 1 ] && fleet_key=', "fleet_key": "bench-fleet-key-0123456789abcdef0123456789"'
  # The factory's default max_connections is 20,000: leave room above a fleet that size.
  [ "$n" -lt 19000 ] || limits=", \"limits\": { \"max_connections\": $(( n + 1000 )) }"
  fdir="$dir/factory-$label"
  if [ "$sink" = influx ]; then
    start_influx "$label"
    sinkjson="{ \"kind\": \"influxdb\", \"url\": \"$influx_url\", \"database\": \"fleet_${label//[^a-z0-9]/_}\", \"create_database\": true }"
  else
    sinkjson='{ "kind": "file" }'
  fi
  cat > "$dir/factory-$label.json" <<JSON
{ "listen": "127.0.0.1:$port", "admin_listen": "127.0.0.1:$admin", "data_dir": "$fdir",
  "token": "$token", "sink": $sinkjson$fleet_key$limits }
JSON
  "$fbin" run --quiet --config "$dir/factory-$label.json" > "$dir/factory-$label.log" 2>&1 &
  local fpid=$!
  pids+=("$fpid")
  wait_http "http://127.0.0.1:$admin/metrics" "factory ($label)"
  # The fixed base for memory per agent: the factory up, its admin answered once, no agent.
  sleep 1
  local base_kib
  base_kib=$(awk '/^VmRSS:/{print $2}' "/proc/$fpid/status")
  echo
  echo "==> $label: $n agents, sink $sink, $(case $kind in closed) echo "closed loop";; *) echo "$rate batch/s each";; esac), factory $fbin (pid $fpid, RSS with no agent ${base_kib} KiB)${influx_pid:+, influxd pid $influx_pid}, load $(cut -d' ' -f1-3 /proc/loadavg)"
  local extra=()
  if [ "$sink" = influx ]; then
    extra=(--influx-pid "$influx_pid")
  fi
  local ramp warmup
  ramp=$(ramp_of "$n" "$rate")
  warmup=$(warmup_of "$rate")
  # Where the factory's threads spend the middle of the window (see bench/threads.sh).
  ( sleep $(( ramp + warmup + window / 3 )); "$root/bench/threads.sh" "$fpid" 40 0.25 > "$dir/threads-$label.txt" 2>&1 ) &
  local sampler=$!
  local perf=""
  if [ "${PERF:-0}" = 1 ]; then
    ( sleep $(( ramp + warmup + window / 3 )); perf record -q -F 499 -g -p "$fpid" -o "$dir/perf-$label.data" -- sleep 10 > /dev/null 2>&1 ) &
    perf=$!
  fi
  local out
  out=$("$fleet" --addr "127.0.0.1:$port" --token "$token" --clients "$n" --rate "$rate" \
        --ramp "$ramp" --warmup "$warmup" --seconds "$window" --factory-pid "$fpid" \
        --factory-base-kib "$base_kib" --admin "127.0.0.1:$admin" --label "$label" \
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
  rm -rf "$fdir"
}

for p in "${plan[@]}"; do
  read -r sink n rate kind <<< "$p"
  n=$(fits "$n")
  name="$sink-$n"
  case $kind in closed) name="$name-closed" ;; idle) name="$name-idle" ;; esac
  # Back to back, baseline first, so both see the same machine as nearly as it can be had.
  if [ -n "$base_bin" ]; then run "$sink" "$n" "$rate" "$name@base" "$base_bin" "$kind"; fi
  run "$sink" "$n" "$rate" "$name@now" "$factory_bin" "$kind"
done

echo
echo "==> summary ($(date -u '+%Y-%m-%d %H:%M UTC'), window ${window} s${baseline_rev:+, @base = $baseline_rev}, @now = $now_rev)"
echo "    offered/s and batches/s: batches offered and acknowledged per second; KiB/agent = (factory RSS at the end of the"
echo "    window - its RSS with no agent) / agents held; ratio = durable points/s through the factory / best direct POST rate"
printf '%s\n' "${results[@]}" | PRESET="$preset" SCALE="$scale" python3 -c '
import os, sys
runs, direct = [], {}
for line in sys.stdin:
    kv = dict(x.split("=", 1) for x in line.split()[1:])
    if "direct_writers" in kv:
        direct.setdefault(kv["label"], {})[kv["direct_writers"]] = float(kv["direct_points_s"])
    elif kv:
        runs.append(kv)
def ratio(r):
    d = direct.get(r["label"], {})
    if not d:
        return None
    return float(r.get("durable_points_s", "nan")) / max(d.values())
cols = ["run", "agents", "held", "offered/s", "batches/s", "points/s", "durable/s", "p50_ms", "p99_ms",
        "fRSS_MiB", "KiB/agent", "fPeak_MiB", "fCPU%", "fWait%", "infCPU%", "genCPU%", "direct1/s",
        "direct2/s", "ratio", "load"]
print(" ".join("%-24s" % c if i == 0 else "%9s" % c for i, c in enumerate(cols)))
for r in runs:
    d = direct.get(r["label"], {})
    q = ratio(r)
    vals = [r["label"], r["clients"], r["held"], r.get("offered_s", "-"), r["batches_s"], r["points_s"],
            r["durable_points_s"], r["p50_ms"], r["p99_ms"], r["factory_rss_mib"], r.get("kib_per_agent", "-"),
            r["factory_hwm_mib"], r["factory_cpu_pct"], r.get("factory_wait_pct", "nan"), r["influxd_cpu_pct"],
            r["gen_cpu_pct"], "%.0f" % d["1"] if "1" in d else "-", "%.0f" % d["2"] if "2" in d else "-",
            "%.2f" % q if q is not None else "-", r["load"]]
    print(" ".join("%-24s" % v if i == 0 else "%9s" % v for i, v in enumerate(vals)))
if os.environ.get("PRESET") != "issue14":
    sys.exit(0)

# Issue 14, item 4: one line per criterion, judged on this checkout (@now), the baseline beside.
def find(kind):
    out = {}
    for r in runs:
        name, _, which = r["label"].partition("@")
        if (kind == "load" and not name.endswith(("-closed", "-idle"))) or name.endswith("-" + kind):
            if name.startswith("influx" if kind == "closed" else "file"):
                out[which] = r
    return out
def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None  # ">30000" (never acknowledged), "nan", missing
scale = int(os.environ.get("SCALE", "1"))
load, idle, closed = find("load"), find("idle"), find("closed")
def acked(r):
    a, o = num(r["batches_s"]), num(r.get("offered_s"))
    ok = a is not None and o and abs(a / o - 1) <= 0.01
    return ok, "%s of %s batches/s acked" % (r["batches_s"], r.get("offered_s", "?"))
def p99(r):
    v = num(r["p99_ms"])
    return v is not None and v < 1000, "ack p99 %s ms (p50 %s ms)" % (r["p99_ms"], r["p50_ms"])
def kib(r):
    v = num(r.get("kib_per_agent"))
    return v is not None and v <= 16, "%s KiB/agent (RSS %s MiB, %s held)" % (r.get("kib_per_agent", "?"), r["factory_rss_mib"], r["held"])
def held(r):
    return r["held"] == r["clients"] == str(20000 // scale), "%s held of %s run (%d asked), RSS %s MiB, %s KiB/agent, factory CPU %s%%, %s of %s batches/s acked" % (
        r["held"], r["clients"], 20000 // scale, r["factory_rss_mib"], r.get("kib_per_agent", "?"), r["factory_cpu_pct"], r["batches_s"], r.get("offered_s", "?"))
def closed_ratio(r):
    q = ratio(r)
    d = direct.get(r["label"], {})
    one = float(r.get("durable_points_s", "nan")) / d["1"] if "1" in d else None
    return q is not None and q >= 0.90, "ratio %s (%s durable points/s, InfluxDB direct best %s; %s of one writer)" % (
        "%.2f" % q if q is not None else "?", r["durable_points_s"],
        "%.0f" % max(d.values()) if d else "?", "%.2f" % one if one is not None else "?")
print()
n10, n20, n1 = 10000 // scale, 20000 // scale, 1000 // scale
print("==> issue 14 criteria (judged @now; @base beside)%s" % ("" if scale == 1 else ", SCALED DOWN by %d: not the issue figures" % scale))
for title, runs_of, judge in [
        ("(a) %d agents at 1 batch/s, file sink: acked = offered within 1 %%" % n10, load, acked),
        ("(a) %d agents at 1 batch/s, file sink: ack p99 < 1000 ms" % n10, load, p99),
        ("(b) factory RSS per agent above its base <= 16 KiB, at %d agents" % n10, load, kib),
        ("(c) %d mostly idle agents (push every 10 s) held" % n20, idle, held),
        ("(d) InfluxDB closed loop, %d agents: >= 0.90 of direct" % n1, closed, closed_ratio)]:
    now, base = runs_of.get("now"), runs_of.get("base")
    verdict, figure = judge(now) if now else (False, "no run")
    line = "%-4s %-70s %s" % ("PASS" if verdict else "FAIL", title + ":", figure)
    if base:
        line += "   [@base: %s]" % judge(base)[1]
    print(line)
'
