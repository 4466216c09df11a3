//! A loopback proxy that adds a round-trip delay in front of an S3 server,
//! so `scripts/bench-s3` can measure snap against a distant service:
//!
//!     cargo run --release --example s3_proxy -- LISTEN_PORT UPSTREAM_PORT LATENCY_MS
use std::time::Duration;

use snap::testing::s3_server::{FaultPlan, FaultyProxy};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [listen, upstream, latency_ms] = args[..] else {
        eprintln!("usage: s3_proxy LISTEN_PORT UPSTREAM_PORT LATENCY_MS");
        std::process::exit(2);
    };
    let plan = FaultPlan { latency: Duration::from_millis(latency_ms), ..FaultPlan::default() };
    let _proxy = FaultyProxy::start_on(listen as u16, upstream as u16, plan).unwrap_or_else(|e| {
        eprintln!("s3_proxy: {e}");
        std::process::exit(1);
    });
    loop {
        std::thread::park();
    }
}
