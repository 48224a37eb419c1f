//! How the process's allocator treats freed memory.
//!
//! glibc hands freed memory at the top of a heap back to the kernel, and
//! serves large blocks from mappings of their own, unmapped when freed; its
//! thresholds for both adapt only as large blocks come and go. A run frees
//! and takes back the same memory thousands of times: SQLite opens a
//! temporary B-tree, with a fresh page cache, for each sort and `DISTINCT`
//! of a session's summary, and buffers grow and are dropped per session.
//! Each time memory went back, the kernel faults in and zeroes new pages:
//! about 3% of a cold run's CPU. Kept instead, freed memory is reused as it
//! is. Each thread's heap keeps its own high-water mark, so the peak can
//! grow by what the threads' heaps hold at once: `bench/run.sh` measures it
//! against the bound at `--jobs` 1, 2 and 4 and for a 2 GiB session. Only
//! the return to the kernel waits for the process to exit, which for a cron
//! job is soon.

/// Blocks up to this size come from the heap, not a mapping of their own:
/// the largest threshold glibc allows on 64-bit systems.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const MAPPED_FROM: libc::c_int = 32 << 20;

/// Free memory a heap keeps at its top before any goes back.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const KEPT_AT_TOP: libc::c_int = 128 << 20;

/// Sets the allocator to keep freed memory. A setting the allocator
/// refuses leaves its default: slower, never wrong. Elsewhere than 64-bit
/// glibc, nothing changes.
///
/// # Safety
///
/// No other thread may exist yet: glibc's `mallopt` must not run while
/// another thread allocates. Call it first thing in `main`.
pub unsafe fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    // SAFETY: mallopt only changes the allocator's parameters, and the
    // caller guarantees that no other thread allocates meanwhile.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_AT_TOP);
    }
}
