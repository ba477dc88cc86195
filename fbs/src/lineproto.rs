//! InfluxDB line protocol for facts, with Telegraf's measurement, tag and field names.
//!
//! One pure encoder used by both binaries: the agent's `collect --once` and the factory's sinks.
//! It appends to a caller-owned `String` through `core::fmt::Write` and never allocates anything
//! else, so a sink that reuses its buffer encodes without allocating.
//!
//! Rules (InfluxDB line protocol reference):
//! - Escaping: measurement: comma and space; tag keys, tag values and field keys: comma, equals
//!   sign and space; string field values: double quote and backslash.
//! - Line protocol cannot carry a newline in any of these, so `\n` and `\r` are written as an
//!   (escaped) space: a hostile interface name must not be able to start a new point.
//! - A backslash that would otherwise run into an escape we add, or into the separator after a
//!   name, is doubled so the line still splits where it should.
//! - Tags are sorted by key (InfluxDB's preferred order); a tag with an empty value is left out
//!   (InfluxDB rejects empty tag values).
//! - Integers carry the `i` suffix; a `u64` above `i64::MAX` is written as `i64::MAX`.
//! - Floats are written with Rust's shortest round-tripping decimal form (`1` for 1.0, which
//!   InfluxDB reads as a float since it has no `i`). NaN and infinities are left out; a point
//!   whose fields were all left out is not written.
use crate::model::{
    Batch, BufferState, Cpu, Disk, DiskIo, Health, Kernel, Mem, Net, Processes, Snapshot, Swap,
    System, Temp,
};
use core::fmt::Write;

/// Tags every point carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tags<'a> {
    /// `host`
    pub host: &'a str,
    /// `region`, left out when empty
    pub region: &'a str,
    /// `zone`, left out when empty
    pub zone: &'a str,
    /// `clock`, left out when empty: `unverified` on points whose time the factory should have
    /// rebuilt (the agent's clock was wrong) but could not (no reference for their boot).
    pub clock: &'a str,
}

/// Appends every point of `snap` to `out`, one line each; returns the number of points.
pub fn write_snapshot(out: &mut String, tags: &Tags<'_>, snap: &Snapshot) -> usize {
    let ts = snap.time_ns;
    let mut n = 0;
    for c in &snap.cpu {
        n += usize::from(write_cpu(out, tags, c, ts));
    }
    if let Some(k) = &snap.kernel {
        n += usize::from(write_kernel(out, tags, k, ts));
    }
    if let Some(m) = &snap.mem {
        n += usize::from(write_mem(out, tags, m, ts));
    }
    if let Some(s) = &snap.swap {
        n += usize::from(write_swap(out, tags, s, ts));
    }
    if let Some(s) = &snap.system {
        n += usize::from(write_system(out, tags, s, ts));
    }
    for x in &snap.net {
        n += usize::from(write_net(out, tags, x, ts));
    }
    for d in &snap.diskio {
        n += usize::from(write_diskio(out, tags, d, ts));
    }
    for d in &snap.disk {
        n += usize::from(write_disk(out, tags, d, ts));
    }
    for t in &snap.temp {
        n += usize::from(write_temp(out, tags, t, ts));
    }
    if let Some(p) = &snap.processes {
        n += usize::from(write_processes(out, tags, p, ts));
    }
    if let Some(h) = &snap.health {
        n += usize::from(write_health(out, tags, h, ts));
    }
    n
}

/// Appends every point of every snapshot of `batch`; returns the number of points.
pub fn write_batch(out: &mut String, tags: &Tags<'_>, batch: &Batch) -> usize {
    batch
        .snapshots
        .iter()
        .map(|s| write_snapshot(out, tags, s))
        .sum()
}

// ------------------------------------------------------------------------ one measurement each

/// `cpu`, tag `cpu`; false when no point was written.
pub fn write_cpu(out: &mut String, tags: &Tags<'_>, c: &Cpu, ts: i64) -> bool {
    let mut p = Point::begin(
        out,
        "cpu",
        tags,
        [("cpu", c.name.as_str()), NO_TAG, NO_TAG, NO_TAG],
    );
    p.float("usage_user", c.user);
    p.float("usage_system", c.system);
    p.float("usage_idle", c.idle);
    p.float("usage_nice", c.nice);
    p.float("usage_iowait", c.iowait);
    p.float("usage_irq", c.irq);
    p.float("usage_softirq", c.softirq);
    p.float("usage_steal", c.steal);
    p.float("usage_guest", c.guest);
    p.float("usage_guest_nice", c.guest_nice);
    p.finish(ts)
}

/// `kernel`.
pub fn write_kernel(out: &mut String, tags: &Tags<'_>, k: &Kernel, ts: i64) -> bool {
    let mut p = Point::begin(out, "kernel", tags, [NO_TAG; 4]);
    p.int("boot_time", k.boot_time);
    p.int("context_switches", k.context_switches);
    p.int("interrupts", k.interrupts);
    p.int("processes_forked", k.processes_forked);
    if let Some(e) = k.entropy_avail {
        p.int("entropy_avail", e);
    }
    p.finish(ts)
}

/// `mem`, with Telegraf's derived `available_percent` and `used_percent` (left out when total
/// is 0, where they have no meaning).
pub fn write_mem(out: &mut String, tags: &Tags<'_>, m: &Mem, ts: i64) -> bool {
    let mut p = Point::begin(out, "mem", tags, [NO_TAG; 4]);
    p.int("total", m.total);
    p.int("available", m.available);
    p.int("used", m.used);
    p.int("free", m.free);
    p.int("cached", m.cached);
    p.int("buffered", m.buffered);
    p.int("active", m.active);
    p.int("inactive", m.inactive);
    p.int("slab", m.slab);
    p.int("shared", m.shared);
    p.int("commit_limit", m.commit_limit);
    p.int("committed_as", m.committed_as);
    p.int("dirty", m.dirty);
    p.int("high_free", m.high_free);
    p.int("high_total", m.high_total);
    p.int("huge_pages_free", m.huge_pages_free);
    p.int("huge_page_size", m.huge_page_size);
    p.int("huge_pages_total", m.huge_pages_total);
    p.int("low_free", m.low_free);
    p.int("low_total", m.low_total);
    p.int("mapped", m.mapped);
    p.int("page_tables", m.page_tables);
    p.int("sreclaimable", m.sreclaimable);
    p.int("sunreclaim", m.sunreclaim);
    p.int("swap_cached", m.swap_cached);
    p.int("swap_free", m.swap_free);
    p.int("swap_total", m.swap_total);
    p.int("vmalloc_chunk", m.vmalloc_chunk);
    p.int("vmalloc_total", m.vmalloc_total);
    p.int("vmalloc_used", m.vmalloc_used);
    p.int("write_back", m.write_back);
    p.int("write_back_tmp", m.write_back_tmp);
    if m.total > 0 {
        p.float("available_percent", percent(m.available, m.total));
        p.float("used_percent", percent(m.used, m.total));
    }
    p.finish(ts)
}

/// `swap`; `used_percent` is 0 on a machine without swap, as Telegraf (gopsutil) writes it, so
/// a dashboard's panel shows 0 rather than nothing; `in`/`out` when `/proc/vmstat` was read.
pub fn write_swap(out: &mut String, tags: &Tags<'_>, s: &Swap, ts: i64) -> bool {
    let mut p = Point::begin(out, "swap", tags, [NO_TAG; 4]);
    p.int("total", s.total);
    p.int("used", s.used);
    p.int("free", s.free);
    let used_percent = if s.total > 0 {
        percent(s.used, s.total)
    } else {
        0.0
    };
    p.float("used_percent", used_percent);
    if let Some(v) = s.sin {
        p.int("in", v);
    }
    if let Some(v) = s.sout {
        p.int("out", v);
    }
    p.finish(ts)
}

/// `system`.
pub fn write_system(out: &mut String, tags: &Tags<'_>, s: &System, ts: i64) -> bool {
    let mut p = Point::begin(out, "system", tags, [NO_TAG; 4]);
    p.float("load1", s.load1);
    p.float("load5", s.load5);
    p.float("load15", s.load15);
    p.int("n_cpus", u64::from(s.n_cpus));
    p.int("uptime", s.uptime);
    // Left out where there is no utmp, as Telegraf does.
    if let Some(n) = s.n_users {
        p.int("n_users", u64::from(n));
    }
    if let Some(n) = s.n_unique_users {
        p.int("n_unique_users", u64::from(n));
    }
    p.finish(ts)
}

/// `net`, tag `interface`.
pub fn write_net(out: &mut String, tags: &Tags<'_>, n: &Net, ts: i64) -> bool {
    let tag = ("interface", n.interface.as_str());
    let mut p = Point::begin(out, "net", tags, [tag, NO_TAG, NO_TAG, NO_TAG]);
    p.int("bytes_sent", n.bytes_sent);
    p.int("bytes_recv", n.bytes_recv);
    p.int("packets_sent", n.packets_sent);
    p.int("packets_recv", n.packets_recv);
    p.int("err_in", n.err_in);
    p.int("err_out", n.err_out);
    p.int("drop_in", n.drop_in);
    p.int("drop_out", n.drop_out);
    p.finish(ts)
}

/// `diskio`, tag `name`.
pub fn write_diskio(out: &mut String, tags: &Tags<'_>, d: &DiskIo, ts: i64) -> bool {
    let mut p = Point::begin(
        out,
        "diskio",
        tags,
        [("name", d.name.as_str()), NO_TAG, NO_TAG, NO_TAG],
    );
    p.int("reads", d.reads);
    p.int("writes", d.writes);
    p.int("read_bytes", d.read_bytes);
    p.int("write_bytes", d.write_bytes);
    p.int("read_time", d.read_time);
    p.int("write_time", d.write_time);
    p.int("io_time", d.io_time);
    p.int("weighted_io_time", d.weighted_io_time);
    p.int("iops_in_progress", d.iops_in_progress);
    p.int("merged_reads", d.merged_reads);
    p.int("merged_writes", d.merged_writes);
    // Telegraf's interval figures: absent on the first sample and when nothing completed.
    for (key, v) in [
        ("io_await", d.io_await),
        ("io_svctm", d.io_svctm),
        ("io_util", d.io_util),
    ] {
        if let Some(v) = v {
            p.float(key, v);
        }
    }
    p.finish(ts)
}

/// `disk`, tags `path`, `device`, `fstype`, `mode`; `used_percent` = used / (used + free) * 100 as
/// Telegraf computes it (free is what unprivileged users can still use).
pub fn write_disk(out: &mut String, tags: &Tags<'_>, d: &Disk, ts: i64) -> bool {
    let extra = [
        ("path", d.path.as_str()),
        ("device", d.device.as_str()),
        ("fstype", d.fstype.as_str()),
        ("mode", d.mode.as_str()),
    ];
    let mut p = Point::begin(out, "disk", tags, extra);
    p.int("total", d.total);
    p.int("free", d.free);
    p.int("used", d.used);
    p.int("inodes_total", d.inodes_total);
    p.int("inodes_free", d.inodes_free);
    p.int("inodes_used", d.inodes_used);
    // In f64: used + free can overflow u64 on a corrupt statvfs.
    let denom = d.used as f64 + d.free as f64;
    if denom > 0.0 {
        p.float("used_percent", d.used as f64 / denom * 100.0);
    }
    p.finish(ts)
}

/// `temp`, tag `sensor`.
pub fn write_temp(out: &mut String, tags: &Tags<'_>, t: &Temp, ts: i64) -> bool {
    let tag = ("sensor", t.sensor.as_str());
    let mut p = Point::begin(out, "temp", tags, [tag, NO_TAG, NO_TAG, NO_TAG]);
    p.float("temp", t.temp);
    p.finish(ts)
}

/// `processes`: every Telegraf Linux field, each written even when 0 (Telegraf writes `parked`
/// only when some task is parked; we always do, so the series has no holes).
pub fn write_processes(out: &mut String, tags: &Tags<'_>, s: &Processes, ts: i64) -> bool {
    let mut p = Point::begin(out, "processes", tags, [NO_TAG; 4]);
    p.int("blocked", s.blocked.into());
    p.int("running", s.running.into());
    p.int("sleeping", s.sleeping.into());
    p.int("stopped", s.stopped.into());
    p.int("zombies", s.zombies.into());
    p.int("dead", s.dead.into());
    p.int("idle", s.idle.into());
    p.int("paging", s.paging.into());
    p.int("parked", s.parked.into());
    p.int("unknown", s.unknown.into());
    p.int("total", s.total.into());
    p.int("total_threads", s.total_threads);
    p.finish(ts)
}

/// `autofact`, the agent's own health.
pub fn write_health(out: &mut String, tags: &Tags<'_>, h: &Health, ts: i64) -> bool {
    let mut p = Point::begin(out, "autofact", tags, [NO_TAG; 4]);
    p.int("buffered_batches", h.buffered_batches);
    p.int("buffered_bytes", h.buffered_bytes);
    p.int("dropped_batches", h.dropped_batches);
    p.int("reconnects", h.reconnects);
    p.int("collect_us", h.collect_us);
    p.int("parse_errors", h.parse_errors);
    // 0 disk, 1 disk_full, 2 read_only, 3 disk_failed (BufferState): an int so that
    // `max(buffer_state) > 0` finds degraded nodes in a query.
    p.int("buffer_state", buffer_state_code(h.buffer_state));
    p.int("memory_batches", h.memory_batches);
    p.int("dead_letter_batches", h.dead_letter_batches);
    p.int("dropped_snapshots", h.dropped_snapshots);
    // A string field, not a tag: an upgrade must not start new series for the same agent.
    if !h.agent_version.is_empty() {
        p.string("agent_version", &h.agent_version);
    }
    p.finish(ts)
}

/// The `buffer_state` field's integer: the order of [`BufferState`]'s variants.
pub fn buffer_state_code(b: BufferState) -> u64 {
    match b {
        BufferState::Disk => 0,
        BufferState::DiskFull => 1,
        BufferState::ReadOnly => 2,
        BufferState::DiskFailed => 3,
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    part as f64 / whole as f64 * 100.0
}

// ------------------------------------------------------------------------------ point writer

/// A tag slot left unused (its empty value is skipped like any empty tag).
const NO_TAG: (&str, &str) = ("", "");

/// One line being written. Fields that are left out never touch `out`; if none is written,
/// `finish` truncates the line away (truncation never allocates).
struct Point<'o> {
    out: &'o mut String,
    start: usize,
    fields: usize,
}

/// Byte order of two tag keys (InfluxDB's order), without a call per comparison.
fn key_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x < y;
        }
    }
    a.len() < b.len()
}

impl<'o> Point<'o> {
    /// Writes the measurement and the sorted, non-empty tags: the common four plus up to
    /// four of the measurement's own. A fixed array keeps the sort off the heap.
    fn begin(
        out: &'o mut String,
        measurement: &str,
        tags: &Tags<'_>,
        extra: [(&str, &str); 4],
    ) -> Point<'o> {
        let start = out.len();
        write_measurement(out, measurement);
        // Only the tags that are set are sorted (usually three or four, the common ones already
        // in key order), with a byte comparison that stops at the first difference: sorting all
        // eight slots with memcmp was a tenth of the factory's time at 10,000 agents.
        let mut set = [("", ""); 8];
        let mut n = 0;
        for (key, value) in [
            ("clock", tags.clock),
            ("host", tags.host),
            ("region", tags.region),
            ("zone", tags.zone),
            extra[0],
            extra[1],
            extra[2],
            extra[3],
        ] {
            // InfluxDB 1.x refuses a tag value that ends in a backslash however it is escaped
            // ("invalid tag format"), which would cost the whole point: drop trailing
            // backslashes, as Telegraf's serializer does.
            let value = value.trim_end_matches('\\');
            if !key.is_empty() && !value.is_empty() {
                set[n] = (key, value);
                n += 1;
            }
        }
        let set = &mut set[..n];
        // Insertion sort: the list is short and nearly sorted.
        for i in 1..set.len() {
            let mut j = i;
            while j > 0 && key_less(set[j].0, set[j - 1].0) {
                set.swap(j, j - 1);
                j -= 1;
            }
        }
        for &(key, value) in set.iter() {
            out.push(',');
            write_key(out, key);
            out.push('=');
            write_key(out, value);
        }
        Point {
            out,
            start,
            fields: 0,
        }
    }

    fn field_key(&mut self, key: &str) {
        self.out.push(if self.fields == 0 { ' ' } else { ',' });
        write_key(self.out, key);
        self.out.push('=');
        self.fields += 1;
    }

    fn int(&mut self, key: &str, v: u64) {
        self.field_key(key);
        write_int(self.out, v);
    }

    fn float(&mut self, key: &str, v: f64) {
        if v.is_finite() {
            self.field_key(key);
            write_float(self.out, v);
        }
    }

    fn string(&mut self, key: &str, v: &str) {
        self.field_key(key);
        write_string_field(self.out, v);
    }

    /// Ends the line with the timestamp; false (and nothing written) when no field survived.
    fn finish(self, ts: i64) -> bool {
        if self.fields == 0 {
            self.out.truncate(self.start);
            return false;
        }
        // Writing into a String cannot fail.
        let _ = writeln!(self.out, " {ts}");
        true
    }
}

// ---------------------------------------------------------------------------- value writers

/// Appends an integer field value: decimal with the `i` suffix, saturating at `i64::MAX`
/// (InfluxDB integers are signed 64-bit).
pub fn write_int(out: &mut String, v: u64) {
    // Digits by hand rather than through `fmt`: integers are most of the fields, and the
    // formatting machinery was a visible share of the factory's time at fleet scale.
    let mut v = v.min(i64::MAX as u64);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
    out.push('i');
}

/// Appends a float field value in its shortest round-tripping decimal form. The caller leaves
/// out NaN and infinities, which line protocol cannot express.
pub fn write_float(out: &mut String, v: f64) {
    let _ = write!(out, "{v}");
}

/// Appends a string field value: double-quoted, with `"` and `\` escaped by a backslash and
/// newlines written as spaces (line protocol cannot carry them).
pub fn write_string_field(out: &mut String, v: &str) {
    out.push('"');
    if !v.bytes().any(|b| matches!(b, b'"' | b'\\' | b'\n' | b'\r')) {
        out.push_str(v);
    } else {
        for ch in v.chars() {
            match ch {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(ch);
                }
                '\n' | '\r' => out.push(' '),
                _ => out.push(ch),
            }
        }
    }
    out.push('"');
}

/// Appends a measurement name, escaping comma and space.
pub fn write_measurement(out: &mut String, name: &str) {
    write_escaped(out, name, b", ");
}

/// Appends a tag key, tag value or field key, escaping comma, equals sign and space.
pub fn write_key(out: &mut String, key: &str) {
    write_escaped(out, key, b",= ");
}

/// Escapes the bytes in `special` (all ASCII) with a backslash; newlines become an escaped
/// space. A backslash is doubled when it ends the text or precedes something we escape:
/// otherwise InfluxDB's scanner would pair it with our escape or with the separator that
/// follows, and split the line in the wrong place.
fn write_escaped(out: &mut String, s: &str, special: &[u8]) {
    let needs = |b: u8| special.contains(&b) || matches!(b, b'\\' | b'\n' | b'\r');
    if !s.bytes().any(needs) {
        out.push_str(s);
        return;
    }
    let bytes = s.as_bytes();
    for (i, ch) in s.char_indices() {
        match ch {
            '\n' | '\r' => out.push_str("\\ "),
            '\\' => {
                let next = bytes.get(i + 1).copied();
                let runs_into_escape = match next {
                    None => true,
                    Some(b) => special.contains(&b) || matches!(b, b'\n' | b'\r' | b'\\'),
                };
                out.push('\\');
                if runs_into_escape {
                    out.push('\\');
                }
            }
            c if c.is_ascii() && special.contains(&(c as u8)) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: Tags<'static> = Tags {
        host: "pi",
        region: "eu",
        zone: "z1",
        clock: "",
    };
    const HOST_ONLY: Tags<'static> = Tags {
        host: "pi",
        region: "",
        zone: "",
        clock: "",
    };

    fn lines(f: impl FnOnce(&mut String) -> bool) -> (bool, String) {
        let mut out = String::new();
        let wrote = f(&mut out);
        (wrote, out)
    }

    fn key(s: &str) -> String {
        let mut out = String::new();
        write_key(&mut out, s);
        out
    }

    fn meas(s: &str) -> String {
        let mut out = String::new();
        write_measurement(&mut out, s);
        out
    }

    fn strf(s: &str) -> String {
        let mut out = String::new();
        write_string_field(&mut out, s);
        out
    }

    fn float(v: f64) -> String {
        let mut out = String::new();
        write_float(&mut out, v);
        out
    }

    #[test]
    fn measurement_escapes_comma_and_space_only() {
        assert_eq!(meas("cpu"), "cpu");
        assert_eq!(meas("my cpu,x"), r"my\ cpu\,x");
        assert_eq!(meas("a=b"), "a=b");
        assert_eq!(meas(r#"q"uote"#), r#"q"uote"#);
    }

    #[test]
    fn tag_and_field_keys_escape_comma_equals_space() {
        assert_eq!(key("eth0"), "eth0");
        assert_eq!(key("a,b"), r"a\,b");
        assert_eq!(key("a=b"), r"a\=b");
        assert_eq!(key("a b"), r"a\ b");
        assert_eq!(key(", = "), r"\,\ \=\ ");
        assert_eq!(key(r#"q"uote"#), r#"q"uote"#);
        assert_eq!(key("ünï ✓"), r"ünï\ ✓");
    }

    #[test]
    fn newlines_never_reach_the_output() {
        assert_eq!(key("a\nb\rc"), r"a\ b\ c");
        assert_eq!(meas("a\nb"), r"a\ b");
        assert_eq!(strf("a\nb"), "\"a b\"");
    }

    #[test]
    fn backslashes_are_doubled_only_where_they_would_pair_with_our_escapes() {
        // Ordinary backslash: kept as is.
        assert_eq!(key(r"a\b"), r"a\b");
        // Trailing: would escape the separator after it.
        assert_eq!(key(r"a\"), r"a\\");
        // Before an escaped character: would swallow our escape.
        assert_eq!(key(r"a\,b"), r"a\\\,b");
        assert_eq!(key(r"a\ b"), r"a\\\ b");
        assert_eq!(meas(r"m\ x"), r"m\\\ x");
        // '=' is not special in a measurement, so no doubling there.
        assert_eq!(meas(r"m\=x"), r"m\=x");
    }

    #[test]
    fn string_fields_escape_quote_and_backslash() {
        assert_eq!(strf("plain"), r#""plain""#);
        assert_eq!(strf(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(strf(r"C:\dir\"), r#""C:\\dir\\""#);
        assert_eq!(strf("a, b=c"), r#""a, b=c""#);
        assert_eq!(strf(""), r#""""#);
    }

    #[test]
    fn string_field_in_a_point() {
        let mut out = String::new();
        let mut p = Point::begin(&mut out, "m", &HOST_ONLY, [NO_TAG; 4]);
        p.string("note", r#"a "b" \c"#);
        assert!(p.finish(5));
        assert_eq!(out, "m,host=pi note=\"a \\\"b\\\" \\\\c\" 5\n");
    }

    #[test]
    fn integers_have_i_suffix_and_saturate() {
        let mut out = String::new();
        write_int(&mut out, 0);
        out.push(' ');
        write_int(&mut out, i64::MAX as u64);
        out.push(' ');
        write_int(&mut out, i64::MAX as u64 + 1);
        out.push(' ');
        write_int(&mut out, u64::MAX);
        assert_eq!(
            out,
            "0i 9223372036854775807i 9223372036854775807i 9223372036854775807i"
        );
    }

    #[test]
    fn floats_round_trip_and_whole_floats_have_no_i() {
        for v in [
            0.1,
            1.0 / 3.0,
            47.234,
            -3.5,
            1e-300,
            1.7976931348623157e308,
            5e-324,
        ] {
            let s = float(v);
            assert_eq!(s.parse::<f64>(), Ok(v), "{s}");
            assert!(!s.contains('i') && !s.contains('e'), "{s}");
        }
        // A whole float is written without suffix: line protocol reads it as a float.
        assert_eq!(float(1.0), "1");
        assert_eq!(float(100.0), "100");
        assert_eq!(float(-0.0), "-0");
    }

    #[test]
    fn cpu_line() {
        let c = Cpu {
            name: "cpu-total".into(),
            user: 1.5,
            system: 2.0,
            idle: 90.25,
            nice: 0.0,
            iowait: 3.0,
            irq: 0.5,
            softirq: 0.75,
            steal: 0.0,
            guest: 0.0,
            guest_nice: 2.0,
        };
        let (wrote, out) = lines(|o| write_cpu(o, &TAGS, &c, 1_700_000_000_000_000_000));
        assert!(wrote);
        assert_eq!(
            out,
            "cpu,cpu=cpu-total,host=pi,region=eu,zone=z1 usage_user=1.5,usage_system=2,\
             usage_idle=90.25,usage_nice=0,usage_iowait=3,usage_irq=0.5,usage_softirq=0.75,\
             usage_steal=0,usage_guest=0,usage_guest_nice=2 1700000000000000000\n"
        );
    }

    #[test]
    fn kernel_line() {
        let k = Kernel {
            boot_time: 1_700_000_000,
            context_switches: 12,
            interrupts: 34,
            processes_forked: 56,
            entropy_avail: Some(256),
        };
        let (_, out) = lines(|o| write_kernel(o, &HOST_ONLY, &k, 7));
        assert_eq!(
            out,
            "kernel,host=pi boot_time=1700000000i,context_switches=12i,interrupts=34i,\
             processes_forked=56i,entropy_avail=256i 7\n"
        );
        // No entropy_avail when the file could not be read: left out, not a false 0.
        let k = Kernel {
            entropy_avail: None,
            ..k
        };
        let (_, out) = lines(|o| write_kernel(o, &HOST_ONLY, &k, 7));
        assert!(!out.contains("entropy_avail"), "{out}");
    }

    #[test]
    fn mem_line_with_percentages() {
        let m = Mem {
            total: 1000,
            available: 250,
            used: 500,
            free: 100,
            cached: 200,
            buffered: 50,
            active: 300,
            inactive: 400,
            slab: 60,
            shared: 70,
            commit_limit: 1,
            committed_as: 2,
            dirty: 3,
            high_free: 4,
            high_total: 5,
            huge_pages_free: 6,
            huge_page_size: 7,
            huge_pages_total: 8,
            low_free: 9,
            low_total: 10,
            mapped: 11,
            page_tables: 12,
            sreclaimable: 13,
            sunreclaim: 14,
            swap_cached: 15,
            swap_free: 16,
            swap_total: 17,
            vmalloc_chunk: 18,
            vmalloc_total: 19,
            vmalloc_used: 20,
            write_back: 21,
            write_back_tmp: 22,
        };
        let (_, out) = lines(|o| write_mem(o, &TAGS, &m, 8));
        assert_eq!(
            out,
            "mem,host=pi,region=eu,zone=z1 total=1000i,available=250i,used=500i,free=100i,\
             cached=200i,buffered=50i,active=300i,inactive=400i,slab=60i,shared=70i,\
             commit_limit=1i,committed_as=2i,dirty=3i,high_free=4i,high_total=5i,\
             huge_pages_free=6i,huge_page_size=7i,huge_pages_total=8i,low_free=9i,low_total=10i,\
             mapped=11i,page_tables=12i,sreclaimable=13i,sunreclaim=14i,swap_cached=15i,\
             swap_free=16i,swap_total=17i,vmalloc_chunk=18i,vmalloc_total=19i,vmalloc_used=20i,\
             write_back=21i,write_back_tmp=22i,available_percent=25,used_percent=50 8\n"
        );
    }

    #[test]
    fn mem_with_zero_total_has_no_percentages() {
        let (_, out) = lines(|o| write_mem(o, &HOST_ONLY, &Mem::default(), 1));
        assert_eq!(
            out,
            "mem,host=pi total=0i,available=0i,used=0i,free=0i,cached=0i,buffered=0i,\
             active=0i,inactive=0i,slab=0i,shared=0i,commit_limit=0i,committed_as=0i,dirty=0i,\
             high_free=0i,high_total=0i,huge_pages_free=0i,huge_page_size=0i,\
             huge_pages_total=0i,low_free=0i,low_total=0i,mapped=0i,page_tables=0i,\
             sreclaimable=0i,sunreclaim=0i,swap_cached=0i,swap_free=0i,swap_total=0i,\
             vmalloc_chunk=0i,vmalloc_total=0i,vmalloc_used=0i,write_back=0i,\
             write_back_tmp=0i 1\n"
        );
    }

    #[test]
    fn swap_lines() {
        let s = Swap {
            total: 400,
            used: 100,
            free: 300,
            sin: Some(4096),
            sout: Some(8192),
        };
        let (_, out) = lines(|o| write_swap(o, &HOST_ONLY, &s, 9));
        assert_eq!(
            out,
            "swap,host=pi total=400i,used=100i,free=300i,used_percent=25,in=4096i,out=8192i 9\n"
        );
        // issue 19: a machine without swap gets used_percent=0, as Telegraf writes it.
        let (_, out) = lines(|o| write_swap(o, &HOST_ONLY, &Swap::default(), 9));
        assert_eq!(
            out,
            "swap,host=pi total=0i,used=0i,free=0i,used_percent=0 9\n"
        );
    }

    #[test]
    fn system_line() {
        let s = System {
            load1: 0.5,
            load5: 1.25,
            load15: 2.0,
            n_cpus: 4,
            uptime: 3600,
            n_users: Some(3),
            n_unique_users: Some(2),
        };
        let (_, out) = lines(|o| write_system(o, &HOST_ONLY, &s, 10));
        assert_eq!(
            out,
            "system,host=pi load1=0.5,load5=1.25,load15=2,n_cpus=4i,uptime=3600i,n_users=3i,\
             n_unique_users=2i 10\n"
        );
        // Without utmp Telegraf leaves both out; so do we.
        let s = System {
            n_users: None,
            n_unique_users: None,
            ..s
        };
        let (_, out) = lines(|o| write_system(o, &HOST_ONLY, &s, 10));
        assert_eq!(
            out,
            "system,host=pi load1=0.5,load5=1.25,load15=2,n_cpus=4i,uptime=3600i 10\n"
        );
    }

    #[test]
    fn net_line_sorts_interface_between_host_and_region() {
        let n = Net {
            interface: "eth0".into(),
            bytes_sent: 1,
            bytes_recv: 2,
            packets_sent: 3,
            packets_recv: 4,
            err_in: 5,
            err_out: 6,
            drop_in: 7,
            drop_out: 8,
        };
        let (_, out) = lines(|o| write_net(o, &TAGS, &n, 11));
        assert_eq!(
            out,
            "net,host=pi,interface=eth0,region=eu,zone=z1 bytes_sent=1i,bytes_recv=2i,\
             packets_sent=3i,packets_recv=4i,err_in=5i,err_out=6i,drop_in=7i,drop_out=8i 11\n"
        );
    }

    #[test]
    fn diskio_line() {
        let d = DiskIo {
            name: "mmcblk0".into(),
            reads: 1,
            writes: 2,
            read_bytes: 512,
            write_bytes: 1024,
            read_time: 5,
            write_time: 6,
            io_time: 7,
            weighted_io_time: 8,
            iops_in_progress: 9,
            merged_reads: 10,
            merged_writes: 11,
            ..DiskIo::default()
        };
        let (_, out) = lines(|o| write_diskio(o, &TAGS, &d, 12));
        assert_eq!(
            out,
            "diskio,host=pi,name=mmcblk0,region=eu,zone=z1 reads=1i,writes=2i,read_bytes=512i,\
             write_bytes=1024i,read_time=5i,write_time=6i,io_time=7i,weighted_io_time=8i,\
             iops_in_progress=9i,merged_reads=10i,merged_writes=11i 12\n"
        );
        let d = DiskIo {
            io_await: Some(2.5),
            io_svctm: Some(0.5),
            io_util: Some(12.5),
            ..d
        };
        let (_, out) = lines(|o| write_diskio(o, &TAGS, &d, 12));
        assert!(
            out.ends_with(",merged_writes=11i,io_await=2.5,io_svctm=0.5,io_util=12.5 12\n"),
            "{out}"
        );
    }

    #[test]
    fn disk_line_sorts_its_four_tags_and_computes_used_percent_as_telegraf() {
        let d = Disk {
            path: "/boot/firmware".into(),
            device: "mmcblk0p1".into(),
            fstype: "vfat".into(),
            total: 1000,
            free: 600,
            used: 200,
            inodes_total: 10,
            inodes_free: 4,
            inodes_used: 6,
            mode: "ro".into(),
        };
        let (_, out) = lines(|o| write_disk(o, &TAGS, &d, 13));
        // used / (used + free): 200 / 800, not 200 / total.
        assert_eq!(
            out,
            "disk,device=mmcblk0p1,fstype=vfat,host=pi,mode=ro,path=/boot/firmware,region=eu,\
             zone=z1 \
             total=1000i,free=600i,used=200i,inodes_total=10i,inodes_free=4i,inodes_used=6i,\
             used_percent=25 13\n"
        );
        let empty = Disk {
            path: "/proc".into(),
            ..Disk::default()
        };
        let (_, out) = lines(|o| write_disk(o, &HOST_ONLY, &empty, 13));
        assert_eq!(
            out,
            "disk,host=pi,path=/proc total=0i,free=0i,used=0i,inodes_total=0i,inodes_free=0i,\
             inodes_used=0i 13\n"
        );
    }

    #[test]
    fn temp_line_sorts_sensor_between_region_and_zone() {
        let t = Temp {
            sensor: "cpu-thermal".into(),
            temp: 47.236,
        };
        let (_, out) = lines(|o| write_temp(o, &TAGS, &t, 14));
        assert_eq!(
            out,
            "temp,host=pi,region=eu,sensor=cpu-thermal,zone=z1 temp=47.236 14\n"
        );
    }

    #[test]
    fn processes_line_has_every_linux_field_of_telegraf() {
        let p = Processes {
            blocked: 1,
            running: 2,
            sleeping: 3,
            stopped: 4,
            zombies: 5,
            dead: 6,
            idle: 7,
            paging: 8,
            parked: 9,
            unknown: 10,
            total: 55,
            total_threads: 600,
        };
        let (_, out) = lines(|o| write_processes(o, &HOST_ONLY, &p, 16));
        assert_eq!(
            out,
            "processes,host=pi blocked=1i,running=2i,sleeping=3i,stopped=4i,zombies=5i,dead=6i,\
             idle=7i,paging=8i,parked=9i,unknown=10i,total=55i,total_threads=600i 16\n"
        );
    }

    #[test]
    fn health_line() {
        let h = Health {
            buffered_batches: 1,
            buffered_bytes: 2,
            dropped_batches: 3,
            reconnects: 4,
            collect_us: 5,
            parse_errors: 6,
            buffer_state: BufferState::ReadOnly,
            memory_batches: 7,
            dead_letter_batches: 8,
            dropped_snapshots: 9,
            agent_version: String::new(),
        };
        let (_, out) = lines(|o| write_health(o, &HOST_ONLY, &h, 15));
        assert_eq!(
            out,
            "autofact,host=pi buffered_batches=1i,buffered_bytes=2i,dropped_batches=3i,\
             reconnects=4i,collect_us=5i,parse_errors=6i,buffer_state=2i,memory_batches=7i,\
             dead_letter_batches=8i,dropped_snapshots=9i 15\n"
        );
        let h = Health {
            agent_version: "0.2.0 \"x\"".into(),
            ..h
        };
        let (_, out) = lines(|o| write_health(o, &HOST_ONLY, &h, 15));
        assert!(
            out.ends_with(",dropped_snapshots=9i,agent_version=\"0.2.0 \\\"x\\\"\" 15\n"),
            "{out}"
        );
    }

    #[test]
    fn nan_and_infinite_fields_are_left_out() {
        let s = System {
            load1: f64::NAN,
            load5: f64::INFINITY,
            load15: f64::NEG_INFINITY,
            n_cpus: 2,
            uptime: 3,
            ..System::default()
        };
        let (_, out) = lines(|o| write_system(o, &HOST_ONLY, &s, 1));
        assert_eq!(out, "system,host=pi n_cpus=2i,uptime=3i 1\n");

        let c = Cpu {
            name: "cpu0".into(),
            user: f64::NAN,
            idle: 99.0,
            ..Cpu::default()
        };
        let (_, out) = lines(|o| write_cpu(o, &HOST_ONLY, &c, 1));
        assert!(
            out.starts_with("cpu,cpu=cpu0,host=pi usage_system=0,usage_idle=99,"),
            "{out}"
        );
        assert!(!out.contains("usage_user"), "{out}");
    }

    #[test]
    fn a_point_with_every_field_left_out_is_not_written() {
        let mut out = String::from("before\n");
        let t = Temp {
            sensor: "x".into(),
            temp: f64::NAN,
        };
        assert!(!write_temp(&mut out, &TAGS, &t, 1));
        let c = Cpu {
            name: "cpu0".into(),
            user: f64::NAN,
            system: f64::INFINITY,
            idle: f64::NAN,
            nice: f64::NAN,
            iowait: f64::NAN,
            irq: f64::NAN,
            softirq: f64::NAN,
            steal: f64::NAN,
            guest: f64::NAN,
            guest_nice: f64::NEG_INFINITY,
        };
        assert!(!write_cpu(&mut out, &TAGS, &c, 1));
        assert_eq!(out, "before\n");
        let snap = Snapshot {
            time_ns: 1,
            cpu: vec![c],
            temp: vec![t],
            ..Snapshot::default()
        };
        assert_eq!(write_snapshot(&mut out, &TAGS, &snap), 0);
        assert_eq!(out, "before\n");
    }

    #[test]
    fn empty_tag_values_are_left_out() {
        let none = Tags::default();
        let t = Temp {
            sensor: String::new(),
            temp: 1.0,
        };
        let (_, out) = lines(|o| write_temp(o, &none, &t, 1));
        assert_eq!(out, "temp temp=1 1\n");
        let zone_only = Tags {
            host: "h",
            region: "",
            zone: "z",
            clock: "",
        };
        let (_, out) = lines(|o| write_temp(o, &zone_only, &t, 1));
        assert_eq!(out, "temp,host=h,zone=z temp=1 1\n");
    }

    #[test]
    fn tag_values_lose_trailing_backslashes() {
        let mut out = String::new();
        let tags = Tags {
            host: "trailing\\\\",
            region: "\\",
            zone: "",
            clock: "",
        };
        let t = Temp {
            sensor: "cpu\\".into(),
            temp: 40.5,
        };
        assert!(write_temp(&mut out, &tags, &t, 7));
        assert_eq!(out, "temp,host=trailing,sensor=cpu temp=40.5 7\n");
    }

    #[test]
    fn tag_values_are_escaped_in_points() {
        let tags = Tags {
            host: "my host",
            region: "eu,west",
            zone: "a=b",
            clock: "",
        };
        let n = Net {
            interface: "wlan 0".into(),
            ..Net::default()
        };
        let (_, out) = lines(|o| write_net(o, &tags, &n, 1));
        assert!(
            out.starts_with(r"net,host=my\ host,interface=wlan\ 0,region=eu\,west,zone=a\=b "),
            "{out}"
        );
    }

    #[test]
    fn snapshot_writes_every_kind_in_order_and_counts_points() {
        let snap = Snapshot {
            time_ns: 99,
            cpu: vec![
                Cpu {
                    name: "cpu-total".into(),
                    ..Cpu::default()
                },
                Cpu {
                    name: "cpu0".into(),
                    ..Cpu::default()
                },
            ],
            kernel: Some(Kernel::default()),
            mem: Some(Mem::default()),
            swap: Some(Swap::default()),
            system: Some(System::default()),
            net: vec![Net::default()],
            diskio: vec![DiskIo::default()],
            disk: vec![Disk::default()],
            temp: vec![Temp::default()],
            health: Some(Health::default()),
            ..Snapshot::default()
        };
        let mut out = String::new();
        let n = write_snapshot(&mut out, &HOST_ONLY, &snap);
        assert_eq!(n, 11);
        let measurements: Vec<&str> = out
            .lines()
            .map(|l| l.split([',', ' ']).next().unwrap_or(""))
            .collect();
        assert_eq!(
            measurements,
            [
                "cpu", "cpu", "kernel", "mem", "swap", "system", "net", "diskio", "disk", "temp",
                "autofact"
            ]
        );
        assert!(out.lines().all(|l| l.ends_with(" 99")), "{out}");
        assert!(out.ends_with('\n'));

        let batch = Batch {
            seq: 1,
            snapshots: vec![snap.clone(), snap],
            ..Batch::default()
        };
        let mut twice = String::new();
        assert_eq!(write_batch(&mut twice, &HOST_ONLY, &batch), 22);
        assert_eq!(twice, format!("{out}{out}"));
    }

    #[test]
    fn empty_snapshot_writes_nothing() {
        let mut out = String::new();
        assert_eq!(write_snapshot(&mut out, &TAGS, &Snapshot::default()), 0);
        assert!(out.is_empty());
    }
}
