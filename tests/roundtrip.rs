//! Round trips: whatever operations are applied and saved, reopening the node from disk (before
//! and after compaction) gives back exactly the repositories, secrets, bytes and tags that a
//! plain model predicts, and `polykey export` extracts to clean git checkouts with tags as hard
//! links. Also: `log` is newest first, identical bytes make no commit, and a secret's log lists
//! only the commits that changed it.

use crate::util::{pass, repo, secret, TempNode};
use polykey::{Access, Error, Name, NameKind, Node};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Secret name → bytes.
pub type Secrets = BTreeMap<Name, Vec<u8>>;
/// Tag entry name → (repository, secret).
pub type Entries = BTreeMap<Name, (Name, Name)>;

/// Everything a user can see in a node: repositories, their secrets' bytes, tags and entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub repos: BTreeMap<Name, Secrets>,
    pub tags: BTreeMap<Name, Entries>,
}

impl Content {
    /// Reads the whole visible content of `node` through its public API.
    pub fn of(node: &Node) -> Content {
        let mut repos = BTreeMap::new();
        for r in node.repos() {
            let mut secrets = Secrets::new();
            for s in node.secrets(&r).unwrap() {
                let data = node.get(&r, &s).unwrap().to_vec();
                secrets.insert(s, data);
            }
            repos.insert(r, secrets);
        }
        Content { repos, tags: node.state().tags.clone() }
    }
}

/// How an operation ended, in terms both the node and the model can express.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    /// `put`: whether a commit was made.
    Put(bool),
    NotFound,
    Exists,
}

fn outcome<T>(r: polykey::Result<T>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(Error::NotFound { .. }) => Outcome::NotFound,
        Err(Error::Exists { .. }) => Outcome::Exists,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// One operation; indices point into the case's name pools.
#[derive(Clone, Debug)]
enum Op {
    Put {
        repo: usize,
        secret: usize,
        data: Vec<u8>,
    },
    /// Stores the secret's current bytes again (or empty bytes if it does not exist).
    PutAgain {
        repo: usize,
        secret: usize,
    },
    Remove {
        repo: usize,
        secret: usize,
    },
    Rename {
        repo: usize,
        from: usize,
        to: usize,
        replace: bool,
    },
    RenameRepo {
        from: usize,
        to: usize,
    },
    RenameTag {
        from: usize,
        to: usize,
    },
    RemoveRepo {
        repo: usize,
    },
    Tag {
        tag: usize,
        entry: usize,
        repo: usize,
        secret: usize,
    },
    Untag {
        tag: usize,
        entry: usize,
        drop_empty: bool,
    },
}

#[derive(Clone, Debug)]
struct Step {
    op: Op,
    /// Save after the operation.
    save: bool,
    /// Then drop the node (losing unsaved changes) and open it again from disk.
    reopen: bool,
}

/// Pools of names a case draws from: few names, so operations collide often.
#[derive(Clone, Debug)]
struct Pools {
    repos: Vec<Name>,
    secrets: Vec<Name>,
    tags: Vec<Name>,
    entries: Vec<Name>,
}

const REPOS: usize = 4;
const SECRETS: usize = 5;
const TAGS: usize = 3;
const ENTRIES: usize = 4;

impl Content {
    /// Applies `op` as the node is documented to, returning the outcome the node must give.
    fn apply(&mut self, p: &Pools, op: &Op) -> Outcome {
        match *op {
            Op::Put { repo, secret, ref data } => self.put(&p.repos[repo], &p.secrets[secret], data),
            Op::PutAgain { repo, secret } => {
                let data = self.current(p, repo, secret);
                self.put(&p.repos[repo], &p.secrets[secret], &data)
            }
            Op::Remove { repo, secret } => {
                let (r, s) = (&p.repos[repo], &p.secrets[secret]);
                match self.repos.get_mut(r).map(|secrets| secrets.remove(s)) {
                    Some(Some(_)) => {
                        self.unlink(|tr, ts| tr == r && ts == s);
                        Outcome::Done
                    }
                    _ => Outcome::NotFound,
                }
            }
            Op::Rename { repo, from, to, replace } => {
                let (r, from, to) = (&p.repos[repo], &p.secrets[from], &p.secrets[to]);
                let Some(secrets) = self.repos.get_mut(r) else { return Outcome::NotFound };
                if !secrets.contains_key(from) {
                    return Outcome::NotFound;
                }
                if from == to {
                    return Outcome::Done;
                }
                if secrets.contains_key(to) && !replace {
                    return Outcome::Exists;
                }
                let data = secrets.remove(from).unwrap();
                secrets.insert(to.clone(), data);
                // Entries of `from` follow it; entries of a replaced `to` stay on `to`.
                self.retarget(|tr, ts| tr == r && ts == from, r, to);
                Outcome::Done
            }
            Op::RenameRepo { from, to } => {
                let (from, to) = (&p.repos[from], &p.repos[to]);
                if from == to {
                    return Outcome::Done;
                }
                if self.repos.contains_key(to) {
                    return Outcome::Exists;
                }
                let Some(secrets) = self.repos.remove(from) else { return Outcome::NotFound };
                self.repos.insert(to.clone(), secrets);
                for entries in self.tags.values_mut() {
                    for (tr, _) in entries.values_mut() {
                        if tr == from {
                            *tr = to.clone();
                        }
                    }
                }
                Outcome::Done
            }
            Op::RenameTag { from, to } => {
                let (from, to) = (&p.tags[from], &p.tags[to]);
                if from == to {
                    return Outcome::Done;
                }
                if self.tags.contains_key(to) {
                    return Outcome::Exists;
                }
                let Some(entries) = self.tags.remove(from) else { return Outcome::NotFound };
                self.tags.insert(to.clone(), entries);
                Outcome::Done
            }
            Op::RemoveRepo { repo } => {
                let r = &p.repos[repo];
                if self.repos.remove(r).is_none() {
                    return Outcome::NotFound;
                }
                // The tags themselves stay, possibly empty.
                self.unlink(|tr, _| tr == r);
                Outcome::Done
            }
            Op::Tag { tag, entry, repo, secret } => {
                let (t, e, r, s) = (&p.tags[tag], &p.entries[entry], &p.repos[repo], &p.secrets[secret]);
                if !self.repos.get(r).is_some_and(|secrets| secrets.contains_key(s)) {
                    return Outcome::NotFound;
                }
                match self.tags.get(t).and_then(|entries| entries.get(e)) {
                    Some(target) if *target == (r.clone(), s.clone()) => Outcome::Done,
                    Some(_) => Outcome::Exists,
                    None => {
                        self.tags.entry(t.clone()).or_default().insert(e.clone(), (r.clone(), s.clone()));
                        Outcome::Done
                    }
                }
            }
            Op::Untag { tag, entry, drop_empty } => {
                let (t, e) = (&p.tags[tag], &p.entries[entry]);
                let Some(entries) = self.tags.get_mut(t) else { return Outcome::NotFound };
                if entries.remove(e).is_none() {
                    return Outcome::NotFound;
                }
                if drop_empty && entries.is_empty() {
                    self.tags.remove(t);
                }
                Outcome::Done
            }
        }
    }

    fn put(&mut self, r: &Name, s: &Name, data: &[u8]) -> Outcome {
        let old = self.repos.entry(r.clone()).or_default().insert(s.clone(), data.to_vec());
        Outcome::Put(old.as_deref() != Some(data))
    }

    fn current(&self, p: &Pools, repo: usize, secret: usize) -> Vec<u8> {
        self.repos.get(&p.repos[repo]).and_then(|s| s.get(&p.secrets[secret])).cloned().unwrap_or_default()
    }

    /// Points every tag entry whose target matches at `r/to`.
    fn retarget(&mut self, matches: impl Fn(&Name, &Name) -> bool, r: &Name, to: &Name) {
        for entries in self.tags.values_mut() {
            for target in entries.values_mut() {
                if matches(&target.0, &target.1) {
                    *target = (r.clone(), to.clone());
                }
            }
        }
    }

    /// Removes every tag entry whose target matches.
    fn unlink(&mut self, gone: impl Fn(&Name, &Name) -> bool) {
        for entries in self.tags.values_mut() {
            entries.retain(|_, (r, s)| !gone(r, s));
        }
    }
}

/// Applies `op` to the node.
fn apply_node(node: &mut Node, p: &Pools, op: &Op, model: &Content) -> Outcome {
    match *op {
        Op::Put { repo, secret, ref data } => outcome(node.put(&p.repos[repo], &p.secrets[secret], data), Outcome::Put),
        Op::PutAgain { repo, secret } => {
            let data = model.current(p, repo, secret);
            outcome(node.put(&p.repos[repo], &p.secrets[secret], &data), Outcome::Put)
        }
        Op::Remove { repo, secret } => outcome(node.remove(&p.repos[repo], &p.secrets[secret]), |()| Outcome::Done),
        Op::Rename { repo, from, to, replace } => {
            outcome(node.rename(&p.repos[repo], &p.secrets[from], &p.secrets[to], replace), |()| Outcome::Done)
        }
        Op::RenameRepo { from, to } => outcome(node.rename_repo(&p.repos[from], &p.repos[to]), |()| Outcome::Done),
        Op::RenameTag { from, to } => outcome(node.rename_tag(&p.tags[from], &p.tags[to]), |()| Outcome::Done),
        Op::RemoveRepo { repo } => outcome(node.remove_repo(&p.repos[repo]), |()| Outcome::Done),
        Op::Tag { tag, entry, repo, secret } => {
            outcome(node.tag(&p.tags[tag], &p.entries[entry], &p.repos[repo], &p.secrets[secret]), |()| Outcome::Done)
        }
        Op::Untag { tag, entry, drop_empty } => outcome(node.untag(&p.tags[tag], &p.entries[entry], drop_empty), |()| Outcome::Done),
    }
}

/// Raw bytes of a valid name: mostly short names from a small alphabet (so they collide),
/// some up to the 255-byte limit, some any bytes (non-UTF-8 included), some odd but legal.
fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![4 => b'a'..=b'c', 1 => any::<u8>()];
    prop_oneof![
        6 => prop::collection::vec(byte.clone(), 1..=3),
        1 => prop::collection::vec(byte, 250..=255),
        2 => prop::sample::select(vec![
            b"...".to_vec(),
            b".git".to_vec(),
            b".hidden".to_vec(),
            b"\xff\xfe\x80".to_vec(),
            "clé ✓".as_bytes().to_vec(),
            b" lead and trail \n".to_vec(),
            b"-rf".to_vec(),
            b"HEAD".to_vec(),
            b"a\\b".to_vec(),
        ]),
    ]
    .prop_map(|mut v| {
        v.retain(|&b| b != 0 && b != b'/');
        v
    })
    .prop_filter("not a name", |v| !v.is_empty() && v != b"." && v != b"..")
}

fn name(kind: NameKind) -> impl Strategy<Value = Name> {
    name_bytes()
        .prop_filter("a secret may not be .git", move |v| kind != NameKind::Secret || !v.eq_ignore_ascii_case(b".git"))
        .prop_map(move |v| Name::new(kind, &v).unwrap())
}

fn pools() -> impl Strategy<Value = Pools> {
    (
        prop::collection::vec(name(NameKind::Repo), REPOS),
        prop::collection::vec(name(NameKind::Secret), SECRETS),
        prop::collection::vec(name(NameKind::Tag), TAGS),
        prop::collection::vec(name(NameKind::TagEntry), ENTRIES),
    )
        .prop_map(|(repos, secrets, tags, entries)| Pools { repos, secrets, tags, entries })
}

/// Any bytes, empty and binary included; mostly small, sometimes a few KiB.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(any::<u8>(), 0..3000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..REPOS, 0..SECRETS, data()).prop_map(|(repo, secret, data)| Op::Put { repo, secret, data }),
        1 => (0..REPOS, 0..SECRETS).prop_map(|(repo, secret)| Op::PutAgain { repo, secret }),
        2 => (0..REPOS, 0..SECRETS).prop_map(|(repo, secret)| Op::Remove { repo, secret }),
        2 => (0..REPOS, 0..SECRETS, 0..SECRETS, any::<bool>()).prop_map(|(repo, from, to, replace)| Op::Rename { repo, from, to, replace }),
        1 => (0..REPOS, 0..REPOS).prop_map(|(from, to)| Op::RenameRepo { from, to }),
        1 => (0..TAGS, 0..TAGS).prop_map(|(from, to)| Op::RenameTag { from, to }),
        1 => (0..REPOS).prop_map(|repo| Op::RemoveRepo { repo }),
        3 => (0..TAGS, 0..ENTRIES, 0..REPOS, 0..SECRETS).prop_map(|(tag, entry, repo, secret)| Op::Tag { tag, entry, repo, secret }),
        1 => (0..TAGS, 0..ENTRIES, any::<bool>()).prop_map(|(tag, entry, drop_empty)| Op::Untag { tag, entry, drop_empty }),
    ]
}

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = (op(), prop::bool::weighted(0.35), prop::bool::weighted(0.1)).prop_map(|(op, save, reopen)| Step { op, save, reopen });
    prop::collection::vec(step, 1..max)
}

fn open(t: &TempNode) -> Node {
    Node::open(&t.path, &pass(), Access::Write).unwrap()
}

/// Runs `steps` on a fresh node and on the model; returns the node (everything saved) and the
/// model it must equal.
fn run_steps(t: &TempNode, p: &Pools, steps: &[Step]) -> Result<(Node, Content), TestCaseError> {
    let mut node = t.create();
    let mut model = Content::default();
    let mut saved = Content::default();
    for (i, step) in steps.iter().enumerate() {
        let want = model.apply(p, &step.op);
        // The model has applied the step already; for `PutAgain` its bytes are unchanged.
        let got = apply_node(&mut node, p, &step.op, &model);
        prop_assert_eq!(got, want, "step {}: {:?}", i, step.op);
        if step.save {
            node.save().unwrap();
            saved = model.clone();
        }
        if step.reopen {
            // Unsaved changes are dropped with the node; the file holds the last save.
            drop(node);
            node = open(t);
            model = saved.clone();
            prop_assert!(Content::of(&node) == model, "after reopen at step {}", i);
        }
    }
    node.save().unwrap();
    prop_assert!(!node.is_dirty());
    prop_assert!(Content::of(&node) == model, "in memory after the last step");
    Ok((node, model))
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(48))]

    /// The node reopened from disk, before and after compaction, equals the model.
    #[test]
    fn reopened_node_equals_model(p in pools(), steps in steps(40)) {
        let t = TempNode::new();
        let (node, model) = run_steps(&t, &p, &steps)?;
        drop(node);

        let mut node = open(&t);
        prop_assert!(Content::of(&node) == model, "reopened: {:#?}\nmodel: {:#?}", Content::of(&node), model);
        node.compact().unwrap();
        prop_assert!(Content::of(&node) == model, "compacted, in memory");
        prop_assert_eq!(std::fs::metadata(&t.path).unwrap().len(), node.file_len());
        drop(node);

        let node = open(&t);
        prop_assert!(Content::of(&node) == model, "compacted and reopened");
    }
}

proptest! {
    #![proptest_config(config(6))]

    /// `polykey export` | `tar -x` gives clean git repositories with the model's files, and
    /// tag entries that are hard links to them.
    #[test]
    fn export_extracts_to_clean_git_checkouts(p in pools(), steps in steps(25)) {
        let t = TempNode::new();
        let (node, model) = run_steps(&t, &p, &steps)?;
        drop(node);
        let node = Node::open(&t.path, &pass(), Access::Read).unwrap();
        let tar = polykey::export::export(node.state(), Vec::new()).unwrap();
        check_export(&tar, &model);
    }
}

fn os(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}

/// A `git` that reads no user or system configuration.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir).args(["-c", "safe.directory=*", "-c", "core.quotepath=false"]);
    c.env("GIT_CONFIG_NOSYSTEM", "1").env("GIT_CONFIG_GLOBAL", "/dev/null").env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap());
    c
}

pub fn check_export(tar: &[u8], model: &Content) {
    use std::os::unix::fs::MetadataExt;
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new("tar")
        .arg("-x")
        .arg("-f")
        .arg("-")
        .arg("-C")
        .arg(out.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("tar is installed");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), tar).unwrap();
    assert!(child.wait().unwrap().success(), "tar -x failed");

    let names = |dir: &Path| -> Vec<Vec<u8>> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| std::os::unix::ffi::OsStrExt::as_bytes(e.unwrap().file_name().as_os_str()).to_vec())
            .collect();
        v.sort();
        v
    };
    let repos_dir = out.path().join("repos");
    assert_eq!(names(&repos_dir), model.repos.keys().map(|r| r.as_bytes().to_vec()).collect::<Vec<_>>());
    for (r, secrets) in &model.repos {
        let dir = repos_dir.join(os(r.as_bytes()));
        let fsck = git(&dir).args(["fsck", "--strict", "--no-progress"]).output().unwrap();
        assert!(fsck.status.success(), "git fsck in {r:?}: {}", String::from_utf8_lossy(&fsck.stderr));
        let status = git(&dir).args(["status", "--porcelain", "-z"]).output().unwrap();
        assert!(status.status.success(), "git status in {r:?}: {}", String::from_utf8_lossy(&status.stderr));
        assert!(status.stdout.is_empty(), "git status in {r:?} is not clean: {:?}", String::from_utf8_lossy(&status.stdout));
        let mut want: Vec<Vec<u8>> = secrets.keys().map(|s| s.as_bytes().to_vec()).collect();
        want.push(b".git".to_vec());
        want.sort();
        assert_eq!(names(&dir), want, "files checked out in {r:?}");
        for (s, data) in secrets {
            let file = dir.join(os(s.as_bytes()));
            assert!(std::fs::read(&file).unwrap() == *data, "bytes of {r:?}/{s:?}");
            let links = model.tags.values().flat_map(|e| e.values()).filter(|(tr, ts)| tr == r && ts == s).count();
            assert_eq!(std::fs::metadata(&file).unwrap().nlink(), 1 + links as u64, "link count of {r:?}/{s:?}");
        }
    }
    let tags_dir = out.path().join("tags");
    assert_eq!(names(&tags_dir), model.tags.keys().map(|t| t.as_bytes().to_vec()).collect::<Vec<_>>());
    for (t, entries) in &model.tags {
        let dir = tags_dir.join(os(t.as_bytes()));
        assert_eq!(names(&dir), entries.keys().map(|e| e.as_bytes().to_vec()).collect::<Vec<_>>(), "entries of tag {t:?}");
        for (e, (r, s)) in entries {
            let entry = std::fs::metadata(dir.join(os(e.as_bytes()))).unwrap();
            let target = std::fs::metadata(repos_dir.join(os(r.as_bytes())).join(os(s.as_bytes()))).unwrap();
            assert_eq!((entry.dev(), entry.ino()), (target.dev(), target.ino()), "tag entry {t:?}/{e:?} is not a hard link");
        }
    }
}

/// `log` is newest first; identical bytes make no commit; a secret's log lists only the commits
/// that changed that secret; the history survives a reopen.
#[test]
fn log_is_newest_first_and_filters_by_secret() {
    let t = TempNode::new();
    let mut node = t.create();
    let (r, x, y, z) = (repo("r"), secret("x"), secret("y"), secret("z"));
    assert!(node.put(&r, &x, b"1").unwrap());
    assert!(node.put(&r, &y, b"1").unwrap());
    assert!(node.put(&r, &x, b"2").unwrap());
    let before = node.log(&r, None).unwrap();
    assert!(!node.put(&r, &x, b"2").unwrap(), "identical bytes made a commit");
    assert_eq!(node.log(&r, None).unwrap(), before, "identical bytes changed the history");
    node.save().unwrap();
    node.rename(&r, &x, &z, false).unwrap();
    node.put(&r, &y, b"").unwrap();
    node.remove(&r, &z).unwrap();
    node.save().unwrap();

    let messages = |log: &[polykey::LogEntry]| log.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
    let all = node.log(&r, None).unwrap();
    assert_eq!(messages(&all), ["Remove z", "Update y", "Rename x to z", "Update x", "Add y", "Add x"]);
    assert_eq!(all[0].id, node.state().repos[&r].head().unwrap(), "the newest entry is the head");
    let ids: std::collections::HashSet<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), all.len(), "commit ids are distinct");
    assert!(all.windows(2).all(|w| w[0].time >= w[1].time), "times are newest first");

    assert_eq!(messages(&node.log(&r, Some(&x)).unwrap()), ["Rename x to z", "Update x", "Add x"]);
    assert_eq!(messages(&node.log(&r, Some(&y)).unwrap()), ["Update y", "Add y"]);
    assert_eq!(messages(&node.log(&r, Some(&z)).unwrap()), ["Remove z", "Rename x to z"]);
    assert!(node.log(&r, Some(&secret("never"))).unwrap().is_empty());
    // Filtered logs are subsequences of the full log, same ids in the same order.
    for s in [&x, &y, &z] {
        let filtered = node.log(&r, Some(s)).unwrap();
        let mut it = all.iter();
        assert!(filtered.iter().all(|f| it.any(|a| a == f)), "log of {s:?} is not a subsequence");
    }
    drop(node);

    let node = Node::open(&t.path, &pass(), Access::Read).unwrap();
    assert_eq!(node.log(&r, None).unwrap(), all, "history after reopening");
    assert!(matches!(node.log(&repo("nope"), None), Err(Error::NotFound { .. })));
}
