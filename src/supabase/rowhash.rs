//! An order-independent fingerprint of a table's rows: the count and the
//! sum (mod 2^128) of each row's BLAKE3 over its COPY text line. Computed
//! while backing up and again by `snap verify` on the live table with the
//! same column list, so row order (and physical layout) never matters,
//! while any changed, missing or duplicated row does.

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowHash {
    pub rows: u64,
    sum: u128,
    /// A line cut by a buffer boundary, completed by the next `update`.
    partial: Vec<u8>,
}

impl RowHash {
    pub fn new() -> RowHash {
        RowHash::default()
    }

    /// Feed COPY text output in pieces of any size.
    pub fn update(&mut self, mut data: &[u8]) {
        while let Some(p) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.add_line(&data[..p]);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&data[..p]);
                self.add_line(&line);
            }
            data = &data[p + 1..];
        }
        self.partial.extend_from_slice(data);
    }

    fn add_line(&mut self, line: &[u8]) {
        let h = blake3::hash(line);
        let mut first = [0u8; 16];
        first.copy_from_slice(&h.as_bytes()[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
        self.rows += 1;
    }

    /// The fingerprint as text: `rows:hex`.
    pub fn finish(&self) -> String {
        format!("{}:{:032x}", self.rows, self.sum)
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
        assert!(a.finish().starts_with("3:"));
    }
}
