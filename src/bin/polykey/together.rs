//! `sync` and `backup`: two node files, either of which may be mounted. The work runs where
//! the node it changes most lives: in this node's daemon when it is mounted, else in the other
//! node's daemon when that one is, else here with both files opened.

use crate::{dispatch, kdf, new_passphrase, node_path, print, sources, through_daemon, CliResult, Failure, EXIT_FAILURE, EXIT_USAGE};
use polykey::control::{Request, Response};
use polykey::{password, runtime, Error, Name, Passphrase};
use std::path::{Path, PathBuf};

/// `path` made absolute (the daemon that opens it has another working folder), and refused
/// when it is the node itself.
fn other_node(g: &crate::cli::Global, path: &Path) -> Result<(PathBuf, PathBuf), Failure> {
    let ours = node_path(g)?;
    let other = std::path::absolute(path).map_err(|e| Error::io("cannot resolve", path, e))?;
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(&ours, &other) {
        return Err(Failure(format!("{} is this node itself: name another node file", other.display()), EXIT_USAGE));
    }
    Ok((std::path::absolute(&ours).map_err(|e| Error::io("cannot resolve", &ours, e))?, other))
}

/// The other node's passphrase: `--other-password-file` (or `$POLYKEY_OTHER_PASSWORD_FILE`),
/// else the prompt.
fn other_passphrase(file: Option<&Path>, other: &Path) -> Result<Passphrase, Failure> {
    Ok(match file {
        Some(f) => password::from_file(f)?,
        None => password::prompt(&format!("Passphrase for {}", other.display()), false)?,
    })
}

/// Runs `req` (which names `other` as the other node): through this node's daemon or here
/// (see the module's documentation); when only `other` is mounted, `swapped` is sent to its
/// daemon instead, naming this node.
fn run(g: &crate::cli::Global, ours: &Path, other: &Path, req: Request, swapped: impl FnOnce() -> Result<Request, Failure>) -> CliResult {
    let resp = match (runtime::find(ours), runtime::find(other)) {
        (Some(_), Some(rec)) => {
            return Err(Failure(
                format!("both nodes are mounted (the other at {}): unmount one of them first", rec.mountpoint.display()),
                EXIT_FAILURE,
            ))
        }
        (None, Some(_)) => match through_daemon(other, &swapped()?) {
            Some(answer) => answer?,
            None => dispatch(g, req)?, // Unmounted meanwhile.
        },
        _ => dispatch(g, req)?,
    };
    match resp {
        Response::Report(lines) if lines.is_empty() => {
            if !g.quiet {
                eprintln!("polykey: nothing to do: both nodes hold the same histories");
            }
            Ok(())
        }
        resp => print(g, resp),
    }
}

/// `polykey sync OTHER [REPO…]`.
pub(crate) fn sync(g: &crate::cli::Global, other: &Path, repos: Vec<Name>, other_file: Option<&Path>) -> CliResult {
    let (ours, other) = other_node(g, other)?;
    if !other.exists() {
        return Err(Error::NoNode { path: other }.into());
    }
    let pass = other_passphrase(other_file, &other)?;
    let swapped = || {
        let pass = sources(g).resolve("Passphrase", false)?;
        Ok(Request::Sync { other: ours.clone(), pass, repos: repos.clone(), one_way: false })
    };
    let req = Request::Sync { other: other.clone(), pass, repos: repos.clone(), one_way: false };
    run(g, &ours, &other, req, swapped)
}

/// `polykey backup DEST [--only …]`.
pub(crate) fn backup(g: &crate::cli::Global, dest: &Path, only: Vec<String>, other_file: Option<&Path>) -> CliResult {
    let (ours, dest) = other_node(g, dest)?;
    let create = !dest.exists();
    let pass = if create { new_passphrase(g, false)? } else { other_passphrase(other_file, &dest)? };
    if create {
        if runtime::find(&ours).is_none() && !ours.exists() {
            return Err(Error::NoNode { path: ours }.into());
        }
        let k = kdf(g);
        let req = Request::Backup { dest: dest.clone(), pass, create: Some((k.memory_kib, k.time_cost)), only };
        let resp = dispatch(g, req)?;
        if !g.quiet {
            eprintln!("polykey: created backup node {}", dest.display());
        }
        return print(g, resp);
    }
    if runtime::find(&dest).is_some() {
        return Err(Failure(format!("backup node {} is mounted: unmount it, or use `polykey sync`", dest.display()), EXIT_FAILURE));
    }
    let req = Request::Backup { dest: dest.clone(), pass, create: None, only };
    run(g, &ours, &dest, req, || unreachable!("the backup node is not mounted"))
}
