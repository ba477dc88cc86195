//! End-to-end test harness: starts the real binaries and InfluxDB, always cleans up.
#![forbid(unsafe_code)]
