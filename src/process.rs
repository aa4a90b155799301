//! Process hardening shared by the `polykey` CLI and the mount daemon: both hold decrypted
//! secrets in memory, so neither may leave a core dump or let a same-user process read it.
//!
//! Unsafe here: `setrlimit`, `prctl` and `signal` with plain arguments, which std does not
//! offer.

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

/// While alive, SIGINT and SIGQUIT do not end this process: an editor in the foreground shares
/// the terminal's process group, and a Ctrl-C or Ctrl-\ meant for it must not end the command
/// waiting to save its work (git ignores them around its editor the same way). Made after the
/// child is started, so the child keeps the default dispositions.
pub struct InterruptsIgnored {
    int: libc::sighandler_t,
    quit: libc::sighandler_t,
}

impl InterruptsIgnored {
    /// Ignores SIGINT and SIGQUIT until dropped.
    #[must_use]
    pub fn new() -> InterruptsIgnored {
        // SAFETY: SIG_IGN is a valid disposition; the previous ones are restored on drop.
        unsafe { InterruptsIgnored { int: libc::signal(libc::SIGINT, libc::SIG_IGN), quit: libc::signal(libc::SIGQUIT, libc::SIG_IGN) } }
    }
}

impl Default for InterruptsIgnored {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InterruptsIgnored {
    fn drop(&mut self) {
        // SAFETY: restores the dispositions `signal` returned (SIG_ERR is skipped).
        unsafe {
            if self.int != libc::SIG_ERR {
                libc::signal(libc::SIGINT, self.int);
            }
            if self.quit != libc::SIG_ERR {
                libc::signal(libc::SIGQUIT, self.quit);
            }
        }
    }
}
