//! How the process's allocator treats freed memory.
//!
//! glibc hands freed memory back to the kernel as soon as the top of a heap
//! holds more than a little of it, and serves every block over 128 KiB from
//! a mapping of its own. A run frees and takes back the same memory
//! thousands of times: SQLite opens a temporary B-tree, with a fresh page
//! cache, for each sort and `DISTINCT` of a session's summary, and buffers
//! grow and are dropped per session. Each time, the kernel faults in and
//! zeroes new pages: about 4% of a cold run's CPU. Kept instead, freed
//! memory is reused as it is. The peak stays what the run needs at once
//! (the memory bound holds, see `bench/`); only its return to the kernel
//! waits for the process to exit, which for a cron job is soon.

/// Blocks up to this size come from the heap, not a mapping of their own:
/// glibc's largest allowed threshold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MAPPED_FROM: libc::c_int = 32 << 20;

/// Free memory a heap keeps at its top before any goes back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEPT_AT_TOP: libc::c_int = 128 << 20;

/// Sets the allocator to keep freed memory. Call first thing in `main`,
/// before any thread starts. A setting the allocator refuses leaves its
/// default: slower, never wrong.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; no thread
    // allocates at the same time, as none has started yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_AT_TOP);
    }
}
