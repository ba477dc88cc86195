#!/usr/bin/env python3
"""Checks for cross/smoke: is the output of a cross-built agent right for *this* machine?

  check.py lineproto OUT [NATIVE]  OUT is `autofact collect --once` from a cross build. Every line
                                   must be valid InfluxDB line protocol, and every fact this machine
                                   has must be there (worked out here from /proc and /sys, not from
                                   the agent). With NATIVE (the same command from the host build),
                                   each measurement's tag keys and field keys must match it.
  check.py clients JSON HOST ARCH  JSON is the factory's GET /clients: client HOST must be known
                                   with arch ARCH and an acknowledged seq >= 1.

Prints one line per problem and exits 1 when there is any; prints a summary and exits 0 otherwise.
Standard library only: the smoke test runs where nothing else may be installed.
"""

import glob
import json
import os
import re
import sys
import time

# One field value: integer (i), unsigned (u), float, boolean, or a quoted string.
FIELD_VALUE = re.compile(
    r'-?\d+i|\d+u|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|t|T|true|True|TRUE|f|F|false|False|FALSE|"(\\.|[^"\\])*"'
)


def split_unescaped(s, sep):
    """Splits on `sep` where it is not escaped with a backslash (and not inside quotes)."""
    parts, cur, i, quoted = [], "", 0, False
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur += s[i : i + 2]
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == sep and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur)
    return parts


def parse_line(line):
    """Returns (measurement, {tag: value}, {field: value}, timestamp) or raises ValueError."""
    sections = split_unescaped(line, " ")
    if len(sections) != 3:
        raise ValueError("expected `series fields timestamp`, got %d space-separated parts" % len(sections))
    series, fields, ts = sections
    head = split_unescaped(series, ",")
    measurement, tags = head[0], {}
    if not measurement:
        raise ValueError("empty measurement")
    for t in head[1:]:
        kv = split_unescaped(t, "=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise ValueError("bad tag %r" % t)
        tags[kv[0]] = kv[1]
    if list(tags) != sorted(tags):
        raise ValueError("tags not sorted by key (InfluxDB's recommended order)")
    values = {}
    for f in split_unescaped(fields, ","):
        kv = split_unescaped(f, "=")
        if len(kv) != 2 or not kv[0]:
            raise ValueError("bad field %r" % f)
        if not FIELD_VALUE.fullmatch(kv[1]):
            raise ValueError("bad field value %r" % f)
        if kv[1].lower() in ("nan", "inf", "-inf"):
            raise ValueError("non-finite field %r" % f)
        values[kv[0]] = kv[1]
    if not re.fullmatch(r"-?\d+", ts):
        raise ValueError("bad timestamp %r" % ts)
    return measurement, tags, values, int(ts)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def expected_measurements():
    """The measurements this machine must yield, from the same sources the agent reads."""
    want = {"cpu", "kernel", "mem", "swap", "system", "autofact"}
    # net: any interface besides loopback.
    ifaces = [l.split(":")[0].strip() for l in read("/proc/net/dev").splitlines()[2:] if ":" in l]
    if [i for i in ifaces if i != "lo"]:
        want.add("net")
    if read("/proc/diskstats").strip():
        want.add("diskio")
    # disk: a block-device-backed mount (what df would list).
    if [l for l in read("/proc/self/mounts").splitlines() if l.startswith("/dev/")]:
        want.add("disk")
    return want


def thermal_zones():
    """Zones whose temperature is readable right now."""
    return [z for z in glob.glob("/sys/class/thermal/thermal_zone*") if read(z + "/temp").strip()]


def check_lineproto(out_path, native_path=None):
    problems = []
    lines = [l for l in read(out_path).splitlines() if l.strip()]
    if not lines:
        return ["%s: no output" % out_path]
    seen, signature = {}, {}
    now = time.time_ns()
    for n, line in enumerate(lines, 1):
        try:
            m, tags, fields, ts = parse_line(line)
        except ValueError as e:
            problems.append("%s:%d: %s: %s" % (out_path, n, e, line[:120]))
            continue
        if abs(ts - now) > 3600 * 10**9:
            problems.append("%s:%d: timestamp %d is more than an hour from now" % (out_path, n, ts))
        if "host" not in tags:
            problems.append("%s:%d: no host tag" % (out_path, n))
        seen.setdefault(m, []).append((tags, fields))
        signature.setdefault(m, set()).add((tuple(sorted(tags)), tuple(sorted(fields))))

    want = expected_measurements()
    zones = thermal_zones()
    if zones:
        want.add("temp")
    for m in sorted(want - set(seen)):
        problems.append("%s: measurement %s is missing" % (out_path, m))
    if not zones and "temp" in seen:
        problems.append("%s: temp points but /sys/class/thermal has no readable zone" % out_path)

    # Values that are exact on this machine: a wrong-width integer or a misparse shows here.
    meminfo = dict(
        (l.split(":")[0], l.split()[1]) for l in read("/proc/meminfo").splitlines() if ":" in l
    )
    if "mem" in seen and "MemTotal" in meminfo:
        total = seen["mem"][0][1].get("total")
        if total != "%di" % (int(meminfo["MemTotal"]) * 1024):
            problems.append("%s: mem total=%s, /proc/meminfo says %s kB" % (out_path, total, meminfo["MemTotal"]))
    ncpu = len([l for l in read("/proc/stat").splitlines() if re.match(r"cpu\d+ ", l)])
    if "system" in seen and seen["system"][0][1].get("n_cpus") != "%di" % ncpu:
        problems.append("%s: system n_cpus=%s, /proc/stat has %d cpus" % (out_path, seen["system"][0][1].get("n_cpus"), ncpu))
    if "cpu" in seen and not any(t.get("cpu") == "cpu-total" for t, _ in seen["cpu"]):
        problems.append("%s: no cpu=cpu-total point" % out_path)
    for iface in [l.split(":")[0].strip() for l in read("/proc/net/dev").splitlines()[2:] if ":" in l]:
        if iface != "lo" and "net" in seen and not any(t.get("interface") == iface for t, _ in seen["net"]):
            problems.append("%s: no net point for interface %s" % (out_path, iface))

    if native_path:
        native = {}
        for line in read(native_path).splitlines():
            if line.strip():
                try:
                    m, tags, fields, _ = parse_line(line)
                except ValueError:
                    continue  # the native build's own tests judge its output
                native.setdefault(m, set()).add((tuple(sorted(tags)), tuple(sorted(fields))))
        for m in sorted(set(native) | set(signature)):
            if native.get(m, set()) != signature.get(m, set()):
                problems.append(
                    "%s: measurement %s has tag/field keys %s, the native build %s"
                    % (out_path, m, sorted(signature.get(m, set())), sorted(native.get(m, set())))
                )

    if not problems:
        print("%d lines of valid line protocol; measurements: %s" % (len(lines), " ".join(sorted(seen))))
    return problems


def check_clients(json_path, host, arch):
    try:
        with open(json_path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        return ["%s: not the clients document: %s" % (json_path, e)]
    clients = [c for c in doc.get("clients", []) if c.get("hostname") == host]
    if len(clients) != 1:
        return ["factory knows %d clients named %s (want 1): %s" % (len(clients), host, doc)]
    c, problems = clients[0], []
    if c.get("arch") != arch:
        problems.append("client %s reported arch %r, want %r" % (host, c.get("arch"), arch))
    if not c.get("last_acked_seq", 0) >= 1:
        problems.append("client %s: no batch acknowledged (last_acked_seq %r)" % (host, c.get("last_acked_seq")))
    if not problems:
        print("factory knows %s (arch %s), acknowledged up to seq %d" % (host, c["arch"], c["last_acked_seq"]))
    return problems


def main(argv):
    if len(argv) >= 2 and argv[0] == "lineproto" and len(argv) <= 3:
        problems = check_lineproto(*argv[1:])
    elif len(argv) == 4 and argv[0] == "clients":
        problems = check_clients(*argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
