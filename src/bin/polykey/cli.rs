//! Command-line arguments (clap derive). Global options work before or after the subcommand.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Polykey: secrets in an encrypted single-file node of git repositories.
#[derive(Parser)]
#[command(name = "polykey", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Args, Clone)]
#[command(next_help_heading = "Global options (before or after the command)")]
pub struct Global {
    /// The node file [default: $XDG_DATA_HOME/polykey/default.node, else
    /// ~/.local/share/polykey/default.node]
    #[arg(long, global = true, env = "POLYKEY_NODE", hide_env_values = true, value_name = "PATH")]
    pub node: Option<PathBuf>,
    /// Read the passphrase from FILE (one trailing newline is stripped)
    #[arg(long, global = true, env = "POLYKEY_PASSWORD_FILE", hide_env_values = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run CMD with `sh -c` and use its output as the passphrase
    #[arg(long, global = true, env = "POLYKEY_PASSWORD_COMMAND", hide_env_values = true, value_name = "CMD")]
    pub password_command: Option<String>,
    /// Read a new passphrase (init, passwd) from FILE
    #[arg(long, global = true, env = "POLYKEY_NEW_PASSWORD_FILE", hide_env_values = true, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Open the node even if it is older than when it was last used here (a restored backup)
    #[arg(long, global = true)]
    pub accept_rollback: bool,
    /// Print lists (and `status`) as JSON arrays of objects
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but the requested output
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Argon2id memory cost in KiB for init/passwd (default 65536)
    #[arg(long, global = true, value_name = "KIB", hide = true)]
    pub kdf_memory_kib: Option<u32>,
    /// Argon2id passes for init/passwd (default 3)
    #[arg(long, global = true, value_name = "N", hide = true)]
    pub kdf_time: Option<u32>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a new, empty node (refuses to overwrite any file)
    Init,
    /// Change the passphrase (re-wraps the key; secrets are not re-encrypted)
    Passwd,
    /// List repositories, or the secrets of REPO
    Ls {
        /// List the secrets of this repository instead of the repositories
        repo: Option<OsString>,
    },
    /// List tags, or the entries of TAG
    Tags {
        /// List the entries of this tag instead of the tags
        tag: Option<OsString>,
    },
    /// Store stdin as REPO/SECRET (creates the repository if needed); on a terminal, asks for
    /// the value twice without echo
    Put {
        /// Where to store it: a repository and a secret name, `REPO/SECRET`
        #[arg(value_name = "REPO/SECRET")]
        path: OsString,
        /// Replace an existing secret without asking (asked only on a terminal)
        #[arg(short, long)]
        force: bool,
    },
    /// Write REPO/SECRET to stdout (with --at, as it was then)
    Get {
        /// The secret to print, `REPO/SECRET`
        #[arg(value_name = "REPO/SECRET")]
        path: OsString,
        /// An older version: a commit id (or 4+ hex digits of one), @{N} (N saves ago), or a
        /// UTC date or time (2026-12-05, "2026-12-05 10:30")
        #[arg(long, value_name = "REV")]
        at: Option<String>,
    },
    /// Edit REPO/SECRET in $VISUAL, else $EDITOR, else vi, with no copy on disk (created on
    /// save if new); vim, neovim, nano and emacs run with history, undo, backup and swap off
    Edit {
        /// The secret to edit, `REPO/SECRET`
        #[arg(value_name = "REPO/SECRET")]
        path: OsString,
    },
    /// Remove REPO/SECRET (and its tag entries), or with -r a whole REPO
    Rm {
        /// Remove a whole repository
        #[arg(short = 'r', long)]
        recursive: bool,
        /// The secret to remove, `REPO/SECRET` (with -r: the repository, `REPO`)
        #[arg(value_name = "REPO/SECRET|REPO")]
        path: OsString,
    },
    /// Rename REPO/SECRET to REPO/NEW; tag entries follow
    Mv {
        /// The secret to rename, `REPO/SECRET`
        #[arg(value_name = "REPO/SECRET")]
        from: OsString,
        /// Its new name, in the same repository, `REPO/NEW`
        #[arg(value_name = "REPO/NEW")]
        to: OsString,
    },
    /// Add REPO/SECRET to TAG (as NAME, default the secret's name)
    Tag {
        /// The tag (created if needed)
        tag: OsString,
        /// The secret to add, `REPO/SECRET`
        #[arg(value_name = "REPO/SECRET")]
        path: OsString,
        /// The entry's name in the tag [default: the secret's name]
        #[arg(long = "as", value_name = "NAME")]
        name: Option<OsString>,
    },
    /// Remove entry NAME from TAG (the tag goes when its last entry does)
    Untag {
        /// The tag
        tag: OsString,
        /// The entry to remove from it
        name: OsString,
    },
    /// History of REPO (or of one secret, REPO/SECRET), newest first
    Log {
        /// The repository, `REPO`, or one secret in it, `REPO/SECRET`
        #[arg(value_name = "REPO[/SECRET]")]
        path: OsString,
        /// The secret, as a second argument (`log REPO SECRET`, the same as `log REPO/SECRET`)
        #[arg(value_name = "SECRET")]
        secret: Option<OsString>,
    },
    /// Write the decrypted node as a tar archive to stdout (never to a terminal), or with -o to
    /// a file only you can read: `polykey export -o backup.tar`
    Export {
        /// Write the archive to FILE, created (or narrowed) to mode 0600 whatever the umask
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Import many secrets at once: SOURCE/<repo>/<secret> files, or with `-` a tar of that
    /// layout on stdin (one commit per repository; `.git` folders are skipped)
    Import {
        /// A folder of repository folders (or an extracted export), or `-` for a tar on stdin
        source: PathBuf,
    },
    /// Mount the node at MOUNTPOINT; returns once the mount is ready
    Mount {
        /// The folder to mount on (created, 0700, if it does not exist; what it holds is hidden
        /// while mounted)
        mountpoint: PathBuf,
        /// Stay attached and log to stderr
        #[arg(long)]
        foreground: bool,
        /// Unmount after this long without access (e.g. 90s, 15m, 2h, 1h30m, 1d2h)
        #[arg(long, value_name = "DURATION")]
        lock_after: Option<String>,
    },
    /// Write everything out, then unmount MOUNTPOINT
    Unmount {
        /// Where the node is mounted
        mountpoint: PathBuf,
    },
    /// Show which nodes are mounted where, by which process, and whether each can write its
    /// node (exit 1 when one cannot, or writes a rescue file instead)
    Status,
    /// Merge both ways with another node file: every repository (or each REPO) ends with the
    /// same history on both
    Sync {
        /// The other node's file
        other: PathBuf,
        /// Only these repositories (names on either node)
        repos: Vec<OsString>,
        /// Read the other node's passphrase from FILE
        #[arg(long, env = "POLYKEY_OTHER_PASSWORD_FILE", hide_env_values = true, value_name = "FILE")]
        other_password_file: Option<PathBuf>,
    },
    /// Create DEST as a backup node (new passphrase as for init), or sync into an existing DEST
    /// one way; with --only, DEST is a sub-node holding just those repositories
    Backup {
        /// The backup node's file
        dest: PathBuf,
        /// Only REPO, or every repository TAG points into (`tag:TAG`); repeatable
        #[arg(long, value_name = "REPO|tag:TAG", num_args = 1)]
        only: Vec<String>,
        /// Read the existing backup node's passphrase from FILE
        #[arg(long, env = "POLYKEY_OTHER_PASSWORD_FILE", hide_env_values = true, value_name = "FILE")]
        other_password_file: Option<PathBuf>,
    },
    /// Print this node's public identity: a `pk1…` token (both public keys), made once inside
    /// the node on first use
    Id {
        /// Print the bare `age1…` X25519 recipient instead
        #[arg(long, conflicts_with = "ssh")]
        age: bool,
        /// Print the Ed25519 key as an OpenSSH public key line instead
        #[arg(long)]
        ssh: bool,
    },
    /// Make one commit restoring REPO/SECRET (or all of REPO) as it was at REV; history is kept
    Revert {
        /// The secret, `REPO/SECRET`, or a whole repository, `REPO`
        #[arg(value_name = "REPO[/SECRET]")]
        path: OsString,
        /// The revision: a commit id (or 4+ hex digits of one), @{N} (N saves ago), or a UTC
        /// date or time
        #[arg(long, value_name = "REV")]
        to: String,
    },
    /// Show REPO's settings, or set one: `polykey config REPO merge never` (a sync never merges
    /// its secrets line by line: any secret changed on both sides becomes a conflict file)
    Config {
        /// The repository
        repo: OsString,
        /// The setting to change: `merge`
        #[arg(value_parser = ["merge"], requires = "value")]
        key: Option<String>,
        /// Its value: `lines` (the default) or `never`
        #[arg(value_parser = ["lines", "never"])]
        value: Option<String>,
    },
    /// List unresolved conflict files (SECRET.conflict-PEER beside SECRET), of REPO or all;
    /// removing one resolves it
    Conflicts {
        /// Only this repository
        repo: Option<OsString>,
    },
}

/// The command line as parsed: every subcommand accepts the global options, but only the
/// top-level help lists them (each subcommand's help points there instead of repeating them).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    // clap copies a global option into a subcommand only where the subcommand has none of that
    // id: a hidden copy keeps it accepted there and out of that subcommand's help.
    cmd.mut_subcommands(|sc| {
        globals
            .iter()
            .fold(sc, |sc, a| sc.arg(a.clone().hide(true)))
            .after_help("Global options (--node, --password-file, --json, -q, ...) work here too: see `polykey --help`.")
    })
}
