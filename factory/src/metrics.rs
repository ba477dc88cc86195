//! The factory's own counters (lock-free atomics), rendered as Prometheus text for `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Points the sink made durable.
    pub points_written: AtomicU64,
    /// Sink write failures.
    pub sink_errors: AtomicU64,
    /// Sink write retries.
    pub sink_retries: AtomicU64,
    /// Points the sink refused as poison (InfluxDB 400) and dropped.
    pub points_dropped_by_sink: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
}

impl Metrics {
    /// Counts one rejected or dropped connection.
    pub fn reject(&self, reason: Reason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
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
        g(
            &mut out,
            "points_dropped_by_sink_total",
            "counter",
            "Points refused by the store as malformed.",
            &self.points_dropped_by_sink,
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
    }
}
