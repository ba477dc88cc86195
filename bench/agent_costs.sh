#!/usr/bin/env bash
# Agent cost per collection round and buffer bytes written per hour (issue 10, item 4), plus the
# factory-side micro-benchmarks they feed: runs the existing release examples one after the other
# and prints their figures, each under the command that produced it, with the load average.
#
#   bench/agent_costs.sh            # all of them
#   bench/agent_costs.sh collect    # only those whose name contains "collect"
#
# collect_bench   one collection round vs the read floor, allocations per round (agent)
# buffer_bench    disk buffer append+ack throughput, bytes written per batch and per hour (agent)
# buffer_rss      RSS of the buffer holding a 100,000-batch backlog, filled then reopened (agent)
# codec_bench     flatbuffers encode/decode and line protocol points/s (fbs)
# sink_bench      line protocol encoder, Sink vs direct POST into a real influxd, ack latency (factory)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
only=${1:-}

dir=$(mktemp -d "${TMPDIR:-/tmp}/autofact-costs.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "==> building (release)"
cargo build --release --quiet -p autofact --example collect_bench --example buffer_bench --example buffer_rss || exit 1
cargo build --release --quiet -p autofact-fbs --example codec_bench || exit 1
cargo build --release --quiet -p autofactory --example sink_bench || exit 1
ex=$root/target/release/examples

status=0
bench() { # name, command...
  local name=$1; shift
  [ -z "$only" ] || [[ "$name" == *"$only"* ]] || return 0
  echo
  echo "==> $name: ${*/#$ex\//target/release/examples/}"
  echo "    load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  if ! "$@"; then
    echo "    $name FAILED" >&2
    status=1
  fi
}

bench collect_bench "$ex/collect_bench" 2000
bench buffer_bench "$ex/buffer_bench"
bench buffer_rss "$ex/buffer_rss" fill "$dir/rss-buf" 100000
bench buffer_rss_reopen "$ex/buffer_rss" reopen "$dir/rss-buf"
bench codec_bench "$ex/codec_bench"
bench sink_bench "$ex/sink_bench"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
