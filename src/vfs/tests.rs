//! The filesystem core driven directly with the operation sequences real programs send (as
//! observed with strace through the FUSE mount), without the kernel in between.

use super::*;
use crate::{KdfParams, Passphrase};

const FAST: KdfParams = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };

fn n(s: &str) -> Name {
    Name::new(NameKind::TagEntry, s.as_bytes()).unwrap()
}

struct Fx {
    _dir: tempfile::TempDir,
    vfs: Vfs,
}

/// A node with aws/key = "old" tagged as prod/key, and an untagged aws/plain.
fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::create(&dir.path().join("t.node"), &Passphrase::new(b"pw".to_vec()), FAST).unwrap();
    node.put(&n("aws"), &n("key"), b"old").unwrap();
    node.put(&n("aws"), &n("plain"), b"plain").unwrap();
    node.tag(&n("prod"), &n("key"), &n("aws"), &n("key")).unwrap();
    node.save().unwrap();
    Fx { _dir: dir, vfs: Vfs::new(node, 1000, 1000) }
}

impl Fx {
    fn dir(&mut self, path: &str) -> Ino {
        path.split('/').fold(ROOT_INO, |d, c| self.vfs.lookup(d, c.as_bytes()).unwrap().ino)
    }
    fn ino(&mut self, path: &str) -> Ino {
        let (d, f) = path.rsplit_once('/').unwrap();
        let d = self.dir(d);
        self.vfs.lookup(d, f.as_bytes()).unwrap().ino
    }
    fn read(&mut self, path: &str) -> Vec<u8> {
        let ino = self.ino(path);
        self.vfs.read(ino, 0, 1 << 20).unwrap().to_vec()
    }
    fn commits(&self) -> usize {
        self.vfs.node().log(&n("aws"), None).unwrap().len()
    }
    fn node_value(&self, secret: &str) -> Option<Vec<u8>> {
        self.vfs.node().get(&n("aws"), &n(secret)).ok().map(|d| d.to_vec())
    }
    fn write_new(&mut self, dir: &str, name: &str, data: &[u8]) -> Ino {
        let d = self.dir(dir);
        let (attr, fh) = self.vfs.create(d, name.as_bytes()).unwrap();
        self.vfs.write(attr.ino, 0, data).unwrap();
        self.vfs.flush(attr.ino, fh).unwrap();
        self.vfs.release(attr.ino, fh).unwrap();
        attr.ino
    }
}

#[test]
fn echo_redirect_with_dup_and_two_closes_is_one_commit() {
    let mut f = fx();
    let before = f.commits();
    let ino = f.ino("repos/aws/key");
    let fh = f.vfs.open(ino, true).unwrap(); // O_TRUNC
    f.vfs.flush(ino, fh).unwrap(); // close(3) after dup2
    f.vfs.write(ino, 0, b"x\n").unwrap();
    f.vfs.flush(ino, fh).unwrap();
    f.vfs.release(ino, fh).unwrap();
    assert_eq!(f.commits(), before + 1);
    assert_eq!(f.node_value("key").unwrap(), b"x\n");
}

#[test]
fn two_opens_are_two_saves_even_when_releases_arrive_late() {
    let mut f = fx();
    let before = f.commits();
    let ino = f.ino("repos/aws/key");
    let a = f.vfs.open(ino, true).unwrap();
    f.vfs.write(ino, 0, b"one").unwrap();
    f.vfs.fsync(ino, Some(a)).unwrap();
    f.vfs.flush(ino, a).unwrap();
    // The kernel sends RELEASE asynchronously: the next open can come first.
    let b = f.vfs.open(ino, true).unwrap();
    f.vfs.release(ino, a).unwrap();
    f.vfs.write(ino, 0, b"two").unwrap();
    f.vfs.fsync(ino, Some(b)).unwrap();
    f.vfs.release(ino, b).unwrap();
    assert_eq!(f.commits(), before + 2);
}

#[test]
fn vim_rename_save_keeps_tags_and_is_one_commit() {
    let mut f = fx();
    let before = f.commits();
    let aws = f.dir("repos/aws");
    // vim: rename f → f~, create f, write, fsync, close, unlink f~.
    f.vfs.rename(aws, b"key", aws, b"key~", 0).unwrap();
    assert!(f.vfs.lookup(aws, b"key").is_err());
    let (attr, fh) = f.vfs.create(aws, b"key").unwrap();
    let new = attr.ino;
    f.vfs.write(new, 0, b"new").unwrap();
    f.vfs.fsync(new, Some(fh)).unwrap();
    f.vfs.flush(new, fh).unwrap();
    f.vfs.release(new, fh).unwrap();
    f.vfs.unlink(aws, b"key~").unwrap();
    f.vfs.commit_all().unwrap();
    assert_eq!(f.commits(), before + 1);
    assert_eq!(f.read("tags/prod/key"), b"new");
    assert_eq!(f.ino("tags/prod/key"), f.ino("repos/aws/key"));
    assert_eq!(f.vfs.getattr(new).unwrap().nlink, 2);
    assert!(f.vfs.node().log(&n("aws"), None).unwrap().iter().all(|e| !e.message.contains('~')));
}

#[test]
fn sed_temp_file_renamed_over_is_one_commit_without_the_temp_name() {
    let mut f = fx();
    let before = f.commits();
    let tmp = f.write_new("tags/prod", "sedAbC123", b"edited");
    let prod = f.dir("tags/prod");
    f.vfs.rename(prod, b"sedAbC123", prod, b"key", 0).unwrap();
    f.vfs.commit_all().unwrap();
    assert_eq!(f.commits(), before + 1);
    assert_eq!(f.node_value("key").unwrap(), b"edited");
    assert_eq!(f.ino("repos/aws/key"), tmp, "the secret adopts the renamed inode on every path");
    assert!(f.vfs.node().secrets(&n("aws")).unwrap().iter().all(|s| s.as_bytes() != b"sedAbC123"));
}

#[test]
fn mv_from_another_filesystem_unlink_then_create_keeps_tags() {
    let mut f = fx();
    let before = f.commits();
    let aws = f.dir("repos/aws");
    f.vfs.unlink(aws, b"key").unwrap();
    let prod = f.dir("tags/prod");
    assert!(f.vfs.lookup(prod, b"key").is_err(), "tag entries hide with the unlinked secret");
    f.write_new("repos/aws", "key", b"moved in");
    f.vfs.commit_all().unwrap();
    assert_eq!(f.commits(), before + 1);
    assert_eq!(f.read("tags/prod/key"), b"moved in");
}

#[test]
fn rm_alone_removes_the_secret_and_its_tags_after_the_grace() {
    let mut f = fx();
    let aws = f.dir("repos/aws");
    f.vfs.unlink(aws, b"key").unwrap();
    f.vfs.commit_all().unwrap();
    assert_eq!(f.node_value("key"), None);
    assert!(f.vfs.node().state().tags.get(&n("prod")).unwrap().is_empty());
    let repos = f.dir("repos");
    f.vfs.rmdir(repos, b"aws").unwrap_err();
    f.vfs.unlink(aws, b"plain").unwrap();
    f.vfs.rmdir(repos, b"aws").unwrap();
    assert!(f.vfs.node().repos().is_empty());
}

#[test]
fn scratch_files_never_reach_the_node() {
    let mut f = fx();
    let before = f.commits();
    for name in [".key.swp", "key~", "#key#", "4913"] {
        f.write_new("repos/aws", name, b"scratch");
    }
    f.vfs.commit_all().unwrap();
    assert_eq!(f.commits(), before);
    assert_eq!(f.vfs.node().secrets(&n("aws")).unwrap().len(), 2);
    assert_eq!(f.read("repos/aws/key~"), b"scratch");
}

#[test]
fn a_new_file_in_a_tag_folder_becomes_a_tagged_secret_of_the_tags_repository() {
    let mut f = fx();
    f.write_new("tags/prod", "cert", b"PEM");
    f.vfs.commit_all().unwrap();
    assert_eq!(&f.vfs.node().get(&n("prod"), &n("cert")).unwrap()[..], b"PEM");
    assert_eq!(f.vfs.node().state().tags[&n("prod")][&n("cert")], (n("prod"), n("cert")));
}

#[test]
fn links_renames_and_errors() {
    let mut f = fx();
    let (aws, prod) = (f.dir("repos/aws"), f.dir("tags/prod"));
    let plain = f.ino("repos/aws/plain");
    f.vfs.link(plain, prod, b"p").unwrap();
    assert_eq!(f.vfs.getattr(plain).unwrap().nlink, 2);
    assert_eq!(f.vfs.link(plain, aws, b"again"), Err(FsError::NotPermitted));
    assert_eq!(f.vfs.rename(aws, b"plain", prod, b"x", 0), Err(FsError::CrossDevice));
    assert_eq!(f.vfs.rename(aws, b"plain", aws, b"key", RENAME_NOREPLACE), Err(FsError::Exists));
    assert_eq!(f.vfs.rename(aws, b"plain", aws, b"key", RENAME_EXCHANGE), Err(FsError::Unsupported));
    assert_eq!(f.vfs.mkdir(aws, b"sub").err(), Some(FsError::NotPermitted));
    assert_eq!(f.vfs.symlink(aws, b"link", b"x").err(), Some(FsError::NotPermitted));
    assert_eq!(f.vfs.create(ROOT_INO, b"x").err(), Some(FsError::NotPermitted));
    assert_eq!(f.vfs.lookup(aws, &[b'a'; 256]).err(), Some(FsError::NameTooLong));
    assert_eq!(f.vfs.create(aws, &[b'a'; 256]).err(), Some(FsError::NameTooLong));
    // A secret renamed over another: one commit, its tag entries follow.
    f.vfs.rename(aws, b"plain", aws, b"renamed", 0).unwrap();
    assert_eq!(f.read("tags/prod/p"), b"plain");
    assert_eq!(f.vfs.node().state().tags[&n("prod")][&n("p")], (n("aws"), n("renamed")));
    // Repositories and tags rename as folders.
    let repos = f.dir("repos");
    f.vfs.rename(repos, b"aws", repos, b"cloud", 0).unwrap();
    assert_eq!(f.read("repos/cloud/key"), b"old");
    assert_eq!(f.read("tags/prod/key"), b"old");
}

#[test]
fn an_open_reader_keeps_the_old_content_when_a_secret_is_replaced() {
    let mut f = fx();
    let old = f.ino("repos/aws/key");
    let fh = f.vfs.open(old, false).unwrap();
    let tmp = f.write_new("repos/aws", ".key.tmp", b"new");
    let aws = f.dir("repos/aws");
    f.vfs.rename(aws, b".key.tmp", aws, b"key", 0).unwrap();
    assert_eq!(&f.vfs.read(old, 0, 100).unwrap()[..], b"old");
    assert_eq!(&f.vfs.read(tmp, 0, 100).unwrap()[..], b"new");
    f.vfs.release(old, fh).unwrap();
}

#[test]
fn linking_a_new_file_in_its_grace_period_makes_it_a_tagged_secret() {
    let mut f = fx();
    let ino = f.write_new("repos/aws", "fresh", b"v");
    let prod = f.dir("tags/prod");
    f.vfs.link(ino, prod, b"fresh").unwrap();
    assert_eq!(f.vfs.node().state().tags[&n("prod")][&n("fresh")], (n("aws"), n("fresh")));
    assert_eq!(f.node_value("fresh").unwrap(), b"v");
}

#[test]
fn renaming_a_new_file_to_a_scratch_name_counts_against_the_scratch_caps() {
    let mut f = fx();
    let aws = f.dir("repos/aws");
    for i in 0..scratch::MAX_FILES {
        f.vfs.create(aws, format!(".s{i}~").as_bytes()).unwrap();
    }
    assert_eq!(f.vfs.create(aws, b".more~").unwrap_err(), FsError::NoSpace);
    // A new file with an ordinary name is not scratch; renamed to a scratch name, it would be.
    let (attr, _) = f.vfs.create(aws, b"tmp123").unwrap();
    f.vfs.write(attr.ino, 0, b"x").unwrap();
    assert_eq!(f.vfs.rename(aws, b"tmp123", aws, b".late~", 0).unwrap_err(), FsError::NoSpace);
    // Over an existing scratch file, the count does not grow: allowed.
    f.vfs.rename(aws, b"tmp123", aws, b".s0~", 0).unwrap();
    f.vfs.unlink(aws, b".s1~").unwrap();
    f.vfs.create(aws, b".more~").unwrap();
}
