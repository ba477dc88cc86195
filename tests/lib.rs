//! End-to-end test harness: starts the real binaries and InfluxDB, always cleans up.
//!
//! # Layout
//! - [`influx`]: a real InfluxDB 1.x on loopback ports, stoppable for outage tests.
//! - [`tmp`]: temporary directories removed on drop.
//! - [`pki`]: a CA and factory certificates (good and bad) made by the test, as PEM files.
//! - [`tls_front`]: an https endpoint (TLS terminator) in front of a real InfluxDB, or alone.
//! - [`poll`]: waiting for a condition, free ports.
//! - [`process`]: child processes killed and reaped on drop, with their output in files.
//! - [`proxy`]: a loopback TCP proxy the test can cut and restore.
//! - [`haproxy`]: a real HAProxy in TCP mode in front of several factories.
//! - [`victoria`]: a real VictoriaMetrics single node, the other store the sink writes to.
//! - [`harness`]: the real factory and agent binaries with their configs, and the series-gap
//!   checker ("nothing lost").
//!
//! The end-to-end scenarios themselves are in `e2e/` (the `e2e` test target).
#![forbid(unsafe_code)]

pub mod haproxy;
pub mod harness;
pub mod influx;
pub mod pki;
pub mod poll;
pub mod process;
pub mod proxy;
pub mod tls_front;
pub mod tmp;
pub mod victoria;
