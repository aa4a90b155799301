//! `polykey edit REPO/SECRET`: the secret in the user's editor, with no copy on disk.
//!
//! The plaintext lives in a memfd (anonymous memory with a file descriptor) that the editor
//! inherits and opens as `/proc/self/fd/N`; nothing is written to /tmp or the home. The
//! editors whose history, undo, backup and swap files would copy the secret elsewhere are
//! recognised by program name and started with those features off (see [`Family::args`]);
//! any other editor gets a warning. Mounted or not, the save is one `Put`: one commit, none
//! when nothing changed.

use crate::cli::Global;
use crate::{open, secret_path, through_daemon, Failure, EXIT_FAILURE, EXIT_USAGE};
use polykey::control::{self, Request, Response};
use polykey::secret::SecretBytes;
use polykey::{rollback, Access, Name, Node};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The editors whose disk-writing features Polykey knows how to turn off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// vim, vi (when it is vim), view, neovim.
    Vim,
    /// GNU nano.
    Nano,
    /// GNU Emacs (not emacsclient).
    Emacs,
    /// Anything else: it runs as configured.
    Other,
}

/// vim/neovim settings that keep the buffer off the disk. Given twice: with `--cmd` (before
/// the vimrc, so nothing is created while loading) and with `-c` (after it, so a vimrc cannot
/// turn them back on). `viminfo` is an alias of neovim's `shada`. `nofixendofline`: a secret
/// stored without a final newline (a password) keeps its bytes; vim would add one.
const VIM_SETTINGS: &str = "set noswapfile nobackup nowritebackup noundofile viminfo= backupcopy=yes nofixendofline";

/// Emacs settings, evaluated after the init file and before the secret is visited (no final
/// newline added either: a password keeps its bytes).
const EMACS_SETTINGS: &str = "(progn (setq make-backup-files nil backup-inhibited t auto-save-default nil \
     create-lockfiles nil auto-save-list-file-prefix nil require-final-newline nil mode-require-final-newline nil) \
     (dolist (m '(recentf-mode savehist-mode desktop-save-mode)) (when (and (fboundp m) (boundp m) (symbol-value m)) (funcall m -1))))";

impl Family {
    /// Recognises an editor by its program name, or by the name of what it resolves to on
    /// `PATH` (Debian's `vi` is a link to `vim.basic`, or to `nvi`).
    fn of(program: &OsStr) -> Family {
        let by_name = Self::named(Path::new(program));
        if by_name != Family::Other && Path::new(program).file_name() != Some(OsStr::new("vi")) {
            return by_name;
        }
        match find_on_path(program).and_then(|p| std::fs::canonicalize(p).ok()) {
            Some(real) => Self::named(&real),
            None => by_name,
        }
    }

    fn named(path: &Path) -> Family {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // vim.basic, vim.tiny, emacs-nox, emacs29: the family is the stem.
        let stem = name.split(['.', '-']).next().unwrap_or_default();
        match stem {
            "vim" | "vi" | "view" | "rvim" | "rview" | "vimdiff" | "nvim" => Family::Vim,
            "nano" | "rnano" => Family::Nano,
            s if s.starts_with("emacs") && !s.starts_with("emacsclient") => Family::Emacs,
            _ => Family::Other,
        }
    }

    /// The arguments, put after the user's own, that turn off what would copy the secret.
    fn args(self) -> Vec<&'static str> {
        match self {
            // -n: no swap file; -i NONE: no viminfo/shada file read or written.
            Family::Vim => vec!["-n", "-i", "NONE", "--cmd", VIM_SETTINGS, "-c", VIM_SETTINGS],
            // Ignore every nanorc (Debian's /etc/nanorc sets historylog); nano's own defaults
            // keep no search history, no position log and no backups. --nonewlines: a secret
            // stored without a final newline (a password) keeps its bytes.
            Family::Nano => vec!["--ignorercfiles", "--nonewlines"],
            Family::Emacs => vec!["--eval", EMACS_SETTINGS],
            Family::Other => Vec::new(),
        }
    }
}

fn find_on_path(program: &OsStr) -> Option<PathBuf> {
    if Path::new(program).components().count() > 1 {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The editor command: `$VISUAL`, else `$EDITOR`, else `vi`, split at whitespace (as pass does,
/// with the variable unquoted).
fn editor_command() -> Vec<OsString> {
    let var = ["VISUAL", "EDITOR"].iter().filter_map(std::env::var_os).find(|v| !v.to_string_lossy().trim().is_empty());
    match var {
        Some(v) => v.to_string_lossy().split_whitespace().map(OsString::from).collect(),
        None => vec![OsString::from("vi")],
    }
}

/// Where the secret is read from and saved to: the mount daemon, or the node held open (and
/// locked) in this process for the whole session.
enum Store {
    Daemon(PathBuf),
    Local(Box<Node>),
}

impl Store {
    fn call(&mut self, req: Request) -> Result<Response, Failure> {
        match self {
            Store::Daemon(path) => through_daemon(path, &req).unwrap_or_else(|| {
                Err(Failure(format!("the mount daemon of {} stopped answering; nothing was saved", path.display()), EXIT_FAILURE))
            }),
            Store::Local(node) => Ok(control::execute(node, req)?),
        }
    }

    /// The secret's content, or `None` if it does not exist yet.
    fn get(&mut self, repo: &Name, secret: &Name) -> Result<Option<SecretBytes>, Failure> {
        let listed = |resp: Response, name: &Name| matches!(resp, Response::Names(l) if l.iter().any(|n| n == name.as_bytes()));
        if !listed(self.call(Request::Ls(None))?, repo) || !listed(self.call(Request::Ls(Some(repo.clone())))?, secret) {
            return Ok(None);
        }
        match self.call(Request::Get(repo.clone(), secret.clone()))? {
            Response::Data(d) => Ok(Some(d)),
            _ => Err(Failure("unexpected answer from the mount daemon".into(), EXIT_FAILURE)),
        }
    }

    fn put(&mut self, repo: &Name, secret: &Name, data: SecretBytes) -> Result<(), Failure> {
        self.call(Request::Put(repo.clone(), secret.clone(), data))?;
        if let Store::Local(node) = self {
            node.save()?;
            rollback::record(node);
        }
        Ok(())
    }
}

/// Runs `polykey edit`.
pub fn edit(g: &Global, path: &OsStr) -> Result<(), Failure> {
    let (repo, secret) = secret_path(path)?;
    let command = editor_command();
    let family = Family::of(&command[0]);
    if family == Family::Other && Path::new(&command[0]).file_name().is_some_and(|n| n.to_string_lossy().starts_with("emacsclient")) {
        return Err(Failure(
            "emacsclient edits in a running Emacs, which cannot open the secret's in-memory file; set EDITOR to emacs, vim or nano".into(),
            EXIT_USAGE,
        ));
    }
    let node = crate::node_path(g)?;
    let mut store =
        if polykey::runtime::find(&node).is_some() { Store::Daemon(node) } else { Store::Local(Box::new(open(g, Access::Write)?)) };
    let old = store.get(&repo, &secret)?;
    if family == Family::Other && !g.quiet {
        eprintln!(
            "polykey: warning: Polykey cannot turn off the history, backup and swap files of {}; it may copy the secret to disk (covered: vim, neovim, nano, emacs)",
            command[0].to_string_lossy()
        );
    }
    let new = run_editor(&command, family, old.as_deref().map_or(&[][..], |d| &d[..]))?;
    if old.as_deref().is_some_and(|o| o[..] == new[..]) || (old.is_none() && new.is_empty()) {
        if !g.quiet {
            eprintln!("polykey: {repo}/{secret} unchanged; nothing saved");
        }
        return Ok(());
    }
    store.put(&repo, &secret, new)?;
    if !g.quiet {
        eprintln!("polykey: {} {repo}/{secret}", if old.is_some() { "saved" } else { "created" });
    }
    Ok(())
}

/// Runs the editor on a memory file holding `content`; returns what it holds afterwards.
#[cfg(target_os = "linux")]
fn run_editor(command: &[OsString], family: Family, content: &[u8]) -> Result<SecretBytes, Failure> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    // Not close-on-exec: the editor must inherit it to open it by its /proc/self/fd path.
    let memfd = memfd::MemfdOptions::new()
        .close_on_exec(false)
        .create("polykey-edit")
        .map_err(|e| Failure(format!("cannot create a memory file for the editor: {e}"), EXIT_FAILURE))?;
    let mut file = memfd.into_file();
    let io_err = |e: std::io::Error| Failure(format!("memory file of the editor: {e}"), EXIT_FAILURE);
    file.write_all(content).map_err(io_err)?;
    let target = format!("/proc/self/fd/{}", file.as_raw_fd());
    let status =
        std::process::Command::new(&command[0]).args(&command[1..]).args(family.args()).arg(&target).spawn().and_then(|mut child| {
            let _interrupts = polykey::process::InterruptsIgnored::new();
            child.wait()
        });
    let result = match status {
        Err(e) => Err(Failure(format!("cannot start the editor {}: {e}", command[0].to_string_lossy()), EXIT_FAILURE)),
        Ok(s) if !s.success() => Err(Failure(format!("the editor failed ({s}); nothing was saved"), EXIT_FAILURE)),
        Ok(_) => {
            let limit = polykey::git::MAX_OBJECT_BYTES as u64;
            let len = file.metadata().map_err(io_err)?.len();
            if len > limit {
                Err(Failure(format!("the edited secret is larger than the {limit}-byte limit; nothing was saved"), EXIT_FAILURE))
            } else {
                let mut data = zeroize::Zeroizing::new(Vec::with_capacity(len as usize));
                file.rewind().map_err(io_err)?;
                Read::by_ref(&mut file).take(limit).read_to_end(&mut data).map_err(io_err)?;
                Ok(data)
            }
        }
    };
    wipe(&mut file);
    result
}

#[cfg(not(target_os = "linux"))]
fn run_editor(_: &[OsString], _: Family, _: &[u8]) -> Result<SecretBytes, Failure> {
    Err(Failure("polykey edit needs Linux (it edits in a memfd, never on disk)".into(), EXIT_FAILURE))
}

/// Overwrites the memory file with zeros before it is freed: the kernel does not clear freed
/// pages until they are reused.
#[cfg(target_os = "linux")]
fn wipe(file: &mut std::fs::File) {
    use std::io::{Seek, Write};
    let len = file.metadata().map_or(0, |m| m.len());
    let zeros = [0u8; 64 * 1024];
    if file.rewind().is_ok() {
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            if file.write_all(&zeros[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
    }
    let _ = file.set_len(0);
}

#[cfg(test)]
mod tests {
    use super::Family;
    use std::path::Path;

    #[test]
    fn recognises_editors_by_program_name() {
        for (name, family) in [
            ("vim", Family::Vim),
            ("/usr/bin/vim.basic", Family::Vim),
            ("vim.tiny", Family::Vim),
            ("nvim", Family::Vim),
            ("view", Family::Vim),
            ("nano", Family::Nano),
            ("/bin/rnano", Family::Nano),
            ("emacs", Family::Emacs),
            ("emacs-nox", Family::Emacs),
            ("emacsclient", Family::Other),
            ("code", Family::Other),
            ("nvi", Family::Other),
        ] {
            assert_eq!(Family::named(Path::new(name)), family, "{name}");
        }
    }
}
