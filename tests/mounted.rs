//! A real FUSE mount of a temporary node for tests: started with the real `polykey mount`,
//! always unmounted on drop, and checked to leave no mount behind.

#![allow(dead_code)]

use crate::util::{run, TempNode};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A mounted temporary node with its own runtime folder.
pub struct Mounted {
    pub node: TempNode,
    pub mnt: PathBuf,
    pub runtime: PathBuf,
    mounted: bool,
}

/// Whether this machine can mount FUSE filesystems; prints why not.
pub fn fuse_available() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP: /dev/fuse is missing; mount tests need FUSE");
        return false;
    }
    if Command::new("fusermount3").arg("--version").output().is_err() {
        eprintln!("SKIP: fusermount3 is missing; run scripts/install-deps.sh");
        return false;
    }
    assert!(mountd_binary().exists(), "polykey-mountd is not built: run `cargo build --workspace` first");
    true
}

pub fn mountd_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_polykey")).with_file_name("polykey-mountd")
}

/// Whether `mnt` is in the mount table.
pub fn is_mounted(mnt: &Path) -> bool {
    let canon = std::fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_owned());
    std::fs::read_to_string("/proc/mounts").unwrap().lines().any(|l| l.split(' ').nth(1) == Some(canon.to_str().unwrap()))
}

/// Processes whose command line holds every one of `parts` as a whole argument (or, for a
/// program, as the last part of its path).
pub fn processes_with(parts: &[&[u8]]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            parts.iter().all(|p| args.iter().any(|a| a == p || a.ends_with(&[b"/", *p].concat())))
        })
        .collect()
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

impl Mounted {
    /// Creates a node, lets `setup` fill it through the library, then mounts it.
    pub fn with(setup: impl FnOnce(&mut polykey::Node)) -> Option<Mounted> {
        if !fuse_available() {
            return None;
        }
        let node = TempNode::new();
        {
            let mut n = node.create();
            setup(&mut n);
            n.save().unwrap();
        }
        let mnt = node.dir.path().join("mnt");
        let runtime = node.dir.path().join("run");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::create_dir(&runtime).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&runtime).unwrap().permissions(), 0o700);
        std::fs::set_permissions(&runtime, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let mut m = Mounted { node, mnt, runtime, mounted: false };
        m.mount(&[]);
        Some(m)
    }

    /// An empty mounted node.
    pub fn new() -> Option<Mounted> {
        Self::with(|_| {})
    }

    /// `polykey` with this node, its passphrase and its runtime folder.
    pub fn cli(&self) -> Command {
        let mut c = self.node.cli();
        c.env("XDG_RUNTIME_DIR", &self.runtime);
        c
    }

    /// Mounts (again) with extra `polykey mount` arguments.
    pub fn mount(&mut self, extra: &[&str]) {
        let o = run(self.cli().arg("mount").arg(&self.mnt).args(extra));
        assert!(o.status.success(), "mount failed: {}", String::from_utf8_lossy(&o.stderr));
        assert!(is_mounted(&self.mnt));
        self.mounted = true;
    }

    /// `polykey unmount`, asserting it succeeds and the mount is gone.
    pub fn unmount(&mut self) {
        let o = run(self.cli().arg("unmount").arg(&self.mnt));
        assert!(o.status.success(), "unmount failed: {}", String::from_utf8_lossy(&o.stderr));
        assert!(wait_for(10, || !is_mounted(&self.mnt)), "still mounted after unmount");
        self.mounted = false;
    }

    /// Marks a mount that the test made another way as this one's, to be unmounted on drop.
    pub fn adopt_mounted(&mut self) {
        assert!(is_mounted(&self.mnt));
        self.mounted = true;
    }

    /// Marks the mount as gone (after a test unmounted or killed it another way).
    pub fn forget_mounted(&mut self) {
        self.mounted = false;
    }

    /// The log so far of the daemons that mounted this node (each has its own file, `*.log`,
    /// moved aside to `*.log.old` when it grows large), oldest first.
    pub fn log(&self) -> String {
        let mut files: Vec<_> =
            std::fs::read_dir(self.runtime.join("polykey")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.retain(|p: &PathBuf| p.to_string_lossy().ends_with(".log") || p.to_string_lossy().ends_with(".log.old"));
        files.sort_by_key(|p| !p.to_string_lossy().ends_with(".old"));
        files.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
    }

    /// What a failed mount test should show: the daemon's log and every Polykey-related
    /// process (daemons, their watchers, fusermount3 helpers) with its state.
    pub fn diagnosis(&self) -> String {
        let ps = Command::new("ps").args(["-eo", "pid,ppid,stat,args"]).output().map(|o| o.stdout).unwrap_or_default();
        let ps: Vec<&str> =
            std::str::from_utf8(&ps).unwrap_or("").lines().filter(|l| l.contains("polykey") || l.contains("fusermount")).collect();
        format!("\n-- daemon log:\n{}-- processes:\n{}", self.log(), ps.join("\n"))
    }

    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        let o = run(self.cli().args(["status", "--json"]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|m| Path::new(m["mountpoint"].as_str().unwrap()) == std::fs::canonicalize(&self.mnt).unwrap())
            .unwrap()["pid"]
            .as_u64()
            .unwrap() as u32
    }

    /// Number of commits in `repo`'s history, asked through the CLI (the daemon when mounted).
    pub fn commits(&self, repo: &str) -> usize {
        let o = run(self.cli().args(["log", repo]));
        assert!(o.status.success(), "log failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().count()
    }

    /// The history messages of `repo`, newest first.
    pub fn messages(&self, repo: &str) -> Vec<String> {
        let o = run(self.cli().args(["log", repo, "--json"]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted && is_mounted(&self.mnt) {
            let o = run(self.cli().arg("unmount").arg(&self.mnt));
            if !o.status.success() {
                let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mnt).status();
            }
            let gone = wait_for(10, || !is_mounted(&self.mnt));
            if !std::thread::panicking() {
                assert!(gone, "a test left a mount behind at {}", self.mnt.display());
            }
        }
    }
}
