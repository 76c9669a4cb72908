//! Gives memory the collector freed back to the operating system.
//!
//! glibc's allocator keeps freed memory for reuse and returns to the
//! system only what lies at the top of a heap; what a bulk free leaves in
//! the middle (series leaving memory, `analysis/retire.rs`, interleaved
//! with what stays) keeps counting in the resident size. Measured with
//! `tests/tests/limits.rs` (a /24 created and deleted 100 times): the live
//! heap stays near 3 MiB (heaptrack) while the anonymous resident size
//! grew 6 → 13 MiB without this and stays flat with it. `malloc_trim`
//! also releases the free pages inside the heaps.

/// Returns free heap pages to the system (glibc); elsewhere a no-op.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY (reviewed): `malloc_trim` takes no pointers, only walks the
    // allocator's own free lists under its locks, and is safe to call from
    // any thread at any time (glibc malloc(3)).
    unsafe {
        libc::malloc_trim(0);
    }
}
