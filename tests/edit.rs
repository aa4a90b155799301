//! `polykey edit` and the editor snippets (CONTRACT.md, "Editing safely"; issue 10 §4).
//!
//! **No copy on disk.** vim, nano and emacs each edit a secret through `polykey edit` with a
//! search, a substitution, a deleted line and a yanked-and-pasted line, every string a random
//! marker, while configured to keep every copy they can: vim with a vimrc turning on viminfo
//! (registers, search and command history), undo files, backups and swap files; nano with
//! Debian's stock `/etc/nanorc` (`historylog`), which nano run as root reads from the account's
//! home (getpwuid), not `$HOME`; emacs with backups, auto-save, savehist (search and kill rings
//! too) and recentf. Then the account's home, `$HOME`, `/tmp` and `/var/tmp` are searched for
//! every marker (files changed since the test began; a planted canary must be found). A control
//! run of vim with the same vimrc and keystrokes on an ordinary file must leave its markers in
//! its viminfo, so the search is shown to find what an unprotected editor leaves. nano and
//! emacs are driven through tmux (a real terminal); vim through `-s` (typed keys from a file).
//!
//! **One commit.** Unmounted (the node opened in-process) and mounted (through the daemon), a
//! change is exactly one commit, quitting without a change none, a failing editor none (and
//! says so); a new secret is created on save. A Ctrl-C or Ctrl-\\ while the editor runs does
//! not end `polykey edit` and lose the edit.
//!
//! **The snippets** under a real mount: `contrib/vim/polykey.vim` with the same vimrc and
//! keystrokes, and `contrib/emacs/polykey.el` with emacs in batch mode keeping backups (even
//! under /tmp) and savehist, leave nothing on disk, while without the snippet they do.

use crate::mounted::{wait_for, Mounted};
use crate::secrecy::{editor, have, marker, Search};
use crate::util::{repo, run, secret, TempNode};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 - 2
}

/// The markers of one editing session: what the secret holds before, and what the keystrokes
/// search for, substitute, delete and duplicate.
struct Session {
    /// Searched for, then substituted away.
    find: String,
    /// The substitution's replacement.
    replace: String,
    /// On a line that is deleted.
    delete: String,
    /// On a line that is yanked and pasted.
    yank: String,
}

impl Session {
    fn new(label: &str) -> Session {
        Session {
            find: marker(&format!("{label}find")),
            replace: marker(&format!("{label}repl")),
            delete: marker(&format!("{label}del")),
            yank: marker(&format!("{label}yank")),
        }
    }

    fn before(&self) -> String {
        format!("top\nold {}\ngone {}\ncopy {}\n", self.find, self.delete, self.yank)
    }

    fn after(&self) -> String {
        format!("top\nold {}\ncopy {}\ncopy {}\n", self.replace, self.yank, self.yank)
    }

    fn markers(&self) -> Vec<(&str, &str)> {
        vec![("find", &self.find), ("replace", &self.replace), ("delete", &self.delete), ("yank", &self.yank)]
    }

    /// vim keystrokes (for `-s`): search, substitute, delete a line, yank and paste a line,
    /// write and quit.
    fn vim_keys(&self) -> String {
        format!("/{f}\n:%s/{f}/{r}/\n:1\n/{d}\ndd:1\n/{y}\nyyp:wq\n", f = self.find, r = self.replace, d = self.delete, y = self.yank)
    }
}

/// The account's home (getpwuid), which nano uses when run as root, whatever `$HOME` says.
fn account_home() -> PathBuf {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let uid = polykey::runtime::euid().to_string();
    let line = passwd.lines().find(|l| l.split(':').nth(2) == Some(uid.as_str())).expect("this account in /etc/passwd");
    PathBuf::from(line.split(':').nth(5).unwrap())
}

/// Searches the account's home, `home` (the editors' `$HOME`), /tmp and /var/tmp for
/// `markers`, skipping `skip` (a mountpoint); returns what was found. A canary planted in
/// `home` must be found, or the search proves nothing.
fn search(home: &Path, skip: &Path, markers: &[(&str, &str)], since: i64) -> Vec<String> {
    let canary = marker("canary");
    fs::write(home.join("canary.txt"), &canary).unwrap();
    let mut all = markers.to_vec();
    all.push(("canary", &canary));
    let mut s = Search::new(&all, skip, since);
    for root in [account_home().as_path(), home, Path::new("/var/tmp"), Path::new("/tmp")] {
        s.root(root, usize::MAX);
    }
    fs::remove_file(home.join("canary.txt")).unwrap();
    let (canaries, hits): (Vec<_>, Vec<_>) = s.hits.into_iter().partition(|h| h.starts_with("canary in "));
    assert_eq!(canaries.len(), 1, "the search must find the planted canary once: {canaries:?} ({} files read)", s.files);
    hits
}

/// A vimrc that keeps every copy vim can make: viminfo with registers and history, undo
/// files, backups and swap files, all in `home`.
fn leaky_vimrc(home: &Path) -> PathBuf {
    for d in [".vimundo", ".vimbackup", ".vimswap"] {
        fs::create_dir_all(home.join(d)).unwrap();
    }
    let rc = home.join(".vimrc");
    fs::write(
        &rc,
        "set nocompatible\nset viminfo='100,<500,s100,h,:100,/100\nset undofile undodir=~/.vimundo//\n\
         set backup writebackup backupskip= backupdir=~/.vimbackup//\nset swapfile directory=~/.vimswap// updatecount=1\n",
    )
    .unwrap();
    rc
}

/// An editor's HOME with a TMPDIR, in `dir`.
fn new_home(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    fs::create_dir_all(home.join("tmp")).unwrap();
    home
}

/// `polykey edit REPO/SECRET` of `node` (through `cli`) with `EDITOR` set.
fn edit(mut cli: Command, home: &Path, editor_cmd: &str, path: &str) -> std::process::Output {
    cli.env("HOME", home).env("TMPDIR", home.join("tmp")).env("EDITOR", editor_cmd).env_remove("VISUAL").current_dir(home);
    cli.args(["edit", path]);
    run(&mut cli)
}

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn vim_through_polykey_edit_leaves_no_copy_on_disk_while_plain_vim_does() {
    if !have("vim") {
        return;
    }
    let since = now_secs();
    let node = TempNode::new();
    let s = Session::new("vim");
    {
        let mut n = node.create();
        n.put(&repo("r"), &secret("s"), s.before().as_bytes()).unwrap();
        n.save().unwrap();
    }
    // Control: the same vimrc and keys on an ordinary file leave the markers in ~/.viminfo.
    let ctl_home = new_home(node.dir.path(), "ctl");
    leaky_vimrc(&ctl_home);
    let ctl = Session::new("ctl");
    fs::write(ctl_home.join("plain.txt"), ctl.before()).unwrap();
    fs::write(ctl_home.join("keys"), ctl.vim_keys()).unwrap();
    let o = run(editor("vim", &ctl_home).arg("-s").arg(ctl_home.join("keys")).arg("plain.txt"));
    assert!(o.status.success(), "control vim failed: {}", text(&o));
    assert_eq!(fs::read_to_string(ctl_home.join("plain.txt")).unwrap(), ctl.after(), "the keystrokes edit as intended");
    let viminfo = fs::read_to_string(ctl_home.join(".viminfo")).unwrap_or_default();
    for (label, v) in ctl.markers() {
        assert!(viminfo.contains(v) || label == "yank", "control: plain vim's viminfo should hold the {label} marker");
    }
    fs::remove_dir_all(&ctl_home).unwrap();

    let home = new_home(node.dir.path(), "home");
    leaky_vimrc(&home);
    fs::write(home.join("keys"), s.vim_keys()).unwrap();
    let o = edit(node.cli(), &home, &format!("vim -s {}", home.join("keys").display()), "r/s");
    assert!(o.status.success(), "polykey edit failed: {}", text(&o));
    assert!(text(&o).contains("saved r/s"), "{}", text(&o));
    fs::remove_file(home.join("keys")).unwrap(); // The typed keys hold the markers.
    assert_eq!(run(node.cli().args(["get", "r/s"])).stdout, s.after().as_bytes(), "the edit reached the node");
    let hits = search(&home, node.dir.path(), &s.markers(), since);
    assert_eq!(hits, Vec::<String>::new(), "vim through polykey edit left the secret on disk");
}

/// A tmux server of the test's own (its socket in `dir`), running one command in a terminal.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `argv` in a 100×30 terminal with `env`; returns when tmux has started it.
    fn start(dir: &Path, env: &[(&str, &OsStrBuf)], argv: &[&std::ffi::OsStr]) -> Tmux {
        let socket = dir.join("tmux.sock");
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&socket).args(["-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "30", "env"]);
        for (k, v) in env {
            let mut kv = std::ffi::OsString::from(format!("{k}="));
            kv.push(v);
            c.arg(kv);
        }
        c.args(argv).env_remove("TMUX");
        let o = run(&mut c);
        assert!(o.status.success(), "tmux: {}", String::from_utf8_lossy(&o.stderr));
        Tmux { socket }
    }

    fn screen(&self) -> String {
        let o = run(Command::new("tmux").arg("-S").arg(&self.socket).args(["capture-pane", "-p"]));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits until the screen shows `what` (tmux's terminal has drawn the editor's answer).
    fn wait(&self, what: &str) {
        assert!(wait_for(20, || self.screen().contains(what)), "the screen never showed {what:?}:\n{}", self.screen());
    }

    /// Types `keys` (tmux key names, or literal text with `-l`).
    fn keys(&self, keys: &[&str]) {
        let o = run(Command::new("tmux").arg("-S").arg(&self.socket).arg("send-keys").args(keys));
        assert!(o.status.success(), "send-keys: {}", String::from_utf8_lossy(&o.stderr));
    }

    fn type_text(&self, text: &str) {
        self.keys(&["-l", text]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = run(Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server"));
    }
}

type OsStrBuf = std::ffi::OsString;

/// Runs `polykey edit r/s` with `editor_cmd` in a tmux terminal; `drive` types into it. Returns
/// the command's standard error once it has exited 0.
fn edit_in_terminal(node: &TempNode, home: &Path, editor_cmd: &str, env: &[(&str, &str)], drive: impl FnOnce(&Tmux)) -> String {
    let status = home.join("status");
    let errfile = home.join("stderr");
    let script = "\"$@\" 2>\"$ERRFILE\"; echo $? > \"$STATUSFILE\"";
    let pw = node.password_file();
    let mut vars: Vec<(&str, OsStrBuf)> = vec![
        ("HOME", home.into()),
        ("TMPDIR", home.join("tmp").into()),
        ("EDITOR", editor_cmd.into()),
        ("XDG_STATE_HOME", node.dir.path().join("state").into()),
        ("ERRFILE", errfile.clone().into()),
        ("STATUSFILE", status.clone().into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (*k, OsStrBuf::from(v))));
    let refs: Vec<(&str, &OsStrBuf)> = vars.iter().map(|(k, v)| (*k, v)).collect();
    let cli = Path::new(env!("CARGO_BIN_EXE_polykey"));
    let argv: Vec<&std::ffi::OsStr> = vec![
        "sh".as_ref(),
        "-c".as_ref(),
        script.as_ref(),
        "sh".as_ref(),
        cli.as_os_str(),
        "--node".as_ref(),
        node.path.as_os_str(),
        "--password-file".as_ref(),
        pw.as_os_str(),
        "edit".as_ref(),
        "r/s".as_ref(),
    ];
    let t = Tmux::start(home, &refs, &argv);
    drive(&t);
    assert!(wait_for(20, || fs::read_to_string(&status).is_ok_and(|s| s.ends_with('\n'))), "polykey edit never ended:\n{}", t.screen());
    let err = fs::read_to_string(&errfile).unwrap_or_default();
    assert_eq!(fs::read_to_string(&status).unwrap().trim(), "0", "polykey edit failed: {err}");
    err
}

#[test]
fn nano_through_polykey_edit_keeps_no_search_history_in_the_account_home() {
    if !have("nano") || !have("tmux") {
        return;
    }
    let since = now_secs();
    let node = TempNode::new();
    let s = Session::new("nano");
    {
        let mut n = node.create();
        n.put(&repo("r"), &secret("s"), s.before().as_bytes()).unwrap();
        n.save().unwrap();
    }
    let home = new_home(node.dir.path(), "home");
    // No XDG_DATA_HOME: nano keeps its history in the account's home (getpwuid, as root).
    let err = edit_in_terminal(&node, &home, "nano", &[], |t| {
        t.wait("top");
        // Search (^W), replace (M-R: search, replacement, All).
        t.keys(&["C-w"]);
        t.type_text(&s.find);
        t.keys(&["Enter"]);
        t.keys(&["M-r"]);
        t.wait("Replace");
        t.type_text(&s.find);
        t.keys(&["Enter"]);
        t.wait("Replace with");
        t.type_text(&s.replace);
        t.keys(&["Enter"]);
        t.wait("Replace this instance");
        t.keys(&["a"]);
        t.wait(&s.replace);
        // Cut the line to delete (^K); cut the line to copy and paste it twice (^K ^U ^U).
        t.keys(&["C-w"]);
        t.type_text(&s.delete);
        t.keys(&["Enter", "C-k"]);
        t.keys(&["C-w"]);
        t.type_text(&s.yank);
        t.keys(&["Enter", "C-k", "C-u", "C-u", "C-s"]);
        t.wait("Wrote");
        t.keys(&["C-x"]);
    });
    assert!(err.contains("saved r/s"), "{err}");
    assert_eq!(run(node.cli().args(["get", "r/s"])).stdout, s.after().as_bytes(), "the edit reached the node");
    let hits = search(&home, node.dir.path(), &s.markers(), since);
    assert_eq!(hits, Vec::<String>::new(), "nano through polykey edit left the secret on disk");
}

#[test]
fn emacs_through_polykey_edit_keeps_no_backup_autosave_or_history() {
    if !have("emacs") || !have("tmux") {
        return;
    }
    let since = now_secs();
    let node = TempNode::new();
    let s = Session::new("emacs");
    {
        let mut n = node.create();
        n.put(&repo("r"), &secret("s"), s.before().as_bytes()).unwrap();
        n.save().unwrap();
    }
    let home = new_home(node.dir.path(), "home");
    fs::create_dir_all(home.join(".emacs.d")).unwrap();
    fs::write(
        home.join(".emacs.d/init.el"),
        "(setq make-backup-files t backup-directory-alist '((\".\" . \"~/bak\")) auto-save-default t auto-save-interval 5)\n\
         (setq savehist-additional-variables '(search-ring regexp-search-ring kill-ring query-replace-history))\n\
         (savehist-mode 1) (recentf-mode 1) (setq inhibit-startup-screen t)\n",
    )
    .unwrap();
    let err = edit_in_terminal(&node, &home, "emacs -nw", &[], |t| {
        t.wait("top");
        t.keys(&["C-s"]);
        t.type_text(&s.find);
        t.keys(&["Enter", "M-<", "M-%"]);
        t.wait("Query replace");
        t.type_text(&s.find);
        t.keys(&["Enter"]);
        t.type_text(&s.replace);
        t.keys(&["Enter", "!"]);
        t.wait(&s.replace);
        t.keys(&["M-<", "C-s"]);
        t.type_text(&s.delete);
        t.keys(&["Enter", "C-a", "C-k", "C-k", "M-<", "C-s"]);
        t.type_text(&s.yank);
        t.keys(&["Enter", "C-a", "C-k", "C-k", "C-y", "C-y", "C-x", "C-s"]);
        t.wait("Wrote");
        t.keys(&["C-x", "C-c"]);
    });
    assert!(err.contains("saved r/s"), "{err}");
    assert_eq!(run(node.cli().args(["get", "r/s"])).stdout, s.after().as_bytes(), "the edit reached the node");
    let hits = search(&home, node.dir.path(), &s.markers(), since);
    assert_eq!(hits, Vec::<String>::new(), "emacs through polykey edit left the secret on disk");
}

/// `vim -s KEYS` as the editor: the keys substitute `from` with `to` (or quit unchanged).
fn vim_editor(home: &Path, keys: &str) -> String {
    let f = home.join(format!("keys{}", marker("")));
    fs::write(&f, keys).unwrap();
    format!("vim -u NONE -s {}", f.display())
}

/// The shared checks of one commit per change, run unmounted or mounted (`cli` makes the
/// commands; `commits` counts the history of `r`).
fn one_commit_per_change(cli: &dyn Fn() -> Command, commits: &dyn Fn() -> usize, home: &Path) {
    let get = |p: &str| run(cli().args(["get", p])).stdout;
    let before = commits();
    // A change: one commit.
    let o = edit(cli(), home, &vim_editor(home, ":s/old/new/\n:wq\n"), "r/s");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(get("r/s"), b"new value\n");
    assert_eq!(commits(), before + 1, "a saved change is exactly one commit");
    // A secret without a final newline (a password from `put`) keeps its bytes: vim would add one.
    let mut put = cli();
    put.args(["put", "r/pw"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
    let mut child = put.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"s3cret").unwrap();
    assert!(child.wait().unwrap().success());
    let o = edit(cli(), home, &vim_editor(home, ":s/3/e/\n:wq\n"), "r/pw");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(get("r/pw"), b"secret", "editing added a final newline");
    let before = before + 2; // The put and the edit of r/pw.
                             // Quitting without a change: none.
    let o = edit(cli(), home, &vim_editor(home, ":q\n"), "r/s");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("unchanged"), "{}", text(&o));
    // Writing the same bytes: none either.
    let o = edit(cli(), home, &vim_editor(home, ":wq\n"), "r/s");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(commits(), before + 1, "quitting without a change makes no commit");
    // A failing editor (vim's :cq after a change): none, and it says so.
    let o = edit(cli(), home, &vim_editor(home, ":s/new/lost/\n:w\n:cq\n"), "r/s");
    assert!(!o.status.success(), "a failing editor must fail the command");
    assert!(text(&o).contains("nothing was saved"), "{}", text(&o));
    assert_eq!(get("r/s"), b"new value\n");
    assert_eq!(commits(), before + 1, "a failing editor makes no commit");
    // A secret that does not exist yet is created on save (as pass does).
    let o = edit(cli(), home, &vim_editor(home, "ifresh\x1b:wq\n"), "r/brand-new");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("created r/brand-new"), "{}", text(&o));
    assert_eq!(get("r/brand-new"), b"fresh\n");
    assert_eq!(commits(), before + 2);
    // An unknown editor is warned about.
    let o = edit(cli(), home, "true", "r/s");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cannot turn off the history"), "{}", text(&o));
}

#[test]
fn edit_of_an_unmounted_node_is_one_commit_per_change() {
    if !have("vim") {
        return;
    }
    let node = TempNode::new();
    {
        let mut n = node.create();
        n.put(&repo("r"), &secret("s"), b"old value\n").unwrap();
        n.save().unwrap();
    }
    let home = new_home(node.dir.path(), "home");
    let commits = || String::from_utf8_lossy(&run(node.cli().args(["log", "r"])).stdout).lines().count();
    one_commit_per_change(&|| node.cli(), &commits, &home);
}

#[test]
fn edit_of_a_mounted_node_goes_through_the_daemon_one_commit_per_change() {
    if !have("vim") {
        return;
    }
    let Some(m) = Mounted::with(|n| {
        n.put(&repo("r"), &secret("s"), b"old value\n").unwrap();
    }) else {
        return;
    };
    let home = new_home(m.node.dir.path(), "home");
    // No passphrase source at all: a mounted node needs none, so the daemon did the work.
    let cli = || {
        let mut c = crate::util::polykey_cmd();
        c.arg("--node").arg(&m.node.path).env("XDG_RUNTIME_DIR", &m.runtime).env("XDG_STATE_HOME", m.node.dir.path().join("state"));
        c
    };
    one_commit_per_change(&cli, &|| m.commits("r"), &home);
    assert_eq!(fs::read(m.p("repos/r/s")).unwrap(), b"new value\n", "the mount shows the edit");
}

/// Runs the leaky vimrc's vim with `keys` on `file` in the mount, with `extra` sourced.
fn vim_on_mount(home: &Path, file: &Path, keys: &str, extra: Option<&Path>) {
    let rc = leaky_vimrc(home);
    if let Some(snippet) = extra {
        let mut text = fs::read_to_string(&rc).unwrap();
        text.push_str(&format!("source {}\n", snippet.display()));
        fs::write(&rc, text).unwrap();
    }
    fs::write(home.join("keys"), keys).unwrap();
    let o = run(editor("vim", home).arg("-s").arg(home.join("keys")).arg(file));
    assert!(o.status.success(), "vim failed: {}", text(&o));
    fs::remove_file(home.join("keys")).unwrap(); // The typed keys hold the markers.
}

#[test]
fn vim_snippet_keeps_files_under_a_polykey_mount_off_the_disk() {
    if !have("vim") {
        return;
    }
    let since = now_secs();
    let (ctl, s) = (Session::new("snipctl"), Session::new("snip"));
    let (b1, b2) = (ctl.before(), s.before());
    let Some(m) = Mounted::with(move |n| {
        n.put(&repo("r"), &secret("ctl"), b1.as_bytes()).unwrap();
        n.put(&repo("r"), &secret("s"), b2.as_bytes()).unwrap();
    }) else {
        return;
    };
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/vim/polykey.vim");
    // Control: without the snippet, vim copies the secret into its home.
    let ctl_home = new_home(m.node.dir.path(), "ctl");
    vim_on_mount(&ctl_home, &m.p("repos/r/ctl"), &ctl.vim_keys(), None);
    assert_eq!(fs::read_to_string(m.p("repos/r/ctl")).unwrap(), ctl.after());
    let leaked = search(&ctl_home, &m.mnt, &ctl.markers(), since);
    assert!(!leaked.is_empty(), "control: vim without the snippet should leave copies in its home");
    fs::remove_dir_all(&ctl_home).unwrap();
    // With it: nothing.
    let home = new_home(m.node.dir.path(), "home");
    vim_on_mount(&home, &m.p("repos/r/s"), &s.vim_keys(), Some(&snippet));
    assert_eq!(fs::read_to_string(m.p("repos/r/s")).unwrap(), s.after());
    let hits = search(&home, &m.mnt, &s.markers(), since);
    assert_eq!(hits, Vec::<String>::new(), "vim with contrib/vim/polykey.vim left the secret on disk");
}

#[test]
fn ctrl_c_or_ctrl_backslash_while_the_editor_runs_does_not_lose_the_edit() {
    let node = TempNode::new();
    {
        let mut n = node.create();
        n.put(&repo("r"), &secret("s"), b"old value\n").unwrap();
        n.save().unwrap();
    }
    let home = new_home(node.dir.path(), "home");
    let go = home.join("go");
    // An "editor" that saves once told to: the interrupts arrive while it runs.
    let script = home.join("slow-editor");
    fs::write(&script, format!("#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.05; done\nprintf 'new value\\n' > \"$1\"\n", go.display()))
        .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut cli = node.cli();
    cli.env("HOME", &home).env("EDITOR", &script).env_remove("VISUAL").args(["edit", "r/s"]);
    let child = cli.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    assert!(wait_for(10, || !crate::secrecy::children(pid).is_empty()), "polykey edit never started its editor");
    // Right after starting the editor, polykey ignores both (SigIgn bits 2 and 3); without
    // that, this waits in vain and the signals below end it.
    let ignored = || {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).map_or(0, |v| u64::from_str_radix(v.trim(), 16).unwrap_or(0));
        mask & 0b110 == 0b110
    };
    wait_for(5, ignored);
    for sig in ["-INT", "-QUIT"] {
        assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    }
    fs::write(&go, b"").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "polykey edit must outlive a Ctrl-C meant for its editor: {:?} {}", o.status, text(&o));
    assert!(text(&o).contains("saved r/s"), "{}", text(&o));
    assert_eq!(run(node.cli().args(["get", "r/s"])).stdout, b"new value\n");
}

/// emacs in batch mode, set up to keep backups (even under /tmp) and a savehist file holding
/// the query-replace history in `home`, editing `file`; with `snippet` loaded first, if given.
fn emacs_on_mount(home: &Path, file: &Path, searched: &str, snippet: Option<&Path>) {
    let h = home.display();
    let load = snippet.map_or(String::new(), |p| format!("(load \"{}\")", p.display()));
    let eval = format!(
        "(progn (setq make-backup-files t backup-enable-predicate (lambda (_) t) backup-directory-alist '((\".\" . \"{h}/bak\")) \
         savehist-file \"{h}/history\" savehist-additional-variables '(query-replace-history)) (savehist-mode 1) {load} \
         (find-file \"{}\") (push \"{searched}\" query-replace-history) (goto-char (point-max)) (insert \"new\\n\") (save-buffer) \
         (kill-emacs 0))",
        file.display()
    );
    fs::create_dir_all(home.join("bak")).unwrap();
    let o = run(editor("emacs", home).args(["-Q", "--batch", "--eval", &eval]));
    assert!(o.status.success(), "emacs failed: {}", text(&o));
}

#[test]
fn emacs_snippet_keeps_files_under_a_polykey_mount_out_of_backups_and_history() {
    if !have("emacs") {
        return;
    }
    let since = now_secs();
    let (old_ctl, old) = (marker("emctlold"), marker("emold"));
    let (o1, o2) = (old_ctl.clone(), old.clone());
    let Some(m) = Mounted::with(move |n| {
        n.put(&repo("r"), &secret("ctl"), format!("{o1}\n").as_bytes()).unwrap();
        n.put(&repo("r"), &secret("s"), format!("{o2}\n").as_bytes()).unwrap();
    }) else {
        return;
    };
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/emacs/polykey.el");
    // Control: without the snippet, the old content goes to a backup and the string to savehist.
    let (ctl_home, ctl_searched) = (new_home(m.node.dir.path(), "ctl"), marker("emctlsearch"));
    emacs_on_mount(&ctl_home, &m.p("repos/r/ctl"), &ctl_searched, None);
    assert_eq!(fs::read_to_string(m.p("repos/r/ctl")).unwrap(), format!("{old_ctl}\nnew\n"));
    let leaked = search(&ctl_home, &m.mnt, &[("old", &old_ctl), ("searched", &ctl_searched)], since);
    assert_eq!(leaked.len(), 2, "control: emacs without the snippet keeps a backup and a history: {leaked:?}");
    fs::remove_dir_all(&ctl_home).unwrap();
    // With it: nothing.
    let (home, searched) = (new_home(m.node.dir.path(), "home"), marker("emsearch"));
    emacs_on_mount(&home, &m.p("repos/r/s"), &searched, Some(&snippet));
    assert_eq!(fs::read_to_string(m.p("repos/r/s")).unwrap(), format!("{old}\nnew\n"));
    let hits = search(&home, &m.mnt, &[("old", &old), ("searched", &searched)], since);
    assert_eq!(hits, Vec::<String>::new(), "emacs with contrib/emacs/polykey.el left the secret on disk");
}
