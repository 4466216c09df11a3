//! Host facts recorded in snapshots, keys and locks.

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn username() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| {
        // SAFETY: geteuid has no preconditions.
        format!("uid{}", unsafe { libc::geteuid() })
    })
}

/// Whether a process with this pid exists on this host.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Bytes a pipe is asked to hold (Linux's default limit for unprivileged
/// processes, /proc/sys/fs/pipe-max-size).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Let the pipe behind `fd`, if it is one, hold 1 MiB instead of 64 KiB.
/// Through a 64 KiB pipe the writer (`pg_dump | snap create --stdin`) and
/// snap take turns 16 times per MiB, and on a small VM those switches
/// cost more than the backup's own work: a 614 MB dump re-read through
/// `cat |` took 1.5–2.6 s, 0.9–1.2 s with the larger pipe. Best effort: a
/// refusal (the user's pipe quota) leaves the pipe as it was.
pub fn enlarge_pipe(fd: &impl std::os::fd::AsRawFd) {
    let fd = fd.as_raw_fd();
    // SAFETY: fstat writes only into `st`; fcntl(F_SETPIPE_SZ) changes
    // only the pipe's capacity and fails harmlessly on anything else.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capacity of the pipe behind `fd`, if it is one.
    fn pipe_capacity(fd: &impl std::os::fd::AsRawFd) -> Option<usize> {
        // SAFETY: F_GETPIPE_SZ only reads the pipe's capacity.
        let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
        usize::try_from(n).ok()
    }

    #[test]
    fn pipes_are_enlarged_and_files_left_alone() {
        let mut child = std::process::Command::new("true").stdout(std::process::Stdio::piped()).spawn().unwrap();
        let pipe = child.stdout.take().unwrap();
        assert_eq!(pipe_capacity(&pipe), Some(64 * 1024));
        enlarge_pipe(&pipe);
        assert_eq!(pipe_capacity(&pipe), Some(1 << 20));
        child.wait().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        enlarge_pipe(&file);
        assert_eq!(pipe_capacity(&file), None);
    }
}
