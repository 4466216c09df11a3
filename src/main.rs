fn main() {
    limit_malloc_arenas();
    std::process::exit(snap::cli::main());
}

/// glibc gives each thread that allocates its own arena, and big buffers
/// freed in one arena are not reused by another: with pack-sized buffers
/// passing between threads, resident memory grows with the thread count.
/// Two arenas keep it near what the pipeline actually holds (measured on a
/// 1.5 GiB directory: 157 MiB peak RSS before, 129 MiB after, no slower).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
