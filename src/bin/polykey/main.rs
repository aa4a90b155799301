//! The `polykey` command: a thin layer over the core library.

mod cli;
mod edit;
mod import;
mod mount;
mod together;

use cli::{Cli, Cmd, Global};
use polykey::control::{self, Request, Response};
use polykey::password::{self, Sources};
use polykey::rollback;
use polykey::runtime;
use polykey::{Access, Error, KdfParams, Name, NameKind, Node, Passphrase};
use std::ffi::OsStr;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit statuses (documented in docs/CLI.md).
pub(crate) const EXIT_FAILURE: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;

/// A CLI failure: the message line and the exit status.
pub(crate) struct Failure(pub(crate) String, pub(crate) u8);

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

pub(crate) type CliResult = Result<(), Failure>;

fn main() -> ExitCode {
    // Decrypted secrets pass through this process's memory: no core dump, no same-user ptrace.
    #[cfg(unix)]
    polykey::process::disable_core_dumps();
    // An empty POLYKEY_* variable means "not set", as in most tools; but an empty
    // $POLYKEY_PASSWORD is an empty passphrase, and is refused as one.
    for (k, v) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("POLYKEY_") && k != password::ENV_PASSWORD && v.is_empty() {
            std::env::remove_var(k);
        }
    }
    let cli = match cli::command().try_get_matches().and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = write!(io::stderr(), "{}", e.render());
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            // clap's whole message (what is missing or unexpected, "did you mean", the usage
            // line), its first line prefixed like every other failure.
            let text = e.render().to_string();
            let _ = write!(io::stderr(), "polykey: {}", text.strip_prefix("error: ").unwrap_or(&text));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            if msg.starts_with("cannot write output") && msg.contains("Broken pipe") {
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

pub(crate) fn secret_path(s: &OsStr) -> Result<(Name, Name), Failure> {
    Ok(polykey::name::parse_secret_path(&bytes(s))?)
}

pub(crate) fn node_path(g: &Global) -> Result<PathBuf, Failure> {
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

pub(crate) fn sources(g: &Global) -> Sources {
    Sources {
        file: g.password_file.clone(),
        command: g.password_command.clone(),
        value: std::env::var_os(password::ENV_PASSWORD).map(|v| Passphrase::new(bytes(&v))),
    }
}

pub(crate) fn kdf(g: &Global) -> KdfParams {
    let mut p = KdfParams::default();
    if let Some(m) = g.kdf_memory_kib {
        p.memory_kib = m;
    }
    if let Some(t) = g.kdf_time {
        p.time_cost = t;
    }
    p
}

pub(crate) fn open(g: &Global, access: Access) -> Result<Node, Failure> {
    let path = node_path(g)?;
    if !path.exists() {
        return Err(Error::NoNode { path }.into());
    }
    let src = sources(g);
    let mut attempt = 1;
    let mut node = loop {
        let pass = src.resolve("Passphrase", false)?;
        match Node::open(&path, &pass, access) {
            Ok(node) => break node,
            // A typo at the prompt gets another try; a wrong file or command would only fail again.
            Err(Error::WrongPassphrase { .. }) if src.prompts() && attempt < password::PROMPT_ATTEMPTS => {
                attempt += 1;
                eprintln!("polykey: wrong passphrase; try again");
            }
            Err(e) => {
                return Err(match (&e, runtime::find(&path)) {
                    (Error::Busy { .. }, Some(rec)) => Failure(
                        format!("node {} is mounted at {} by process {}", path.display(), rec.mountpoint.display(), rec.pid),
                        EXIT_FAILURE,
                    ),
                    _ => e.into(),
                })
            }
        }
    };
    if g.accept_rollback {
        rollback::accept(&node);
        node.allow_cutting_tail();
    } else {
        rollback::check(&node)?;
        rollback::record(&node);
    }
    match (node.discarded_tail(), g.quiet) {
        // Not what a crash leaves: said even with -q, since writes are refused because of it.
        (Some((offset, what)), _) if node.kept_tail() => eprintln!(
            "polykey: warning: node {}: the bytes from byte {offset} are not part of its log ({what}) and are ignored; \
             it opens at its state before them and refuses changes until you pass --accept-rollback",
            path.display()
        ),
        (Some((offset, what)), false) => eprintln!(
            "polykey: warning: node {}: the last save (from byte {offset}) was cut short or damaged ({what}) and is ignored",
            path.display()
        ),
        _ => {}
    }
    if node.header_degraded() && !g.quiet {
        eprintln!(
            "polykey: warning: one of the two header copies of {} is damaged; the next passphrase change or compaction repairs it",
            path.display()
        );
    }
    Ok(node)
}

pub(crate) fn new_passphrase(g: &Global, init: bool) -> Result<Passphrase, Failure> {
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

/// Writes `items` as one JSON array, an item at a time: a list of 25,000 never exists as one
/// JSON value in memory.
fn json_array(out: &mut impl Write, items: impl Iterator<Item = serde_json::Value>) -> io::Result<()> {
    out.write_all(b"[")?;
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &item).map_err(io::Error::other)?;
    }
    out.write_all(b"]\n")
}

/// Sends `req` to the mount daemon of the node at `path`, if it is mounted.
pub(crate) fn through_daemon(path: &std::path::Path, req: &Request) -> Option<Result<Response, Failure>> {
    let answer = runtime::call(path, req)?;
    Some(match answer {
        Err(e) => Err(Failure(format!("mount daemon of {}: {e}", path.display()), EXIT_FAILURE)),
        Ok(Response::Failed(msg, usage)) => Err(Failure(msg, if usage { EXIT_USAGE } else { EXIT_FAILURE })),
        Ok(ok) => Ok(ok),
    })
}

/// Runs node commands: through the mount daemon when the node is mounted, else on the node
/// opened here, once, by the first command that needs it.
struct Session<'g> {
    g: &'g Global,
    path: PathBuf,
    node: Option<Node>,
}

impl<'g> Session<'g> {
    fn new(g: &'g Global) -> Result<Self, Failure> {
        Ok(Session { g, path: node_path(g)?, node: None })
    }

    /// Runs `req`; a node opened here is opened for `access` (at least what `req` needs).
    fn call(&mut self, req: Request, access: Access) -> Result<Response, Failure> {
        if self.node.is_none() {
            if let Some(answer) = through_daemon(&self.path, &req) {
                // A failure says what went wrong itself; a success may hide that nothing is written.
                if answer.is_ok() {
                    mount::warn_if_unhealthy(self.g, &self.path);
                }
                return answer;
            }
        }
        let writes = req.access() == Access::Write;
        let node = match &mut self.node {
            Some(node) => node,
            None => self.node.insert(open(self.g, if writes { Access::Write } else { access })?),
        };
        let resp = control::execute(node, req)?;
        if writes {
            node.save()?;
            rollback::record(node);
        }
        Ok(resp)
    }
}

/// Runs one node command (see [`Session`]).
pub(crate) fn dispatch(g: &Global, req: Request) -> Result<Response, Failure> {
    let access = req.access();
    Session::new(g)?.call(req, access)
}

/// `import`: in requests the mount daemon accepts (one, unless the import is larger than the
/// largest secret; each makes one commit per repository).
fn import_all(g: &Global, items: Vec<(Name, Name, polykey::secret::SecretBytes)>) -> CliResult {
    let mut session = Session::new(g)?;
    let mut stored = 0;
    for req in Request::imports(items) {
        if let Response::Count(n) = session.call(req, Access::Write)? {
            stored += n;
        }
    }
    print(g, Response::Count(stored))
}

/// `export -o FILE`: the archive in a file only its owner can read (0600, also when it existed
/// before with a wider mode), whatever the umask.
fn export_to(g: &Global, file: &std::path::Path) -> CliResult {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let Response::Data(tar) = dispatch(g, Request::Export)? else {
        return Err(Failure("unexpected answer from the mount daemon".into(), EXIT_FAILURE));
    };
    let fail = |e: io::Error| Failure(format!("cannot write {}: {e}", file.display()), EXIT_FAILURE);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(file).map_err(fail)?;
    // Narrowed before a byte is written; only then emptied and filled.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    f.set_len(0).map_err(fail)?;
    f.write_all(&tar).and_then(|()| f.sync_all()).map_err(fail)?;
    Ok(())
}

/// `put` on a terminal: asks before replacing an existing secret (unless `force`), then asks
/// for the value twice without echo; all on one opened node (one passphrase prompt).
fn put_interactive(g: &Global, repo: Name, secret: Name, force: bool) -> CliResult {
    let mut session = Session::new(g)?;
    let names = |resp| match resp {
        Response::Names(list) => Ok(list),
        _ => Err(Failure("unexpected answer from the mount daemon".into(), EXIT_FAILURE)),
    };
    let what = format!("{}/{}", repo.display(), secret.display());
    let repo_exists = names(session.call(Request::Ls(None), Access::Write)?)?.iter().any(|n| n == repo.as_bytes());
    let exists =
        repo_exists && names(session.call(Request::Ls(Some(repo.clone())), Access::Write)?)?.iter().any(|n| n == secret.as_bytes());
    if exists && !force && !password::confirm(&format!("polykey: {what} exists; replace it?"))? {
        return Err(Failure(format!("{what} was left as it was"), EXIT_FAILURE));
    }
    let data = password::prompt_value(&what)?;
    session.call(Request::Put(repo, secret, data), Access::Write)?;
    Ok(())
}

/// Prints a command's answer as text or JSON.
pub(crate) fn print(g: &Global, resp: Response) -> CliResult {
    let mut out = io::BufWriter::new(io::stdout().lock());
    match resp {
        Response::Done | Response::Mounted(..) | Response::Failed(..) | Response::Health(_) => {}
        Response::Report(lines) => {
            if !g.quiet {
                for l in lines {
                    eprintln!("polykey: {l}");
                }
            }
        }
        Response::Paths(ps) if g.json => {
            json_array(&mut out, ps.iter().map(|(r, s)| serde_json::json!({ "repo": r.display(), "secret": s.display() })))?;
        }
        Response::Paths(ps) => {
            for (r, s) in ps {
                out_line(&mut out, &[r.as_bytes(), b"/", s.as_bytes()])?;
            }
        }
        Response::Count(n) => {
            if !g.quiet {
                eprintln!("polykey: {n} secret{} stored", if n == 1 { "" } else { "s" });
            }
        }
        Response::Names(list) if g.json => {
            json_array(&mut out, list.iter().map(|n| serde_json::json!({ "name": String::from_utf8_lossy(n) })))?;
        }
        Response::Names(list) => {
            for n in list.iter() {
                out_line(&mut out, &[n])?;
            }
        }
        Response::Entries(es) if g.json => {
            let items = es.iter().map(|(e, r, s)| serde_json::json!({ "name": e.display(), "repo": r.display(), "secret": s.display() }));
            json_array(&mut out, items)?;
        }
        Response::Entries(es) => {
            for (e, r, s) in es {
                out_line(&mut out, &[e.as_bytes(), b" -> ", r.as_bytes(), b"/", s.as_bytes()])?;
            }
        }
        Response::Data(d) => out.write_all(&d)?,
        Response::Log(entries) if g.json => {
            let items = entries
                .iter()
                .map(|e| serde_json::json!({ "id": e.id.to_string(), "time": runtime::iso8601(e.time), "message": e.message }));
            json_array(&mut out, items)?;
        }
        Response::Log(entries) => {
            for e in &entries {
                writeln!(out, "{} {} {}", e.id, runtime::iso8601(e.time), e.message)?;
            }
        }
    }
    Ok(out.flush()?)
}

fn init(g: &Global) -> CliResult {
    let path = node_path(g)?;
    if path.exists() {
        return Err(Error::NodeExists { path }.into());
    }
    // The passphrase first: without one, nothing is written, not even a folder.
    let pass = new_passphrase(g, true)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
    }
    let node = Node::create(&path, &pass, kdf(g))?;
    rollback::record(&node);
    if !g.quiet {
        eprintln!("polykey: created node {}", path.display());
    }
    Ok(())
}

fn run(cli: Cli) -> CliResult {
    let g = &cli.global;
    let req = match cli.command {
        Cmd::Init => return init(g),
        Cmd::Mount { mountpoint, foreground, lock_after } => {
            return mount::mount(g, &node_path(g)?, &mountpoint, foreground, lock_after.as_deref())
        }
        Cmd::Unmount { mountpoint } => return mount::unmount(g, &mountpoint),
        Cmd::Status => return mount::status(g),
        Cmd::Edit { path } => return edit::edit(g, &path),
        Cmd::Passwd => {
            let path = node_path(g)?;
            if runtime::find(&path).is_some() {
                // The daemon holds the node; it re-wraps the key for us.
                let current = sources(g).resolve("Current passphrase", false)?;
                Request::Passwd(current, new_passphrase(g, false)?)
            } else {
                let mut node = open(g, Access::Write)?;
                let new = new_passphrase(g, false)?;
                node.change_passphrase(&new, kdf(g))?;
                if !g.quiet {
                    eprintln!("polykey: passphrase changed for {}", node.path().display());
                }
                return Ok(());
            }
        }
        Cmd::Ls { repo } => Request::Ls(repo.map(|r| name(NameKind::Repo, &r)).transpose()?),
        Cmd::Tags { tag } => Request::Tags(tag.map(|t| name(NameKind::Tag, &t)).transpose()?),
        Cmd::Put { path, force } => {
            let (repo, secret) = secret_path(&path)?;
            if io::stdin().is_terminal() {
                return put_interactive(g, repo, secret, force);
            }
            let mut data = zeroize::Zeroizing::new(Vec::new());
            let limit = polykey::git::MAX_OBJECT_BYTES as u64;
            io::stdin()
                .lock()
                .take(limit + 1)
                .read_to_end(&mut data)
                .map_err(|e| Failure(format!("cannot read standard input: {e}"), EXIT_FAILURE))?;
            if data.len() as u64 > limit {
                return Err(Failure(
                    format!("standard input is larger than the {limit}-byte limit for a secret; nothing was stored"),
                    EXIT_FAILURE,
                ));
            }
            Request::Put(repo, secret, data)
        }
        Cmd::Get { path, at: None } => {
            let (repo, secret) = secret_path(&path)?;
            Request::Get(repo, secret)
        }
        Cmd::Get { path, at: Some(rev) } => {
            let (repo, secret) = secret_path(&path)?;
            Request::GetAt(repo, secret, rev)
        }
        Cmd::Revert { path, to } if bytes(&path).contains(&b'/') => {
            let (repo, secret) = secret_path(&path)?;
            Request::Revert(repo, Some(secret), to)
        }
        Cmd::Id { age, ssh } => Request::Id(match (age, ssh) {
            (true, _) => polykey::control::IdForm::Age,
            (_, true) => polykey::control::IdForm::Ssh,
            _ => polykey::control::IdForm::Token,
        }),
        Cmd::Revert { path, to } => Request::Revert(name(NameKind::Repo, &path)?, None, to),
        Cmd::Rm { recursive: true, path } => Request::RmRepo(name(NameKind::Repo, &path)?),
        Cmd::Rm { recursive: false, path } => {
            if !bytes(&path).contains(&b'/') {
                return Err(Failure(
                    format!("{} is a repository: use `polykey rm -r {0}` to remove it whole", path.to_string_lossy()),
                    EXIT_USAGE,
                ));
            }
            let (repo, secret) = secret_path(&path)?;
            Request::Rm(repo, secret)
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
            Request::Mv(repo, a, b)
        }
        Cmd::Tag { tag, path, name: entry } => {
            let t = name(NameKind::Tag, &tag)?;
            let (repo, secret) = secret_path(&path)?;
            let e = match entry {
                Some(e) => name(NameKind::TagEntry, &e)?,
                None => Name::new(NameKind::TagEntry, secret.as_bytes())?,
            };
            Request::Tag(t, e, repo, secret)
        }
        Cmd::Untag { tag, name: entry } => Request::Untag(name(NameKind::Tag, &tag)?, name(NameKind::TagEntry, &entry)?),
        Cmd::Log { path, secret: None } if bytes(&path).contains(&b'/') => {
            let (repo, secret) = secret_path(&path)?;
            Request::Log(repo, Some(secret))
        }
        Cmd::Log { path, secret } => Request::Log(name(NameKind::Repo, &path)?, secret.map(|s| name(NameKind::Secret, &s)).transpose()?),
        Cmd::Import { source } => return import_all(g, import::read(&source)?),
        Cmd::Sync { other, repos, other_password_file } => {
            let repos = repos.iter().map(|r| name(NameKind::Repo, r)).collect::<Result<Vec<_>, _>>()?;
            return together::sync(g, &other, repos, other_password_file.as_deref());
        }
        Cmd::Backup { dest, only, other_password_file } => return together::backup(g, &dest, only, other_password_file.as_deref()),
        Cmd::Config { repo, key: _, value } => Request::Config(
            name(NameKind::Repo, &repo)?,
            value.map(|v| if v == "never" { polykey::merge::MergeMode::Never } else { polykey::merge::MergeMode::Lines }),
        ),
        Cmd::Conflicts { repo } => Request::Conflicts(repo.map(|r| name(NameKind::Repo, &r)).transpose()?),
        Cmd::Export { output: Some(file) } => return export_to(g, &file),
        Cmd::Export { output: None } => {
            if io::stdout().is_terminal() {
                return Err(Failure(
                    "refusing to write decrypted secrets to a terminal; write a private file instead: polykey export -o backup.tar".into(),
                    EXIT_USAGE,
                ));
            }
            Request::Export
        }
    };
    let resp = dispatch(g, req)?;
    print(g, resp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(polykey::runtime::iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(polykey::runtime::iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(polykey::runtime::iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
