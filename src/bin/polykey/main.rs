//! The `polykey` command: a thin layer over the core library.

mod cli;

use clap::Parser;
use cli::{Cli, Cmd, Global};
use polykey::password::{self, Sources};
use polykey::{Access, Error, KdfParams, Name, NameKind, Node, Passphrase};
use std::ffi::OsStr;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit statuses (documented in docs/CLI.md).
const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// A CLI failure: the message line and the exit status.
struct Failure(String, u8);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = if e.is_usage() { EXIT_USAGE } else { EXIT_FAILURE };
        Failure(e.to_string(), code)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure(format!("cannot write output: {e}"), EXIT_FAILURE)
    }
}

type CliResult = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            if msg.contains("Broken pipe") {
                return ExitCode::SUCCESS; // The reader went away: not our failure.
            }
            let _ = writeln!(io::stderr(), "polykey: {msg}");
            ExitCode::from(code)
        }
    }
}

fn bytes(s: &OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        std::os::unix::ffi::OsStrExt::as_bytes(s).to_vec()
    }
    #[cfg(not(unix))]
    {
        s.to_string_lossy().into_owned().into_bytes()
    }
}

fn name(kind: NameKind, s: &OsStr) -> Result<Name, Failure> {
    Ok(Name::new(kind, &bytes(s))?)
}

fn secret_path(s: &OsStr) -> Result<(Name, Name), Failure> {
    Ok(polykey::name::parse_secret_path(&bytes(s))?)
}

fn node_path(g: &Global) -> Result<PathBuf, Failure> {
    if let Some(p) = &g.node {
        return Ok(p.clone());
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or_else(|| Failure("cannot find the node: set --node, $POLYKEY_NODE or $HOME".into(), EXIT_USAGE))?;
    Ok(data.join("polykey/default.node"))
}

fn sources(g: &Global) -> Sources {
    Sources {
        file: g.password_file.clone(),
        command: g.password_command.clone(),
        value: std::env::var_os(password::ENV_PASSWORD).map(|v| Passphrase::new(bytes(&v))),
    }
}

fn kdf(g: &Global) -> KdfParams {
    let mut p = KdfParams::default();
    if let Some(m) = g.kdf_memory_kib {
        p.memory_kib = m;
    }
    if let Some(t) = g.kdf_time {
        p.time_cost = t;
    }
    p
}

fn open(g: &Global, access: Access) -> Result<Node, Failure> {
    let path = node_path(g)?;
    if !path.exists() {
        return Err(Error::NoNode { path }.into());
    }
    let pass = sources(g).resolve("Passphrase", false)?;
    let node = Node::open(&path, &pass, access)?;
    if node.header_degraded() && !g.quiet {
        eprintln!(
            "polykey: warning: one of the two header copies of {} is damaged; the next passphrase change or compaction repairs it",
            path.display()
        );
    }
    Ok(node)
}

fn new_passphrase(g: &Global, init: bool) -> Result<Passphrase, Failure> {
    if let Some(f) = &g.new_password_file {
        return Ok(password::from_file(f)?);
    }
    let s = sources(g);
    if init && s.any() {
        return Ok(s.resolve("New passphrase", true)?);
    }
    Ok(password::prompt("New passphrase", true)?)
}

fn out_line(out: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    for p in parts {
        out.write_all(p)?;
    }
    out.write_all(b"\n")
}

fn json(out: &mut impl Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

fn names(g: &Global, list: &[Name]) -> CliResult {
    let mut out = io::BufWriter::new(io::stdout().lock());
    if g.json {
        let v: Vec<_> = list.iter().map(|n| serde_json::json!({ "name": n.display() })).collect();
        json(&mut out, &serde_json::Value::Array(v))?;
    } else {
        for n in list {
            out_line(&mut out, &[n.as_bytes()])?;
        }
    }
    Ok(out.flush()?)
}

/// Formats Unix seconds as ISO 8601 UTC (civil-from-days, Howard Hinnant's algorithm).
fn iso8601(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

fn run(cli: Cli) -> CliResult {
    let g = &cli.global;
    match cli.command {
        Cmd::Init => {
            let path = node_path(g)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
            }
            if path.exists() {
                return Err(Error::NodeExists { path }.into());
            }
            let pass = new_passphrase(g, true)?;
            Node::create(&path, &pass, kdf(g))?;
            if !g.quiet {
                eprintln!("polykey: created node {}", path.display());
            }
        }
        Cmd::Passwd => {
            let mut node = open(g, Access::Write)?;
            let new = new_passphrase(g, false)?;
            node.change_passphrase(&new, kdf(g))?;
            if !g.quiet {
                eprintln!("polykey: passphrase changed for {}", node.path().display());
            }
        }
        Cmd::Ls { repo } => {
            let node = open(g, Access::Read)?;
            let list = match repo {
                None => node.repos(),
                Some(r) => node.secrets(&name(NameKind::Repo, &r)?)?,
            };
            names(g, &list)?;
        }
        Cmd::Tags { tag } => {
            let node = open(g, Access::Read)?;
            match tag {
                None => names(g, &node.state().tags.keys().cloned().collect::<Vec<_>>())?,
                Some(t) => {
                    let t = name(NameKind::Tag, &t)?;
                    let entries = node.state().tags.get(&t).ok_or_else(|| Error::NotFound { what: format!("tag {t}") })?;
                    let mut out = io::BufWriter::new(io::stdout().lock());
                    if g.json {
                        let v: Vec<_> = entries
                            .iter()
                            .map(|(e, (r, s))| serde_json::json!({ "name": e.display(), "repo": r.display(), "secret": s.display() }))
                            .collect();
                        json(&mut out, &serde_json::Value::Array(v))?;
                    } else {
                        for (e, (r, s)) in entries {
                            out_line(&mut out, &[e.as_bytes(), b" -> ", r.as_bytes(), b"/", s.as_bytes()])?;
                        }
                    }
                    out.flush()?;
                }
            }
        }
        Cmd::Put { path } => {
            let (repo, secret) = secret_path(&path)?;
            let mut node = open(g, Access::Write)?;
            if io::stdin().is_terminal() && !g.quiet {
                eprintln!("polykey: reading the secret from standard input; end it with Ctrl-D");
            }
            let mut data = zeroize::Zeroizing::new(Vec::new());
            let limit = polykey::git::MAX_OBJECT_BYTES as u64;
            io::stdin()
                .lock()
                .take(limit + 1)
                .read_to_end(&mut data)
                .map_err(|e| Failure(format!("cannot read standard input: {e}"), EXIT_FAILURE))?;
            node.put(&repo, &secret, &data)?;
            node.save()?;
        }
        Cmd::Get { path } => {
            let (repo, secret) = secret_path(&path)?;
            let node = open(g, Access::Read)?;
            let data = node.get(&repo, &secret)?;
            let mut out = io::stdout().lock();
            out.write_all(&data)?;
            out.flush()?;
        }
        Cmd::Rm { recursive, path } => {
            let mut node;
            if recursive {
                let repo = name(NameKind::Repo, &path)?;
                node = open(g, Access::Write)?;
                node.remove_repo(&repo)?;
            } else {
                if !bytes(&path).contains(&b'/') {
                    return Err(Failure(
                        format!("{} is a repository: use `polykey rm -r {0}` to remove it whole", path.to_string_lossy()),
                        EXIT_USAGE,
                    ));
                }
                let (repo, secret) = secret_path(&path)?;
                node = open(g, Access::Write)?;
                node.remove(&repo, &secret)?;
            }
            node.save()?;
        }
        Cmd::Mv { from, to } => {
            let (repo, a) = secret_path(&from)?;
            let (repo2, b) = secret_path(&to)?;
            if repo != repo2 {
                return Err(Failure(
                    "mv renames a secret inside its repository: both paths must name the same repository".into(),
                    EXIT_USAGE,
                ));
            }
            let mut node = open(g, Access::Write)?;
            node.rename(&repo, &a, &b)?;
            node.save()?;
        }
        Cmd::Tag { tag, path, name: entry } => {
            let t = name(NameKind::Tag, &tag)?;
            let (repo, secret) = secret_path(&path)?;
            let e = match entry {
                Some(e) => name(NameKind::TagEntry, &e)?,
                None => Name::new(NameKind::TagEntry, secret.as_bytes())?,
            };
            let mut node = open(g, Access::Write)?;
            node.tag(&t, &e, &repo, &secret)?;
            node.save()?;
        }
        Cmd::Untag { tag, name: entry } => {
            let (t, e) = (name(NameKind::Tag, &tag)?, name(NameKind::TagEntry, &entry)?);
            let mut node = open(g, Access::Write)?;
            node.untag(&t, &e, true)?;
            node.save()?;
        }
        Cmd::Log { repo, secret } => {
            let repo = name(NameKind::Repo, &repo)?;
            let secret = secret.map(|s| name(NameKind::Secret, &s)).transpose()?;
            let node = open(g, Access::Read)?;
            let entries = node.log(&repo, secret.as_ref())?;
            let mut out = io::BufWriter::new(io::stdout().lock());
            if g.json {
                let v: Vec<_> = entries
                    .iter()
                    .map(|e| serde_json::json!({ "id": e.id.to_string(), "time": iso8601(e.time), "message": e.message }))
                    .collect();
                json(&mut out, &serde_json::Value::Array(v))?;
            } else {
                for e in &entries {
                    writeln!(out, "{} {} {}", e.id, iso8601(e.time), e.message)?;
                }
            }
            out.flush()?;
        }
        Cmd::Export => {
            if io::stdout().is_terminal() {
                return Err(Failure(
                    "refusing to write decrypted secrets to a terminal; redirect the output (polykey export > backup.tar)".into(),
                    EXIT_USAGE,
                ));
            }
            let node = open(g, Access::Read)?;
            let out = io::BufWriter::new(io::stdout().lock());
            let mut out = polykey::export::export(node.state(), out).map_err(|e| Failure(e.to_string(), EXIT_FAILURE))?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
