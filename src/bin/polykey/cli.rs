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
pub struct Global {
    /// The node file [default: $XDG_DATA_HOME/polykey/default.node]
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
    /// Print lists as JSON arrays of objects
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
    Ls { repo: Option<OsString> },
    /// List tags, or the entries of TAG
    Tags { tag: Option<OsString> },
    /// Store stdin as REPO/SECRET (creates the repository if needed)
    Put { path: OsString },
    /// Write REPO/SECRET to stdout
    Get { path: OsString },
    /// Edit REPO/SECRET in $VISUAL, else $EDITOR, else vi, with no copy on disk (created on
    /// save if new); vim, neovim, nano and emacs run with history, undo, backup and swap off
    Edit { path: OsString },
    /// Remove REPO/SECRET (and its tag entries), or with -r a whole REPO
    Rm {
        /// Remove a whole repository
        #[arg(short = 'r', long)]
        recursive: bool,
        path: OsString,
    },
    /// Rename REPO/SECRET to REPO/NEW; tag entries follow
    Mv { from: OsString, to: OsString },
    /// Add REPO/SECRET to TAG (as NAME, default the secret's name)
    Tag {
        tag: OsString,
        path: OsString,
        #[arg(long = "as", value_name = "NAME")]
        name: Option<OsString>,
    },
    /// Remove entry NAME from TAG (the tag goes when its last entry does)
    Untag { tag: OsString, name: OsString },
    /// History of REPO (or of one SECRET in it), newest first
    Log { repo: OsString, secret: Option<OsString> },
    /// Write the decrypted node as a tar archive to stdout (never to a terminal)
    Export,
    /// Import many secrets at once: SOURCE/<repo>/<secret> files, or with `-` a tar of that
    /// layout on stdin (one commit per repository; `.git` folders are skipped)
    Import { source: PathBuf },
    /// Mount the node at MOUNTPOINT; returns once the mount is ready
    Mount {
        mountpoint: PathBuf,
        /// Stay attached and log to stderr
        #[arg(long)]
        foreground: bool,
        /// Unmount after this long without access (e.g. 90s, 15m, 2h)
        #[arg(long, value_name = "DURATION")]
        lock_after: Option<String>,
    },
    /// Write everything out, then unmount MOUNTPOINT
    Unmount { mountpoint: PathBuf },
    /// Show which nodes are mounted where, by which process
    Status,
}
