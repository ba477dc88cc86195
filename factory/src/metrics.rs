//! The factory's own counters (lock-free atomics), rendered as Prometheus text for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Why a connection was refused or dropped; one `rejected_connections_total` series each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The websocket upgrade failed (not a websocket client, garbage bytes).
    WsHandshake,
    /// No Hello within the handshake timeout.
    HandshakeTimeout,
    /// A text frame.
    TextFrame,
    /// A message or frame larger than the limit.
    TooLarge,
    /// Bytes that fail flatbuffers verification, or an unexpected message.
    Malformed,
    /// Wrong enrollment token.
    BadToken,
    /// Unknown client id.
    UnknownClient,
    /// Wrong secret.
    BadSecret,
    /// Unsupported protocol version.
    UnsupportedVersion,
    /// Connection limit reached.
    Busy,
    /// A newer connection with the same id took over.
    Replaced,
    /// No traffic within the idle timeout.
    IdleTimeout,
    /// The factory is shutting down.
    ShuttingDown,
    /// The TLS handshake failed, or a TLS client reached a listener without TLS.
    TlsHandshake,
    /// A plain agent where `require_tls` is set.
    TlsRequired,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 15] = [
        Reason::WsHandshake,
        Reason::HandshakeTimeout,
        Reason::TextFrame,
        Reason::TooLarge,
        Reason::Malformed,
        Reason::BadToken,
        Reason::UnknownClient,
        Reason::BadSecret,
        Reason::UnsupportedVersion,
        Reason::Busy,
        Reason::Replaced,
        Reason::IdleTimeout,
        Reason::ShuttingDown,
        Reason::TlsHandshake,
        Reason::TlsRequired,
    ];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            Reason::WsHandshake => "ws_handshake",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::TextFrame => "text_frame",
            Reason::TooLarge => "too_large",
            Reason::Malformed => "malformed",
            Reason::BadToken => "bad_token",
            Reason::UnknownClient => "unknown_client",
            Reason::BadSecret => "bad_secret",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::Busy => "busy",
            Reason::Replaced => "replaced",
            Reason::IdleTimeout => "idle_timeout",
            Reason::ShuttingDown => "shutting_down",
            Reason::TlsHandshake => "tls_handshake",
            Reason::TlsRequired => "tls_required",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// All counters. Shared as `Arc<Metrics>`; the sink updates its own fields.
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP connections accepted.
    pub connections_accepted: AtomicU64,
    /// Open connections (TCP accepted, not yet closed).
    pub open_connections: AtomicU64,
    /// Clients past Welcome and still connected.
    pub connected_clients: AtomicU64,
    /// New clients enrolled.
    pub clients_enrolled: AtomicU64,
    /// Batches received (including re-sent ones).
    pub batches_received: AtomicU64,
    /// Batches skipped because their seq was already acknowledged.
    pub batches_deduplicated: AtomicU64,
    /// Points received from clients.
    pub points_received: AtomicU64,
    /// Acks sent.
    pub acks_sent: AtomicU64,
    /// Config messages pushed after a reload.
    pub configs_pushed: AtomicU64,
    /// Config messages sent again because a client reported another Config applied.
    pub configs_resent: AtomicU64,
    /// Points the sink made durable.
    pub points_written: AtomicU64,
    /// Sink write failures.
    pub sink_errors: AtomicU64,
    /// Sink write retries.
    pub sink_retries: AtomicU64,
    /// Points the store refused for good, kept in the dead-letter files (all clients).
    pub points_dead_lettered: AtomicU64,
    /// Clients enrolled because their id came from a second installation (a clone).
    pub clones_enrolled: AtomicU64,
    /// Batches that opened a new dedup window (a buffer epoch other than the last acked one).
    pub epochs_started: AtomicU64,
    /// Clients whose points carry a host tag made unique (their hostname was taken).
    pub host_tags_made_unique: AtomicU64,
    /// Inventory writes that failed (full or failing disk); the records are kept and retried.
    pub inventory_write_errors: AtomicU64,
    /// Times the inventory store was reopened after a failure.
    pub inventory_reopens: AtomicU64,
    /// Records changed in memory and not yet written to the store (gauge).
    pub inventory_unsaved: AtomicU64,
    /// Inventory records written to the store (a client changed many times in one round of
    /// the writer is one write).
    pub inventory_writes: AtomicU64,
    /// Inventory fsyncs (one per round with enrollments or re-keys, and one at shutdown).
    pub inventory_fsyncs: AtomicU64,
    /// Snapshots whose time was rebuilt from the agent's boottime (its clock was wrong).
    pub snapshots_time_corrected: AtomicU64,
    /// Snapshots that needed it but had no reference for their boot: written as they were,
    /// tagged `clock=unverified`.
    pub snapshots_time_uncorrectable: AtomicU64,
    /// Snapshots outside the sanity window with no reference: kept as dead letters instead.
    pub snapshots_time_refused: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
    /// Dead-lettered points per client id; only clients with refusals have an entry.
    dead_lettered: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Counts one rejected or dropped connection.
    pub fn reject(&self, reason: Reason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` points of `client` written to a dead-letter file.
    pub fn dead_lettered(&self, client: &str, n: u64) {
        self.points_dead_lettered.fetch_add(n, Ordering::Relaxed);
        *self
            .dead_lettered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(client.to_string())
            .or_default() += n;
    }

    /// Dead-lettered points of `client` so far.
    pub fn dead_lettered_of(&self, client: &str) -> u64 {
        self.dead_lettered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(client)
            .copied()
            .unwrap_or(0)
    }

    /// Rejections so far for `reason`.
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |out: &mut String, name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP autofactory_{name} {help}");
            let _ = writeln!(out, "# TYPE autofactory_{name} {kind}");
            let _ = writeln!(out, "autofactory_{name} {}", v.load(Ordering::Relaxed));
        };
        g(
            &mut out,
            "connected_clients",
            "gauge",
            "Clients past Welcome and connected.",
            &self.connected_clients,
        );
        g(
            &mut out,
            "open_connections",
            "gauge",
            "Open TCP connections.",
            &self.open_connections,
        );
        g(
            &mut out,
            "connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            &self.connections_accepted,
        );
        g(
            &mut out,
            "clients_enrolled_total",
            "counter",
            "New clients enrolled.",
            &self.clients_enrolled,
        );
        g(
            &mut out,
            "batches_received_total",
            "counter",
            "Batches received.",
            &self.batches_received,
        );
        g(
            &mut out,
            "batches_deduplicated_total",
            "counter",
            "Re-sent batches acknowledged without writing.",
            &self.batches_deduplicated,
        );
        g(
            &mut out,
            "points_received_total",
            "counter",
            "Points received.",
            &self.points_received,
        );
        g(
            &mut out,
            "acks_sent_total",
            "counter",
            "Acks sent.",
            &self.acks_sent,
        );
        g(
            &mut out,
            "configs_pushed_total",
            "counter",
            "Config messages pushed after a reload.",
            &self.configs_pushed,
        );
        g(
            &mut out,
            "configs_resent_total",
            "counter",
            "Config messages sent again because a client reported another Config applied.",
            &self.configs_resent,
        );
        g(
            &mut out,
            "points_written_total",
            "counter",
            "Points made durable by the sink.",
            &self.points_written,
        );
        g(
            &mut out,
            "sink_errors_total",
            "counter",
            "Sink write failures.",
            &self.sink_errors,
        );
        g(
            &mut out,
            "sink_retries_total",
            "counter",
            "Sink write retries.",
            &self.sink_retries,
        );
        let _ = writeln!(out, "# HELP autofactory_dead_lettered_points_total Points the store refused, kept in the dead-letter files, by client.");
        let _ = writeln!(out, "# TYPE autofactory_dead_lettered_points_total counter");
        for (client, n) in self
            .dead_lettered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // Client ids are hex (or "-"); escaped anyway, as the text format asks.
            let client = client.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "autofactory_dead_lettered_points_total{{client=\"{client}\"}} {n}"
            );
        }
        g(
            &mut out,
            "clones_enrolled_total",
            "counter",
            "Clients enrolled as new because their id came from a second installation.",
            &self.clones_enrolled,
        );
        g(
            &mut out,
            "epochs_started_total",
            "counter",
            "Batches that started a new dedup window (a new buffer epoch).",
            &self.epochs_started,
        );
        g(
            &mut out,
            "host_tags_made_unique_total",
            "counter",
            "Clients given a host tag made unique because another client holds their hostname.",
            &self.host_tags_made_unique,
        );
        g(
            &mut out,
            "inventory_write_errors_total",
            "counter",
            "Inventory writes that failed; the records are kept in memory and retried.",
            &self.inventory_write_errors,
        );
        g(
            &mut out,
            "snapshots_time_corrected_total",
            "counter",
            "Snapshots whose time was rebuilt from the agent's boottime (its clock was wrong).",
            &self.snapshots_time_corrected,
        );
        g(
            &mut out,
            "snapshots_time_uncorrectable_total",
            "counter",
            "Snapshots taken with a wrong clock in a boot without a reference: written as they were, tagged clock=unverified.",
            &self.snapshots_time_uncorrectable,
        );
        g(
            &mut out,
            "snapshots_time_refused_total",
            "counter",
            "Snapshots outside the sanity window that could not be rebuilt: kept as dead letters.",
            &self.snapshots_time_refused,
        );
        g(
            &mut out,
            "inventory_reopens_total",
            "counter",
            "Times the inventory store was reopened after a failure.",
            &self.inventory_reopens,
        );
        g(
            &mut out,
            "inventory_unsaved_records",
            "gauge",
            "Inventory records changed in memory and not yet written to disk.",
            &self.inventory_unsaved,
        );
        g(
            &mut out,
            "inventory_writes_total",
            "counter",
            "Inventory records written to the store; the changes of one client within a writer round are one write.",
            &self.inventory_writes,
        );
        g(
            &mut out,
            "inventory_fsyncs_total",
            "counter",
            "Inventory fsyncs: one per group of enrollments or re-keys, and one at shutdown.",
            &self.inventory_fsyncs,
        );
        let _ = writeln!(out, "# HELP autofactory_rejected_connections_total Connections refused or dropped, by reason.");
        let _ = writeln!(out, "# TYPE autofactory_rejected_connections_total counter");
        for r in Reason::ALL {
            let _ = writeln!(
                out,
                "autofactory_rejected_connections_total{{reason=\"{}\"}} {}",
                r.label(),
                self.rejected(r)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_each_reason_separately() {
        let m = Metrics::default();
        m.reject(Reason::BadToken);
        m.reject(Reason::BadToken);
        m.reject(Reason::ShuttingDown);
        m.points_written.fetch_add(7, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("autofactory_rejected_connections_total{reason=\"bad_token\"} 2\n"));
        assert!(
            text.contains("autofactory_rejected_connections_total{reason=\"shutting_down\"} 1\n")
        );
        assert!(text.contains("autofactory_rejected_connections_total{reason=\"busy\"} 0\n"));
        assert!(text.contains("autofactory_points_written_total 7\n"));
        m.dead_lettered("c1", 2);
        m.dead_lettered("c1", 1);
        m.dead_lettered("c\"2", 4);
        let text = m.render();
        assert!(text.contains("autofactory_dead_lettered_points_total{client=\"c1\"} 3\n"));
        assert!(text.contains("autofactory_dead_lettered_points_total{client=\"c\\\"2\"} 4\n"));
        assert_eq!(m.points_dead_lettered.load(Ordering::Relaxed), 7);
        m.clones_enrolled.fetch_add(1, Ordering::Relaxed);
        m.inventory_unsaved.store(3, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("autofactory_clones_enrolled_total 1\n"));
        assert!(text.contains("# TYPE autofactory_inventory_unsaved_records gauge\n"));
        assert!(text.contains("autofactory_inventory_unsaved_records 3\n"));
        assert!(text.contains("autofactory_inventory_write_errors_total 0\n"));
    }
}
