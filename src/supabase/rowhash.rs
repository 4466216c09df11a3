//! An order-independent fingerprint of a table's rows: the count and the
//! sum (mod 2^128) of a 128-bit hash of each row's COPY text line.
//! Computed while backing up and again by `snap verify` on the live table
//! with the same column list, so row order (and physical layout) never
//! matters, while any changed, missing or duplicated row does.
//!
//! Rows are hashed with XXH3-128, written `ROWS:x3:HEX`: per row it costs
//! a tenth of BLAKE3's fixed overhead on ~100-byte rows, and the sum only
//! has to catch accidents, not an adversary who controls both the table
//! and the repository. Snapshots from before that used BLAKE3 (`ROWS:HEX`)
//! and are still verified with it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Blake3,
    Xxh3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowHash {
    pub rows: u64,
    sum: u128,
    algorithm: Algorithm,
    /// A line cut by a buffer boundary, completed by the next `update`.
    partial: Vec<u8>,
}

impl Default for RowHash {
    fn default() -> Self {
        RowHash::new()
    }
}

impl RowHash {
    pub fn new() -> RowHash {
        RowHash { rows: 0, sum: 0, algorithm: Algorithm::Xxh3, partial: Vec::new() }
    }

    /// A hasher that computes the same kind of fingerprint as `expected`
    /// (one recorded in a snapshot).
    pub fn like(expected: &str) -> RowHash {
        let algorithm = if expected.contains(":x3:") { Algorithm::Xxh3 } else { Algorithm::Blake3 };
        RowHash { algorithm, ..RowHash::new() }
    }

    /// Feed COPY text output in pieces of any size.
    pub fn update(&mut self, mut data: &[u8]) {
        while let Some(p) = memchr::memchr(b'\n', data) {
            if self.partial.is_empty() {
                self.add_line(&data[..p]);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&data[..p]);
                self.add_line(&line);
                line.clear();
                self.partial = line;
            }
            data = &data[p + 1..];
        }
        self.partial.extend_from_slice(data);
    }

    fn add_line(&mut self, line: &[u8]) {
        let h = match self.algorithm {
            Algorithm::Xxh3 => xxhash_rust::xxh3::xxh3_128(line),
            Algorithm::Blake3 => {
                let mut first = [0u8; 16];
                first.copy_from_slice(&blake3::hash(line).as_bytes()[..16]);
                u128::from_le_bytes(first)
            }
        };
        self.sum = self.sum.wrapping_add(h);
        self.rows += 1;
    }

    /// The fingerprint as text.
    pub fn finish(&self) -> String {
        match self.algorithm {
            Algorithm::Xxh3 => format!("{}:x3:{:032x}", self.rows, self.sum),
            Algorithm::Blake3 => format!("{}:{:032x}", self.rows, self.sum),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_chunking_do_not_matter_content_does() {
        let mut a = RowHash::new();
        a.update(b"1\tx\n2\ty\n3\tz\n");
        let mut b = RowHash::new();
        for piece in [&b"3\tz"[..], b"\n2\t", b"y\n1\tx\n"] {
            b.update(piece);
        }
        assert_eq!(a.finish(), b.finish());
        let mut c = RowHash::new();
        c.update(b"1\tx\n2\ty\n3\tZ\n");
        assert_ne!(a.finish(), c.finish());
        let mut d = RowHash::new();
        d.update(b"1\tx\n1\tx\n2\ty\n3\tz\n");
        assert_ne!(a.finish(), d.finish());
        assert!(a.finish().starts_with("3:x3:"));
    }

    #[test]
    fn older_blake3_fingerprints_are_recomputed_alike() {
        // Recorded by a snapshot from before XXH3: "rows:hex" over BLAKE3.
        let old = "2:".to_string()
            + &{
                let sum = [b"1\tx".as_slice(), b"2\ty"]
                    .iter()
                    .map(|l| u128::from_le_bytes(blake3::hash(l).as_bytes()[..16].try_into().unwrap()))
                    .fold(0u128, |a, b| a.wrapping_add(b));
                format!("{sum:032x}")
            };
        let mut h = RowHash::like(&old);
        h.update(b"2\ty\n1\tx\n");
        assert_eq!(h.finish(), old);
        let mut new = RowHash::like(&RowHash::new().finish());
        new.update(b"2\ty\n1\tx\n");
        assert!(new.finish().starts_with("2:x3:"));
    }
}
