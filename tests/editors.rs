//! Real editors and tools on the mounted tree (CONTRACT.md, "The mounted tree": "Editors must
//! just work: vim, nano, emacs, sed -i, cp, mv, echo x > f, truncate, through the repo path or a
//! tag path").
//!
//! Every case edits one secret once, through `repos/aws/key` (a secret with two tag links),
//! through `tags/ops/api` (a tag entry of that same secret, named differently), and for the
//! programs that save by renaming also through `repos/aws/plain` (a secret without tag links:
//! vim with `backupcopy=auto` renames when a file has one link and writes in place when it has
//! several). Then:
//!
//! - right away and again after 2×GRACE: every path of the secret shows the new content, the
//!   same inode, and `nlink` = 1 + number of tag links;
//! - after 2×GRACE: exactly one new commit in the repository, "Update <secret>", and nothing
//!   else changed in history; `polykey ls`, `polykey tags` and `polykey get` agree; no
//!   temporary or scratch name reached history, and no temporary (non-scratch) name is left in
//!   any folder of the mount.
//!
//! The CLI is asked only after the wait: it goes through the daemon, which commits everything
//! pending first, and would otherwise hide what the grace period does.
//!
//! The mount lives under the temporary directory, and both vim (`backupskip` contains `/tmp/*`)
//! and emacs (`normal-backup-enable-predicate`) never make backups there. The cases named
//! `*_backup_*` turn backups back on, as they are for a mount in the user's home, so that the
//! rename-to-scratch-name save path really runs; they check the backup holds the old content.
//! Missing programs are skipped with a "SKIP:" line (scripts/install-deps.sh installs them).

use crate::mounted::{wait_for, Mounted};
use crate::util::{repo, run, secret};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The content of both edited secrets before each case.
const OLD: &[u8] = b"line one\nold value\n";
/// [`OLD`] after `s/old/new/`.
const NEW: &[u8] = b"line one\nnew value\n";
/// A secret no case touches.
const OTHER: &[u8] = b"untouched\n";

/// The path a case edits through.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `repos/aws/key`: secret `aws/key`, tagged `prod/key` and `ops/api` (nlink 3).
    Repo,
    /// `tags/ops/api`: the tag entry of `aws/key` named `api`.
    Tag,
    /// `repos/aws/plain`: secret `aws/plain`, not tagged (nlink 1).
    Untagged,
}

impl Via {
    fn path(self) -> &'static str {
        match self {
            Via::Repo => "repos/aws/key",
            Via::Tag => "tags/ops/api",
            Via::Untagged => "repos/aws/plain",
        }
    }

    /// The edited secret's name in repository `aws`.
    fn secret(self) -> &'static str {
        match self {
            Via::Repo | Via::Tag => "key",
            Via::Untagged => "plain",
        }
    }

    /// Every path of the edited secret.
    fn all_paths(self) -> &'static [&'static str] {
        match self {
            Via::Repo | Via::Tag => &["repos/aws/key", "tags/prod/key", "tags/ops/api"],
            Via::Untagged => &["repos/aws/plain"],
        }
    }

    /// Every path of the secret this case does not edit (it must keep [`OLD`]).
    fn untouched_paths(self) -> &'static [&'static str] {
        match self {
            Via::Repo | Via::Tag => &["repos/aws/plain"],
            Via::Untagged => &["repos/aws/key", "tags/prod/key", "tags/ops/api"],
        }
    }
}

/// The contract's scratch names: starting with `.`, ending in `~`, `#…#`, `*.swp`/`*.swx`, `4913`.
fn is_scratch(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || (name.len() >= 2 && name.starts_with('#') && name.ends_with('#'))
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name == "4913"
}

/// Whether `program` is on the PATH; prints a SKIP line when it is not.
pub(crate) fn have(program: &str) -> bool {
    let found = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false);
    if !found {
        eprintln!("SKIP: {program} is missing; run scripts/install-deps.sh");
    }
    found
}

/// Runs `cmd` to completion (at most 30 s), capturing its output.
fn run_tool(cmd: &mut Command) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("{cmd:?} hung; killed it. stderr: {}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Runs `cmd` and asserts it succeeded.
fn run_ok(cmd: &mut Command) -> Output {
    let o = run_tool(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}): stdout {:?} stderr {:?}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// One case: a freshly mounted node and a fresh home folder for the programs.
struct Scene {
    m: Mounted,
    via: Via,
    /// An empty HOME (with `tmp/` for TMPDIR) outside the mount: no rc or history files.
    home: PathBuf,
    commits: usize,
    messages: Vec<String>,
}

impl Scene {
    fn new(via: Via) -> Option<Scene> {
        let m = Mounted::with(|n| {
            n.put(&repo("aws"), &secret("key"), OLD).unwrap();
            n.put(&repo("aws"), &secret("plain"), OLD).unwrap();
            n.put(&repo("aws"), &secret("other"), OTHER).unwrap();
            n.tag(&repo("prod"), &secret("key"), &repo("aws"), &secret("key")).unwrap();
            n.tag(&repo("ops"), &secret("api"), &repo("aws"), &secret("key")).unwrap();
        })?;
        let home = m.node.dir.path().join("home");
        fs::create_dir_all(home.join("tmp")).unwrap();
        let commits = m.commits("aws");
        let messages = m.messages("aws");
        assert_eq!(commits, messages.len());
        let s = Scene { m, via, home, commits, messages };
        s.check_paths(OLD, "before the edit");
        Some(s)
    }

    /// The path the case edits through.
    fn file(&self) -> PathBuf {
        self.m.p(self.via.path())
    }

    /// The folder of [`Scene::file`].
    fn folder(&self) -> PathBuf {
        self.file().parent().unwrap().to_owned()
    }

    /// A file outside the mount holding `bytes`.
    fn outside(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.home.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    /// `program` with the fresh HOME and TMPDIR, in a folder outside the mount.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("HOME", &self.home)
            .env("TMPDIR", self.home.join("tmp"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env_remove("VIMINIT")
            .env_remove("EXINIT")
            .env_remove("TMUX")
            .current_dir(&self.home);
        c
    }

    /// Every path of the edited secret shows `expected`, one inode, nlink = number of paths;
    /// the other secret is untouched.
    fn check_paths(&self, expected: &[u8], when: &str) {
        let paths = self.via.all_paths();
        let mut ino = None;
        for p in paths {
            let md = fs::metadata(self.m.p(p)).unwrap_or_else(|e| panic!("{when}: stat {p}: {e}"));
            let got = fs::read(self.m.p(p)).unwrap();
            assert_eq!(got, expected, "{when}: content of {p} is {}, expected {}", show(&got), show(expected));
            assert_eq!(md.len(), expected.len() as u64, "{when}: size of {p}");
            let first = *ino.get_or_insert((p, md.ino()));
            assert_eq!(md.ino(), first.1, "{when}: {p} is inode {}, but {} is inode {}", md.ino(), first.0, first.1);
            assert_eq!(md.nlink(), paths.len() as u64, "{when}: nlink of {p} (1 + number of tag links)");
        }
        for p in self.via.untouched_paths() {
            assert_eq!(fs::read(self.m.p(p)).unwrap(), OLD, "{when}: {p} was not edited");
        }
        assert_eq!(fs::read(self.m.p("repos/aws/other")).unwrap(), OTHER, "{when}");
    }

    /// The names of a folder of the mount that are not scratch names.
    fn plain_names(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.m.p(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !is_scratch(n))
            .collect();
        names.sort();
        names
    }

    fn cli_out(&self, args: &[&str]) -> String {
        let o = run(self.m.cli().args(args));
        assert!(o.status.success(), "polykey {args:?}: {}", crate::util::stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// Everything the contract promises after one logical save that left `expected`.
    fn check(&self, expected: &[u8]) {
        self.check_paths(expected, "right after the save");
        // No CLI call before this wait: the daemon commits everything pending when asked.
        std::thread::sleep(polykey::vfs::GRACE * 2);
        self.check_paths(expected, "after 2×GRACE");
        let s = self.via.secret();
        // Exactly one new commit, naming the secret; history otherwise unchanged.
        let messages = self.m.messages("aws");
        assert_eq!(
            messages.len(),
            self.messages.len() + 1,
            "one save must be exactly one commit; history is now {messages:?}, was {:?}",
            self.messages
        );
        assert_eq!(messages[0], format!("Update {s}"), "history: {messages:?}");
        assert_eq!(messages[1..], self.messages[..], "older history changed: {messages:?}");
        assert_eq!(self.m.commits("aws"), self.commits + 1);
        let per_secret = self.cli_out(&["log", "aws", s]).lines().count();
        assert_eq!(per_secret, 2, "`polykey log aws {s}`: Add and Update");
        // The node has it: secrets, tags, content.
        assert_eq!(self.cli_out(&["ls"]), "aws\n", "no repository appeared");
        assert_eq!(self.cli_out(&["ls", "aws"]), "key\nother\nplain\n", "no temporary or scratch name in the repository");
        assert_eq!(self.cli_out(&["tags"]), "ops\nprod\n");
        assert_eq!(self.cli_out(&["tags", "prod"]), "key -> aws/key\n", "tag links intact");
        assert_eq!(self.cli_out(&["tags", "ops"]), "api -> aws/key\n", "tag links intact");
        let got = run(self.m.cli().args(["get", &format!("aws/{s}")])).stdout;
        assert_eq!(got, expected, "polykey get aws/{s}: {}", show(&got));
        let untouched = if s == "key" { "aws/plain" } else { "aws/key" };
        assert_eq!(run(self.m.cli().args(["get", untouched])).stdout, OLD);
        assert_eq!(run(self.m.cli().args(["get", "aws/other"])).stdout, OTHER);
        // No temporary file is left behind in any folder (scratch files may stay, in memory).
        assert_eq!(self.plain_names("repos/aws"), ["key", "other", "plain"]);
        assert_eq!(self.plain_names("tags/prod"), ["key"]);
        assert_eq!(self.plain_names("tags/ops"), ["api"]);
        // And the mount still agrees with itself after the CLI's round trip.
        self.check_paths(expected, "after the CLI calls");
    }

    /// An editor backup (`FILE~`) exists and holds the old content: the save renamed.
    fn check_backup(&self) {
        let backup = PathBuf::from(format!("{}~", self.file().display()));
        let got = fs::read(&backup).unwrap_or_else(|e| panic!("{} should be the editor's backup: {e}", backup.display()));
        assert_eq!(got, OLD, "the backup {} holds the old content", backup.display());
    }
}

// ---------------------------------------------------------------------------------------------
// vim

/// `vim -Es -u NONE -i NONE [-c SET] -c '%s/old/new/' -c 'wq' FILE`, checking vim's status.
fn vim(via: Via, set: Option<&str>, backup_kept: bool) {
    if !have("vim") {
        return;
    }
    let Some(s) = Scene::new(via) else { return };
    let mut c = s.cmd("vim");
    c.args(["-Es", "-u", "NONE", "-i", "NONE"]);
    if let Some(set) = set {
        c.args(["-c", set]);
    }
    c.args(["-c", "%s/old/new/", "-c", "wq"]).arg(s.file());
    run_ok(&mut c);
    s.check(NEW);
    if backup_kept {
        s.check_backup();
    }
}

/// vim's defaults with `-u NONE` ('compatible': backupcopy=yes; the mount is under /tmp, which
/// 'backupskip' excludes): it writes the file in place.
#[test]
fn vim_repo_path() {
    vim(Via::Repo, None, false);
}

#[test]
fn vim_tag_path() {
    vim(Via::Tag, None, false);
}

#[test]
fn vim_untagged() {
    vim(Via::Untagged, None, false);
}

/// vim's everyday setting (writebackup, backupcopy=auto) on a mount outside /tmp: it probes
/// with `4913`, then renames FILE to `FILE~` and writes a new FILE when the file has one link,
/// and copies (writes in place) when it has several. The backup is deleted after the write.
const VIM_AUTO: &str = "set backupskip= writebackup nobackup backupcopy=auto";

#[test]
fn vim_backupcopy_auto_repo_path() {
    vim(Via::Repo, Some(VIM_AUTO), false);
}

#[test]
fn vim_backupcopy_auto_tag_path() {
    vim(Via::Tag, Some(VIM_AUTO), false);
}

#[test]
fn vim_backupcopy_auto_untagged() {
    vim(Via::Untagged, Some(VIM_AUTO), false);
}

/// The rename strategy forced (`backupcopy=no`), backup kept: rename FILE to `FILE~`, create
/// FILE, write, fsync, close — whatever the number of links.
const VIM_RENAME: &str = "set backupskip= backup writebackup backupcopy=no";

#[test]
fn vim_backup_rename_repo_path() {
    vim(Via::Repo, Some(VIM_RENAME), true);
}

#[test]
fn vim_backup_rename_tag_path() {
    vim(Via::Tag, Some(VIM_RENAME), true);
}

#[test]
fn vim_backup_rename_untagged() {
    vim(Via::Untagged, Some(VIM_RENAME), true);
}

// ---------------------------------------------------------------------------------------------
// nano

/// A private tmux server (its own socket), killed on drop.
pub(crate) struct Tmux {
    pub sock: PathBuf,
    pub home: PathBuf,
    /// A command that runs tmux as someone else (`setpriv …`), or empty.
    pub prefix: Vec<std::ffi::OsString>,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg("tmux");
                c
            }
            None => Command::new("tmux"),
        };
        c.arg("-S").arg(&self.sock).arg("-f").arg("/dev/null");
        // tmux runs the pane's command with $SHELL, or else the login shell from passwd, which
        // for the test user is nologin: name a real shell (CI runs with no $SHELL).
        c.env("HOME", &self.home).env("TMPDIR", self.home.join("tmp")).env("TERM", "xterm").env("SHELL", "/bin/sh").env_remove("TMUX");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_tool(self.cmd().args(args))
    }

    pub fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "edit"]).stdout).into_owned()
    }

    pub fn wait_pane(&self, what: &str, step: &str) {
        if !wait_for(10, || self.pane().contains(what)) {
            let gone = !self.run(&["has-session", "-t", "edit"]).status.success();
            let state = if gone { " (the tmux session has ended)" } else { "" };
            panic!("nano: waiting for {what:?} ({step}){state}; the screen shows:\n{}", self.pane());
        }
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "edit"];
        args.extend_from_slice(keys);
        let o = self.run(&args);
        assert!(o.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

pub(crate) fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// nano in a detached tmux session: type "new " at the start, ^O Enter to write, ^X to exit.
fn nano(via: Via) {
    if !have("nano") || !have("tmux") {
        return;
    }
    let Some(s) = Scene::new(via) else { return };
    let t = Tmux { sock: s.home.join("tmux.sock"), home: s.home.clone(), prefix: Vec::new() };
    let line = format!("nano --ignorercfiles {}", shell_quote(&s.file()));
    let o = t.run(&["new-session", "-d", "-s", "edit", "-x", "120", "-y", "40", &line]);
    assert!(o.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&o.stderr));
    t.wait_pane("old value", "nano shows the file");
    t.keys(&["-l", "new "]);
    t.wait_pane("new line one", "typed");
    t.keys(&["C-o"]);
    t.wait_pane("File Name to Write", "^O");
    t.keys(&["Enter"]);
    t.wait_pane("Wrote", "written");
    t.keys(&["C-x"]);
    assert!(wait_for(10, || !t.run(&["has-session", "-t", "edit"]).status.success()), "nano did not exit:\n{}", t.pane());
    s.check(b"new line one\nold value\n");
}

#[test]
fn nano_repo_path() {
    nano(Via::Repo);
}

#[test]
fn nano_tag_path() {
    nano(Via::Tag);
}

// ---------------------------------------------------------------------------------------------
// emacs

/// `emacs --batch -Q FILE --eval '(progn … (insert "x") (save-buffer))'`. With `backup`, the
/// buffer's `backup-inhibited` (set because the file is under /tmp) is cleared first, so the
/// first save renames FILE to `FILE~` (a scratch name) and writes a new FILE, as it does for a
/// mount in the user's home.
fn emacs(via: Via, backup: bool) {
    if !have("emacs") {
        return;
    }
    let Some(s) = Scene::new(via) else { return };
    let pre = if backup { "(setq backup-inhibited nil) " } else { "" };
    let eval = format!("(progn {pre}(goto-char (point-max)) (insert \"x\") (save-buffer))");
    run_ok(s.cmd("emacs").args(["--batch", "-Q"]).arg(s.file()).args(["--eval", &eval]));
    s.check(b"line one\nold value\nx");
    if backup {
        s.check_backup();
    }
}

#[test]
fn emacs_repo_path() {
    emacs(Via::Repo, false);
}

#[test]
fn emacs_tag_path() {
    emacs(Via::Tag, false);
}

#[test]
fn emacs_backup_repo_path() {
    emacs(Via::Repo, true);
}

#[test]
fn emacs_backup_tag_path() {
    emacs(Via::Tag, true);
}

#[test]
fn emacs_backup_untagged() {
    emacs(Via::Untagged, true);
}

// ---------------------------------------------------------------------------------------------
// sed -i: writes `sedXXXXXX` in the same folder, then renames it over FILE.

fn sed(via: Via) {
    if !have("sed") {
        return;
    }
    let Some(s) = Scene::new(via) else { return };
    run_ok(s.cmd("sed").args(["-i", "s/old/new/"]).arg(s.file()));
    s.check(NEW);
}

#[test]
fn sed_repo_path() {
    sed(Via::Repo);
}

#[test]
fn sed_tag_path() {
    sed(Via::Tag);
}

#[test]
fn sed_untagged() {
    sed(Via::Untagged);
}

// ---------------------------------------------------------------------------------------------
// Python's atomic replace: a temporary file in the same folder, flushed and fsync'd, then
// os.replace over FILE.

const PY_REPLACE: &str = r#"
import os, sys, tempfile
target, prefix = sys.argv[1], sys.argv[2]
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=prefix)
with os.fdopen(fd, "wb") as f:
    f.write(b"written by python\n")
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, target)
print(tmp)
"#;

fn python(via: Via, prefix: &str) {
    if !have("python3") {
        return;
    }
    let Some(s) = Scene::new(via) else { return };
    // Python keeps the caller's HOME: pyenv's shims find their interpreter through it.
    let o = run_ok(Command::new("python3").args(["-c", PY_REPLACE]).arg(s.file()).arg(prefix));
    let tmp = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(!Path::new(&tmp).exists(), "{tmp} was renamed away");
    s.check(b"written by python\n");
}

/// A temporary name that is not a scratch name (`tmpXXXXXXXX`).
#[test]
fn python_replace_tmp_name_repo_path() {
    python(Via::Repo, "tmp");
}

#[test]
fn python_replace_tmp_name_tag_path() {
    python(Via::Tag, "tmp");
}

/// A dot name (`.tmpXXXXXXXX`), a scratch name.
#[test]
fn python_replace_dot_name_repo_path() {
    python(Via::Repo, ".tmp");
}

#[test]
fn python_replace_dot_name_tag_path() {
    python(Via::Tag, ".tmp");
}

// ---------------------------------------------------------------------------------------------
// cp and mv

fn cp(via: Via) {
    let Some(s) = Scene::new(via) else { return };
    let src = s.outside("src", b"copied over\n");
    run_ok(Command::new("cp").arg(&src).arg(s.file()));
    s.check(b"copied over\n");
}

#[test]
fn cp_repo_path() {
    cp(Via::Repo);
}

#[test]
fn cp_tag_path() {
    cp(Via::Tag);
}

/// `mv NEW FILE` where NEW is a new file written in the same folder just before.
fn mv_same_folder(via: Via) {
    let Some(s) = Scene::new(via) else { return };
    let name = s.file().file_name().unwrap().to_string_lossy().into_owned();
    let src = s.folder().join(format!("{name}.new"));
    fs::write(&src, b"moved over\n").unwrap();
    run_ok(Command::new("mv").arg(&src).arg(s.file()));
    assert!(!src.exists());
    s.check(b"moved over\n");
}

#[test]
fn mv_same_folder_repo_path() {
    mv_same_folder(Via::Repo);
}

#[test]
fn mv_same_folder_tag_path() {
    mv_same_folder(Via::Tag);
}

/// `mv SRC FILE` with SRC outside the mount: rename fails with EXDEV, so mv unlinks FILE,
/// creates it again (O_CREAT|O_EXCL), writes, closes and unlinks SRC.
fn mv_from_outside(via: Via) {
    let Some(s) = Scene::new(via) else { return };
    let src = s.outside("src", b"moved in\n");
    run_ok(Command::new("mv").arg(&src).arg(s.file()));
    assert!(!src.exists());
    s.check(b"moved in\n");
}

#[test]
fn mv_from_outside_repo_path() {
    mv_from_outside(Via::Repo);
}

#[test]
fn mv_from_outside_tag_path() {
    mv_from_outside(Via::Tag);
}

// ---------------------------------------------------------------------------------------------
// Shell redirection and truncate

fn echo(via: Via) {
    let Some(s) = Scene::new(via) else { return };
    run_ok(Command::new("sh").args(["-c", "echo x > \"$1\"", "sh"]).arg(s.file()));
    s.check(b"x\n");
}

#[test]
fn echo_redirect_repo_path() {
    echo(Via::Repo);
}

#[test]
fn echo_redirect_tag_path() {
    echo(Via::Tag);
}

fn truncate(via: Via, size: usize) {
    let Some(s) = Scene::new(via) else { return };
    run_ok(Command::new("truncate").args(["-s", &size.to_string()]).arg(s.file()));
    s.check(&OLD[..size]);
}

#[test]
fn truncate_to_zero_repo_path() {
    truncate(Via::Repo, 0);
}

#[test]
fn truncate_to_zero_tag_path() {
    truncate(Via::Tag, 0);
}

#[test]
fn truncate_to_three_repo_path() {
    truncate(Via::Repo, 3);
}

#[test]
fn truncate_to_three_tag_path() {
    truncate(Via::Tag, 3);
}
