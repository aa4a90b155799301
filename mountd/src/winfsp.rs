//! The WinFSP adapter (Windows): not written yet; see docs/ARCHITECTURE.md, "Windows".

/// Windows entry point.
pub fn main() -> std::process::ExitCode {
    eprintln!("polykey-mountd: the Windows (WinFSP) adapter is not built yet");
    std::process::ExitCode::FAILURE
}
