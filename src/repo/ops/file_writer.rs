//! Writing a restored file so that it is on the disk when `finish`
//! returns.
//!
//! A large file bypasses the page cache (`O_DIRECT`): its bytes go to the
//! disk from one reused, aligned buffer. Copying a restored dump into the
//! page cache was most of a restore's time, on one thread, and the fsync
//! after it waited for the disk anyway (586 MiB on this VM: `dd
//! conv=fsync` 1.3–1.7 s, `dd oflag=direct conv=fsync` 0.4–0.9 s, at a
//! third of the system time), and a restore on a busy server does not push
//! the database's pages out of memory. Where the file system refuses
//! direct I/O, or for small files, the writes go through the page cache,
//! with writeback started every few MiB so the final fsync has little
//! left to wait for.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Files from this size on are written with direct I/O.
const DIRECT_FROM: u64 = 8 << 20;
/// Bytes per direct write; offsets, lengths and the buffer are aligned to
/// `ALIGN`, which every block size in use divides.
const DIRECT_BUFFER: usize = 4 << 20;
const ALIGN: usize = 4096;
/// Buffered writes: start writeback after this many bytes.
const WRITEBACK_EVERY: u64 = 8 << 20;

pub struct FileWriter {
    file: File,
    direct: Option<AlignedBuffer>,
    written: u64,
    flushed: u64,
}

impl FileWriter {
    /// Create (or truncate) `dest` for `size` bytes.
    pub fn create(dest: &Path, size: u64) -> io::Result<FileWriter> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let direct = size >= DIRECT_FROM && cfg!(target_os = "linux");
        let file = if direct { open_direct(&options, dest) } else { None };
        let (file, direct) = match file {
            Some(f) => (f, Some(AlignedBuffer::new())),
            None => (options.open(dest)?, None),
        };
        Ok(FileWriter { file, direct, written: 0, flushed: 0 })
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.written += data.len() as u64;
        while !data.is_empty() {
            let Some(buffer) = self.direct.as_mut() else { return self.write_buffered(data) };
            let taken = buffer.fill(data);
            data = &data[taken..];
            if buffer.is_full() {
                self.write_direct()?;
            }
        }
        Ok(())
    }

    /// Write what is left and fsync the file.
    pub fn finish(mut self) -> io::Result<File> {
        if let Some(buffer) = self.direct.take() {
            // The tail is rarely a whole number of blocks: it is written
            // through the page cache, after the aligned part.
            let aligned = buffer.len / ALIGN * ALIGN;
            write_direct_or_buffered(&mut self.file, &buffer.filled()[..aligned])?;
            set_direct(&self.file, false)?;
            self.file.write_all(&buffer.filled()[aligned..])?;
        }
        self.file.sync_all()?;
        Ok(self.file)
    }

    fn write_direct(&mut self) -> io::Result<()> {
        let Some(buffer) = self.direct.as_mut() else { return Ok(()) };
        let direct = write_direct_or_buffered(&mut self.file, buffer.filled())?;
        buffer.len = 0;
        if !direct {
            self.direct = None;
        }
        Ok(())
    }

    fn write_buffered(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        if self.written - self.flushed >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn open_direct(options: &OpenOptions, dest: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    options.clone().custom_flags(libc::O_DIRECT).open(dest).ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_options: &OpenOptions, _dest: &Path) -> Option<File> {
    None
}

/// Write `data` (of an aligned length) with direct I/O; whatever a file
/// system that took O_DIRECT at open refuses (EINVAL), or leaves unaligned
/// after a short write, goes through the page cache instead, after what
/// was written. Whether the file is still in direct mode.
fn write_direct_or_buffered(file: &mut File, mut data: &[u8]) -> io::Result<bool> {
    while !data.is_empty() {
        match file.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) if n % ALIGN == 0 => data = &data[n..],
            Ok(n) => {
                set_direct(file, false)?;
                file.write_all(&data[n..])?;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                set_direct(file, false)?;
                file.write_all(data)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on an open descriptor, reading and setting status
        // flags only.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return Err(io::Error::last_os_error());
            }
            let wanted = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
            if libc::fcntl(fd, libc::F_SETFL, wanted) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, on);
    Ok(())
}

/// Ask the kernel to start writing a range that was just written, so the
/// disk works while more is decoded.
fn start_writeback(f: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open descriptor; failure is harmless
        // (the fsync at the end still makes the file durable).
        unsafe {
            libc::sync_file_range(f.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

/// `DIRECT_BUFFER` bytes at an `ALIGN`ed address, inside a plain vector.
struct AlignedBuffer {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    fn new() -> AlignedBuffer {
        let bytes = vec![0u8; DIRECT_BUFFER + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        AlignedBuffer { bytes, start, len: 0 }
    }

    /// Copy in as much of `data` as fits; how much that was.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(DIRECT_BUFFER - self.len);
        let at = self.start + self.len;
        self.bytes[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == DIRECT_BUFFER
    }

    fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large and small files, written in pieces of awkward sizes, come out
    /// as written, whatever the file system makes of direct I/O.
    #[test]
    fn files_are_written_whole_direct_or_not() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let mut probe = OpenOptions::new();
        probe.write(true).create(true);
        let direct_works = open_direct(&probe, &dir.path().join("probe")).is_some();
        let mut x = 1u64;
        let data: Vec<u8> = (0..(DIRECT_FROM as usize + DIRECT_BUFFER + 12_345))
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        for size in [0, 1, ALIGN, 100_000, DIRECT_FROM as usize, data.len()] {
            let path = dir.path().join(format!("f{size}"));
            let mut w = FileWriter::create(&path, size as u64).unwrap();
            assert_eq!(w.direct.is_some(), direct_works && size as u64 >= DIRECT_FROM, "{size}");
            for piece in data[..size].chunks(777_777) {
                w.write(piece).unwrap();
            }
            w.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == data[..size], "{size}");
        }
        // Where direct I/O is refused mid-file (here: a buffer at an odd
        // address), the bytes go through the page cache, none twice.
        if direct_works {
            let path = dir.path().join("refused");
            let mut file = open_direct(&probe, &path).unwrap();
            let mut first = AlignedBuffer::new();
            first.fill(&data[..ALIGN]);
            assert!(write_direct_or_buffered(&mut file, first.filled()).unwrap());
            // An odd address: `data` is allocated at least 2-aligned.
            let misaligned = &data[1..1 + 2 * ALIGN];
            assert!(!write_direct_or_buffered(&mut file, misaligned).unwrap());
            file.write_all(b"tail").unwrap();
            let mut want = data[..ALIGN].to_vec();
            want.extend_from_slice(misaligned);
            want.extend_from_slice(b"tail");
            assert!(std::fs::read(&path).unwrap() == want);
        }
        // Truncates what was there.
        let path = dir.path().join("f1");
        FileWriter::create(&path, 0).unwrap().finish().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
