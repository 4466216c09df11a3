//! Reading PostgreSQL's COPY text format (what table streams hold) and
//! writing rows as CSV or JSON, for `snap dump ID --table`.

use std::io::Write;

/// One COPY text line → its fields (`None` for NULL).
pub fn parse_line(line: &[u8]) -> Vec<Option<String>> {
    line.split(|&b| b == b'\t')
        .map(|f| if f == b"\\N" { None } else { Some(String::from_utf8_lossy(&unescape(f)).into_owned()) })
        .collect()
}

fn unescape(f: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        if f[i] != b'\\' || i + 1 == f.len() {
            out.push(f[i]);
            i += 1;
            continue;
        }
        let c = f[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                for _ in 0..2 {
                    match f.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 {
                    match f.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            n += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

/// Column names from a stream's header, `COPY "s"."t" ("a", "b") FROM stdin;`.
pub fn header_columns(header: &str) -> Vec<String> {
    let Some((_, rest)) = header.split_once(" (") else { return Vec::new() };
    let Some((cols, _)) = rest.rsplit_once(") FROM") else { return Vec::new() };
    cols.split(", ").map(|c| c.trim_matches('"').replace("\"\"", "\"")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// Turns a table stream (header, COPY lines, `\.`) into CSV or JSON as it
/// is written to it.
pub struct TableWriter<W: Write> {
    out: W,
    format: Format,
    columns: Option<Vec<String>>,
    partial: Vec<u8>,
    rows: u64,
    done: bool,
}

impl<W: Write> TableWriter<W> {
    pub fn new(out: W, format: Format) -> Self {
        TableWriter { out, format, columns: None, partial: Vec::new(), rows: 0, done: false }
    }

    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.done {
            return Ok(());
        }
        let Some(columns) = &self.columns else {
            let cols = header_columns(&String::from_utf8_lossy(line));
            match self.format {
                Format::Csv => {
                    writeln!(self.out, "{}", cols.iter().map(|c| csv_field(Some(c))).collect::<Vec<_>>().join(","))?
                }
                Format::Json => write!(self.out, "[")?,
            }
            self.columns = Some(cols);
            return Ok(());
        };
        if line == b"\\." {
            self.done = true;
            return Ok(());
        }
        let fields = parse_line(line);
        match self.format {
            Format::Csv => {
                writeln!(self.out, "{}", fields.iter().map(|f| csv_field(f.as_deref())).collect::<Vec<_>>().join(","))?
            }
            Format::Json => {
                let obj: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .cloned()
                    .zip(fields.into_iter().map(|f| f.map_or(serde_json::Value::Null, serde_json::Value::String)))
                    .collect();
                let sep = if self.rows == 0 { "\n" } else { ",\n" };
                write!(self.out, "{sep}{}", serde_json::Value::Object(obj))?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<u64> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line)?;
        }
        if self.format == Format::Json {
            if self.columns.is_none() {
                write!(self.out, "[")?;
            }
            writeln!(self.out, "\n]")?;
        }
        self.out.flush()?;
        Ok(self.rows)
    }
}

impl<W: Write> Write for TableWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let n = data.len();
        while let Some(p) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&data[..p])?;
            } else {
                let mut l = std::mem::take(&mut self.partial);
                l.extend_from_slice(&data[..p]);
                self.line(&l)?;
            }
            data = &data[p + 1..];
        }
        self.partial.extend_from_slice(data);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn csv_field(f: Option<&str>) -> String {
    match f {
        None => String::new(),
        Some(s) if s.contains([',', '"', '\n', '\r']) || s.is_empty() => format!("\"{}\"", s.replace('"', "\"\"")),
        Some(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields_unescape() {
        assert_eq!(parse_line(b"a\\tb\t\\N\t\\x41\\102"), vec![Some("a\tb".into()), None, Some("AB".into())]);
        assert_eq!(
            parse_line(b"line one\\nline two\t\\\\"),
            vec![Some("line one\nline two".into()), Some("\\".into())]
        );
        assert_eq!(header_columns("COPY \"s\".\"t\" (\"a\", \"we\"\"ird\") FROM stdin;"), vec!["a", "we\"ird"]);
    }

    #[test]
    fn csv_and_json_text() {
        let stream = b"COPY \"public\".\"t\" (\"id\", \"note\") FROM stdin;\n1\ta, \"q\"\n2\t\\N\n\\.\n";
        let mut buf = Vec::new();
        {
            let mut w = TableWriter::new(&mut buf, Format::Csv);
            w.write_all(stream).unwrap();
            w.finish().unwrap();
        }
        assert_eq!(String::from_utf8(buf).unwrap(), "id,note\n1,\"a, \"\"q\"\"\"\n2,\n");
        let mut buf = Vec::new();
        {
            let mut w = TableWriter::new(&mut buf, Format::Json);
            w.write_all(stream).unwrap();
            w.finish().unwrap();
        }
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v[0]["note"], "a, \"q\"");
        assert!(v[1]["note"].is_null());
    }
}
