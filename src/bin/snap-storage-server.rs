//! A local Storage API server for tests and the demo project.
//!
//! snap-storage-server --root DIR [--port N] [--faults LIST] [--demo | --demo-copy DIR]
//! The service key is read from SNAP_STORAGE_SERVICE_KEY (never argv).
//! Prints `listening on 127.0.0.1:PORT` once ready.

use std::io::Write;

fn main() {
    let mut root = None;
    let mut port = 0u16;
    let mut faults = String::new();
    let mut demo: Option<Option<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next(),
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            "--faults" => faults = args.next().unwrap_or_default(),
            // Seed the demo project's objects (and copy them under DIR).
            "--demo" => demo = Some(None),
            "--demo-copy" => demo = Some(args.next()),
            other => {
                eprintln!("snap-storage-server: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let Some(root) = root else {
        eprintln!("snap-storage-server: --root DIR is required");
        std::process::exit(2);
    };
    let Ok(key) = std::env::var("SNAP_STORAGE_SERVICE_KEY") else {
        eprintln!("snap-storage-server: set SNAP_STORAGE_SERVICE_KEY");
        std::process::exit(2);
    };
    let state = match snap::testing::storage_server::StorageServer::open(std::path::Path::new(&root), &key, &faults) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("snap-storage-server: {e}");
            std::process::exit(1);
        }
    };
    if let Some(copy) = demo {
        if let Err(e) = state.seed_demo(copy.as_deref().map(std::path::Path::new)) {
            eprintln!("snap-storage-server: seeding the demo: {e}");
            std::process::exit(1);
        }
    }
    let server = match tiny_http::Server::http(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("snap-storage-server: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    let addr = server.server_addr().to_ip().expect("tcp listener");
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    state.serve(server, 8);
}
