//! Process hardening shared by the `polykey` CLI and the mount daemon: both hold decrypted
//! secrets in memory, so neither may leave a core dump or let a same-user process read it.
//!
//! The one unsafe call here is `setrlimit`/`prctl` with stack-owned arguments: std offers
//! neither.

#![allow(unsafe_code)]

/// Disables core dumps (RLIMIT_CORE 0, soft and hard, so children keep it too) and, on
/// Linux, makes the process non-dumpable: the kernel then writes no core even through a
/// `core_pattern` pipe, and refuses ptrace attach and `/proc/PID/mem` to processes without
/// CAP_SYS_PTRACE. A failure is ignored: there is nothing better to do than go on.
pub fn disable_core_dumps() {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls with valid, stack-owned arguments.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}
