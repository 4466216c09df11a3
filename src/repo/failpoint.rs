//! Named points where crash and concurrency tests stop the process.
//!
//! Inactive unless `SNAP_FAILPOINTS` is set, e.g.
//! `SNAP_FAILPOINTS=prune-index-written=abort` (die there, as `kill -9`
//! would: no destructors, locks left behind) or
//! `prune-planned=wait:/tmp/go` (create `/tmp/go.reached`, then wait until
//! `/tmp/go` exists, so a test can run something at exactly that point).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn spec() -> Option<&'static str> {
    static SPEC: OnceLock<Option<String>> = OnceLock::new();
    SPEC.get_or_init(|| std::env::var("SNAP_FAILPOINTS").ok().filter(|s| !s.is_empty())).as_deref()
}

pub fn hit(name: &str) {
    let Some(spec) = spec() else { return };
    for item in spec.split(',') {
        let Some((point, action)) = item.split_once('=') else { continue };
        if point.trim() != name {
            continue;
        }
        if action == "abort" {
            std::process::abort();
        }
        if let Some(path) = action.strip_prefix("wait:") {
            let _ = std::fs::write(format!("{path}.reached"), b"");
            let deadline = Instant::now() + Duration::from_secs(120);
            while !std::path::Path::new(path).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
