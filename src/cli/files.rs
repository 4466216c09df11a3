//! Files the CLI writes outside the repository (schedule units, the
//! environment file, the metrics textfile): whole or not at all.

use std::path::Path;

/// Replace `path` with `data`, created with `mode` (a new temporary file,
/// so the mode holds from the first byte), through the same crash-safe
/// sequence as repository files. A reader (node_exporter, systemd) sees the
/// old file or the new one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    crate::repo::backend::write_durably(path, data, Some(mode))
}
