fn main() {
    tune_malloc();
    std::process::exit(snap::cli::main());
}

/// glibc gives each thread that allocates its own arena, and big buffers
/// freed in one arena are not reused by another: with pack-sized buffers
/// passing between threads, resident memory grows with the thread count.
/// Two arenas keep it near what the pipeline actually holds (measured on a
/// 1.5 GiB directory: 157 MiB peak RSS before, 129 MiB after, no slower).
///
/// Chunk and blob buffers of up to a few MiB are allocated and freed all
/// the time. glibc hands such buffers back to the kernel as they are freed
/// (from its own mmap threshold on, and whatever tops a heap beyond its
/// trim threshold), so each new one is fresh pages the kernel must zero
/// and map again, which on this VM is slower still when the host has
/// reclaimed them. Keeping up to 64 MiB of freed memory per arena, and
/// mapping only buffers of 32 MiB or more (Argon2id's 64 MiB, freed before
/// the work starts) directly: day-1 dump backup 1.06 -> 0.99 s (sys 0.28
/// -> 0.18 s), restore 1.72 -> 1.58 s (sys 1.54 -> 1.25 s), same peak RSS
/// (ABBA-interleaved runs, 6 of each).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
