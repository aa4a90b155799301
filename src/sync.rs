//! Sync between two nodes this process holds open: repositories matched by identity (their
//! root commit), the objects one side lacks copied as they are stored (tree deltas stay
//! deltas), diverged histories joined by one two-parent merge commit ([`crate::merge`]) that
//! both nodes then hold.
//!
//! It works on open [`Node`]s only: no files, no crypto beyond the two nodes' own, no git. The
//! mount daemon runs it inside its filesystem lock (so the mount shows the old or the new
//! content, never a mix), and a pull from a remote reuses [`merge_into`] as is.

use crate::error::{Error, Result};
use crate::format::journal::Record;
use crate::git::{self, delta, Tree};
use crate::merge::{self, MergeMode};
use crate::name::{Name, NameKind};
use crate::node::Node;
use crate::state::Stored;
use git2::{ObjectType, Oid};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

/// What to sync.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these repositories (by name, on either node); every repository when empty.
    pub repos: Vec<Name>,
    /// One way, as a backup into an existing node: only `theirs` changes.
    pub one_way: bool,
}

/// What a sync did, for the user.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per thing worth saying (merges, copies, conflicts, renames, kept changes).
    pub lines: Vec<String>,
    /// Whether anything changed on either node.
    pub changed: bool,
}

impl Report {
    fn say(&mut self, line: String) {
        self.lines.push(line);
    }
}

/// A short label for the node at `path`, for conflict file names and merge messages: its
/// file name without `.node` (`stick` for `/media/usb/stick.node`), with the folder's name
/// before it when that alone would not tell it from `other`.
pub fn label(path: &Path, other: &Path) -> String {
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut raw = stem(path);
    if raw == stem(other) {
        if let Some(dir) = path.parent().and_then(|d| d.file_name()) {
            raw = format!("{}-{raw}", dir.to_string_lossy());
        }
    }
    merge::peer_label(&raw)
}

/// Opens the node at `path` for a sync or a backup into it: exclusive lock, rollback checked
/// and recorded as for the node itself.
pub fn open_peer(path: &Path, pass: &crate::secret::Passphrase) -> Result<Node> {
    let node = Node::open(path, pass, crate::node::Access::Write)?;
    crate::rollback::check(&node)?;
    crate::rollback::record(&node);
    Ok(node)
}

/// A repository's identity: its root commit (`None` while it has no commit).
fn identity(node: &Node, repo: &Name) -> Result<Option<Oid>> {
    node.repo(repo)?.root().map_err(|e| node.corrupt(e))
}

/// Which repository of `theirs` each repository of `ours` is, by identity; a repository
/// without commits pairs with one of the same name.
fn pair_up(ours: &Node, theirs: &Node) -> Result<Vec<(Option<Name>, Option<Name>)>> {
    let mut their_roots: BTreeMap<Oid, Vec<Name>> = BTreeMap::new();
    let mut their_empty = BTreeSet::new();
    for name in theirs.state().repos.keys() {
        match identity(theirs, name)? {
            Some(root) => their_roots.entry(root).or_default().push(name.clone()),
            None => {
                their_empty.insert(name.clone());
            }
        }
    }
    let mut taken = BTreeSet::new();
    let mut pairs = Vec::new();
    for name in ours.state().repos.keys() {
        let root = identity(ours, name)?;
        let candidates: Vec<&Name> = match root {
            Some(root) => their_roots.get(&root).map(|v| v.iter().collect()).unwrap_or_default(),
            None => theirs.state().repos.get_key_value(name).map(|(n, _)| n).into_iter().collect(),
        };
        // An empty repository on their side is filled from ours when the names agree.
        let same_name_empty = their_empty.get(name).filter(|_| root.is_some());
        let pick = candidates
            .iter()
            .copied()
            .find(|n| *n == name && !taken.contains(*n))
            .or_else(|| candidates.iter().copied().find(|n| !taken.contains(*n)))
            .or(same_name_empty.filter(|n| !taken.contains(*n)));
        if let Some(p) = pick {
            taken.insert(p.clone());
        }
        pairs.push((Some(name.clone()), pick.cloned()));
    }
    for name in theirs.state().repos.keys() {
        if !taken.contains(name) {
            // Theirs alone; an empty one of ours with the same name takes it.
            if let Some(slot) = pairs.iter_mut().find(|(o, t)| t.is_none() && o.as_ref() == Some(name)) {
                if ours.repo(name)?.head().is_none() {
                    slot.1 = Some(name.clone());
                    continue;
                }
            }
            pairs.push((None, Some(name.clone())));
        }
    }
    Ok(pairs)
}

/// Syncs `ours` and `theirs` (see the module's documentation). Both are left with queued
/// changes; the caller saves them (theirs first: a crash between the two saves leaves each
/// node at a state before or after the sync).
pub fn sync(ours: &mut Node, theirs: &mut Node, opts: &Options) -> Result<Report> {
    if !opts.one_way {
        ours.writable()?;
    }
    theirs.writable()?;
    let (our_label, their_label) = (label(ours.path(), theirs.path()), label(theirs.path(), ours.path()));
    let mut report = Report::default();
    let wanted = |o: &Option<Name>, t: &Option<Name>| {
        opts.repos.is_empty() || opts.repos.iter().any(|r| Some(r) == o.as_ref() || Some(r) == t.as_ref())
    };
    let pairs = pair_up(ours, theirs)?;
    for r in &opts.repos {
        if !pairs.iter().any(|(o, t)| o.as_ref() == Some(r) || t.as_ref() == Some(r)) {
            return Err(Error::NotFound { what: format!("repository {r} on either node") });
        }
    }
    for (o, t) in pairs.iter().filter(|(o, t)| wanted(o, t)) {
        match (o, t) {
            (Some(o), Some(t)) if opts.one_way => {
                merge_into(theirs, t, ours, o, &our_label, &mut report)?;
                same_config(ours, o, theirs, t, true, &mut report)?;
            }
            (Some(o), Some(t)) => {
                merge_into(ours, o, theirs, t, &their_label, &mut report)?;
                fast_forward(theirs, t, ours, o, &mut report)?;
                same_config(ours, o, theirs, t, false, &mut report)?;
            }
            (Some(o), None) => one_side(ours, o, theirs, &their_label, opts, &mut report)?,
            (None, Some(t)) if !opts.one_way => one_side(theirs, t, ours, &our_label, opts, &mut report)?,
            _ => {}
        }
    }
    // Removals each node knows of travel too, so that a third node cannot bring them back.
    copy_tombstones(ours, theirs, &mut report)?;
    if !opts.one_way {
        copy_tombstones(theirs, ours, &mut report)?;
    }
    report.changed = ours.is_dirty() || theirs.is_dirty();
    Ok(report)
}

/// A repository only `from` holds: removed from `from` too if `to` removed it and `from` has
/// not changed it since; else copied to `to` (unless `to` is a sub-node that does not take
/// new repositories, or `to` removed it after changes `from` never saw).
fn one_side(from: &mut Node, name: &Name, to: &mut Node, to_label: &str, opts: &Options, report: &mut Report) -> Result<()> {
    let head = from.repo(name)?.head();
    // A backup copies what its source holds, whatever the backup removed.
    if let Some(root) = identity(from, name)?.filter(|_| !opts.one_way) {
        if let Some(&removed_at) = to.state().removed.get(&root) {
            if head == Some(removed_at) {
                // Unchanged since the other node removed it: removed here too.
                from.remove_repo(name)?;
                report.say(format!("{name}: removed (as on {to_label})"));
                return Ok(());
            }
            report.say(format!("{name}: kept: changed here since it was removed on {to_label}"));
        }
    }
    if to.state().partial && opts.repos.is_empty() {
        return Ok(()); // A sub-node holds only the repositories it was given (or named).
    }
    let target = free_name(to, name);
    copy_repo(from, name, to, &target)?;
    if &target == name {
        report.say(format!("{name}: copied to {to_label}"));
    } else {
        report.say(format!("{name}: copied to {to_label} as {target} (a different repository there has that name)"));
    }
    Ok(())
}

/// `name`, or `name-2`, `name-3`… : the first name no repository of `node` has.
fn free_name(node: &Node, name: &Name) -> Name {
    if !node.state().repos.contains_key(name) {
        return name.clone();
    }
    (2u32..)
        .find_map(|i| merge::suffixed(name, NameKind::Repo, &format!("-{i}")).filter(|n| !node.state().repos.contains_key(n)))
        .expect("some suffix is free")
}

/// Copies repository `name` of `from`, history and setting, to `to` as `target`.
pub(crate) fn copy_repo(from: &Node, name: &Name, to: &mut Node, target: &Name) -> Result<()> {
    to.record(Record::Repo(target.clone()))?;
    if let Some(head) = from.repo(name)?.head() {
        copy_objects(from, name, to, target, head)?;
        to.record(Record::Head(target.clone(), head))?;
    }
    if from.repo(name)?.merge_mode() == MergeMode::Never {
        to.record(Record::RepoConfig(target.clone(), merge::config_bytes(MergeMode::Never)))?;
    }
    Ok(())
}

/// Records in `to`'s repository `to_repo` every object reachable from commit `tip` of
/// `from`'s repository `from_repo` that it lacks, as `from` holds it. A commit `to` already
/// holds ends the walk down that line (a node holds whole histories).
fn copy_objects(from: &Node, from_repo: &Name, to: &mut Node, to_repo: &Name, tip: Oid) -> Result<()> {
    let records = {
        let (src, dst) = (from.repo(from_repo)?, to.repo(to_repo)?);
        let corrupt = |e| from.corrupt(e);
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        let mut commits = vec![tip];
        let take = |oid: Oid, seen: &mut HashSet<Oid>, records: &mut Vec<Record>| -> Result<bool> {
            if dst.has(oid) || !seen.insert(oid) {
                return Ok(false);
            }
            records.push(match src.stored(oid).ok_or_else(|| corrupt(git::ObjectError::Missing(oid)))? {
                Stored::Loose(z) => Record::Object(to_repo.clone(), oid, z.to_vec()),
                Stored::Delta(d) => Record::Delta(to_repo.clone(), oid, d.to_vec()),
            });
            Ok(true)
        };
        while let Some(c) = commits.pop() {
            if !take(c, &mut seen, &mut records)? {
                continue;
            }
            let commit = src.commit(c).map_err(corrupt)?;
            // The tree, and down its delta chain until a tree `to` holds or one held whole.
            let mut tree = commit.tree;
            while take(tree, &mut seen, &mut records)? {
                match src.stored(tree).expect("just taken") {
                    Stored::Delta(d) => {
                        for blob in delta::blobs(tree, d).map_err(corrupt)? {
                            take(blob, &mut seen, &mut records)?;
                        }
                        tree = delta::base(tree, d).map_err(corrupt)?;
                    }
                    Stored::Loose(_) => {
                        for blob in src.read_tree(tree).map_err(corrupt)?.into_values() {
                            take(blob, &mut seen, &mut records)?;
                        }
                        break;
                    }
                }
            }
            commits.extend(commit.parents);
        }
        records
    };
    for r in records {
        to.record(r)?;
    }
    Ok(())
}

/// Brings `from`'s history of repository `from_repo` into `into`'s `repo`: copies what is
/// missing, then fast-forwards, or merges (one commit with two parents, `Merge from
/// <from_label>`; conflicts beside as `SECRET.conflict-<from_label>`). Returns whether the
/// head of `into` moved.
pub fn merge_into(into: &mut Node, repo: &Name, from: &Node, from_repo: &Name, from_label: &str, report: &mut Report) -> Result<bool> {
    let Some(theirs) = from.repo(from_repo)?.head() else { return Ok(false) };
    let ours = into.repo(repo)?.head();
    if ours == Some(theirs) {
        return Ok(false);
    }
    copy_objects(from, from_repo, into, repo, theirs)?;
    let r = into.repo(repo)?;
    let corrupt = |e| into.corrupt(e);
    let old_tree = r.tree().map_err(corrupt)?.to_tree();
    let Some(ours) = ours else {
        move_head(into, repo, theirs, &old_tree)?;
        report.say(format!("{repo}: took {from_label}'s history"));
        return Ok(true);
    };
    if merge::is_ancestor(r, theirs, ours).map_err(corrupt)? {
        return Ok(false); // Theirs is behind: nothing to take.
    }
    if merge::is_ancestor(r, ours, theirs).map_err(corrupt)? {
        move_head(into, repo, theirs, &old_tree)?;
        report.say(format!("{repo}: took the changes from {from_label}"));
        return Ok(true);
    }
    let base = merge::merge_base(r, ours, theirs).map_err(corrupt)?;
    let base_tree = match base {
        Some(b) => r.read_tree(r.commit(b).map_err(corrupt)?.tree).map_err(corrupt)?,
        None => Tree::new(),
    };
    let their_tree = r.read_tree(r.commit(theirs).map_err(corrupt)?.tree).map_err(corrupt)?;
    let mode = if r.merge_mode() == MergeMode::Never || from.repo(from_repo)?.merge_mode() == MergeMode::Never {
        MergeMode::Never
    } else {
        MergeMode::Lines
    };
    let read = |oid: Oid| r.read(oid, ObjectType::Blob);
    let merged = merge::merge_trees(&base_tree, &old_tree, &their_tree, &read, mode, from_label).map_err(corrupt)?;
    let message = format!("Merge from {from_label}\n");
    into.commit_on(repo, &merged.tree, message.as_bytes(), merged.blobs, &[ours, theirs])?;
    follow_links(into, repo, &old_tree)?;
    report.say(format!("{repo}: merged with {from_label}"));
    for c in &merged.conflicts {
        report.say(format!("{repo}/{c}: conflict: {from_label}'s version is beside ours"));
    }
    for n in &merged.notes {
        report.say(format!("{repo}: {n}"));
    }
    Ok(true)
}

/// Makes `node`'s `repo` hold the same history as `from`'s `from_repo` when it is behind
/// (after [`merge_into`] made `from` the newer of the two).
fn fast_forward(node: &mut Node, repo: &Name, from: &Node, from_repo: &Name, _report: &mut Report) -> Result<()> {
    let Some(head) = from.repo(from_repo)?.head() else { return Ok(()) };
    if node.repo(repo)?.head() == Some(head) {
        return Ok(());
    }
    copy_objects(from, from_repo, node, repo, head)?;
    let old_tree = node.repo(repo)?.tree().map_err(|e| node.corrupt(e))?.to_tree();
    move_head(node, repo, head, &old_tree)
}

/// Moves `repo`'s head to `head` (present), and its tag entries along (see [`follow_links`]).
fn move_head(node: &mut Node, repo: &Name, head: Oid, old_tree: &Tree) -> Result<()> {
    node.record(Record::Head(repo.clone(), head))?;
    follow_links(node, repo, old_tree)
}

/// Tags stay node-local, but never point at nothing: after `repo`'s tree changed from
/// `old_tree`, an entry whose secret is gone follows it to its one new name if it was renamed
/// (the same content, at a name that is new), else is removed.
fn follow_links(node: &mut Node, repo: &Name, old_tree: &Tree) -> Result<()> {
    let tree = node.repo(repo)?.tree().map_err(|e| node.corrupt(e))?.to_tree();
    let mut changes = Vec::new();
    for (tag, entries) in &node.state().tags {
        for (entry, (r, secret)) in entries {
            if r != repo || tree.contains_key(secret) {
                continue;
            }
            let moved = old_tree.get(secret).and_then(|blob| {
                let mut new_names = tree.iter().filter(|(n, b)| *b == blob && !old_tree.contains_key(*n));
                match (new_names.next(), new_names.next()) {
                    (Some((n, _)), None) => Some(n.clone()),
                    _ => None,
                }
            });
            changes.push(match moved {
                Some(to) => Record::Link { tag: tag.clone(), entry: entry.clone(), repo: repo.clone(), secret: to },
                None => Record::RemoveLink(tag.clone(), entry.clone()),
            });
        }
    }
    for c in changes {
        node.record(c)?;
    }
    Ok(())
}

/// A repository set to `merge never` on one side is set so on the other too.
fn same_config(ours: &mut Node, o: &Name, theirs: &mut Node, t: &Name, one_way: bool, report: &mut Report) -> Result<()> {
    let (mine, yours) = (ours.repo(o)?.merge_mode(), theirs.repo(t)?.merge_mode());
    if mine == yours {
        return Ok(());
    }
    if mine == MergeMode::Never {
        theirs.record(Record::RepoConfig(t.clone(), merge::config_bytes(MergeMode::Never)))?;
    } else if !one_way {
        ours.record(Record::RepoConfig(o.clone(), merge::config_bytes(MergeMode::Never)))?;
    } else {
        return Ok(());
    }
    report.say(format!("{o}: merge never (set on one of the nodes)"));
    Ok(())
}

/// Records in `to` the removals `from` knows of that `to` does not, for repositories `to`
/// does not hold (one it holds was settled by [`one_side`]).
fn copy_tombstones(from: &Node, to: &mut Node, _report: &mut Report) -> Result<()> {
    let held: HashSet<Oid> = to.state().repos.keys().filter_map(|n| identity(to, n).ok().flatten()).collect();
    let missing: Vec<(Oid, Oid)> = from
        .state()
        .removed
        .iter()
        .filter(|(root, head)| !held.contains(root) && to.state().removed.get(root) != Some(head))
        .map(|(r, h)| (*r, *h))
        .collect();
    for (root, head) in missing {
        to.record(Record::Removed { root, head })?;
    }
    Ok(())
}

/// The unresolved conflict files of `repo` (or of every repository): secrets named
/// `NAME.conflict-LABEL` (or `…-N`) beside a secret `NAME`.
pub fn conflicts(node: &Node, repo: Option<&Name>) -> Result<Vec<(Name, Name)>> {
    let repos: Vec<Name> = match repo {
        Some(r) => vec![node.repo(r).map(|_| r.clone())?],
        None => node.repos(),
    };
    let mut out = Vec::new();
    for r in repos {
        let names = node.secrets(&r)?;
        let set: HashSet<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        for n in &names {
            let b = n.as_bytes();
            let is_conflict =
                (0..b.len()).filter(|&i| b[i..].starts_with(b".conflict-")).any(|i| set.contains(&b[..i]) && i + 10 < b.len());
            if is_conflict {
                out.push((r.clone(), n.clone()));
            }
        }
    }
    Ok(out)
}

/// Which repositories of `node` a backup `--only` takes: each `REPO`, and for `tag:TAG` every
/// repository the tag's entries point into.
pub fn select(node: &Node, only: &[String]) -> Result<Vec<Name>> {
    let mut out = BTreeSet::new();
    for o in only {
        if let Some(tag) = o.strip_prefix("tag:") {
            let t = Name::new(NameKind::Tag, tag.as_bytes())?;
            let entries = node.state().tags.get(&t).ok_or_else(|| Error::NotFound { what: format!("tag {t}") })?;
            out.extend(entries.values().map(|(r, _)| r.clone()));
        } else {
            let r = Name::new(NameKind::Repo, o.as_bytes())?;
            node.repo(&r)?;
            out.insert(r);
        }
    }
    Ok(out.into_iter().collect())
}

/// Fills the new, empty node `dest` from `node`: the repositories `only` names (every one when
/// `None`; with a list, `dest` is a sub-node, marked so), with their histories and settings, and the
/// tags whose entries point into them (only those entries).
pub fn fill_backup(node: &Node, dest: &mut Node, only: Option<&[Name]>) -> Result<Report> {
    let mut report = Report::default();
    let repos: Vec<Name> = only.map_or_else(|| node.repos(), <[Name]>::to_vec);
    for r in &repos {
        copy_repo(node, r, dest, r)?;
    }
    for (tag, entries) in &node.state().tags {
        let kept: Vec<_> = entries.iter().filter(|(_, (r, _))| repos.contains(r)).collect();
        if kept.is_empty() {
            continue;
        }
        dest.record(Record::Tag(tag.clone()))?;
        for (entry, (repo, secret)) in kept {
            dest.record(Record::Link { tag: tag.clone(), entry: entry.clone(), repo: repo.clone(), secret: secret.clone() })?;
        }
    }
    if only.is_none() {
        // A full backup is the same node in another file: its identity (so that a restored
        // backup reads what was shared with it) and the removals it knows of.
        if let Some(k) = &node.state().identity {
            dest.record(Record::Identity(k.to_vec()))?;
        }
        for (root, head) in &node.state().removed {
            dest.record(Record::Removed { root: *root, head: *head })?;
        }
    }
    if only.is_some() {
        dest.record(Record::Partial)?;
    }
    report.say(format!("{} repositor{} copied", repos.len(), if repos.len() == 1 { "y" } else { "ies" }));
    report.changed = true;
    Ok(report)
}
