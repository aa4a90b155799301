//! A minimal FUSE filesystem (one read-only file), the floor for the mount benchmark: what any
//! FUSE round trip costs on this machine. Modelled on fuser's `hello` example, with the same
//! one-second entry and attribute cache lifetime.
//!
//! Usage: hello MOUNTPOINT (unmount with fusermount3 -u).

use fuser::{FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, Request};
use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(1);
const TEXT: &[u8] = b"Hello World!\n";

fn attr(ino: u64) -> FileAttr {
    let (kind, perm, size) = if ino == 1 { (FileType::Directory, 0o755, 0) } else { (FileType::RegularFile, 0o644, TEXT.len() as u64) };
    FileAttr {
        ino,
        size,
        blocks: 1,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 512,
    }
}

struct Hello;

impl Filesystem for Hello {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == 1 && name == "hello.txt" {
            reply.entry(&TTL, &attr(2), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }
    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match ino {
            1 | 2 => reply.attr(&TTL, &attr(ino)),
            _ => reply.error(libc::ENOENT),
        }
    }
    fn read(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, _size: u32, _flags: i32, _lock: Option<u64>, reply: ReplyData) {
        if ino == 2 {
            reply.data(&TEXT[(offset as usize).min(TEXT.len())..]);
        } else {
            reply.error(libc::ENOENT);
        }
    }
    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        if ino != 1 {
            return reply.error(libc::ENOENT);
        }
        for (i, (ino, kind, name)) in
            [(1, FileType::Directory, "."), (1, FileType::Directory, ".."), (2, FileType::RegularFile, "hello.txt")]
                .into_iter()
                .enumerate()
                .skip(offset as usize)
        {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() {
    let mountpoint = std::env::args_os().nth(1).expect("usage: hello MOUNTPOINT");
    let options = [fuser::MountOption::RO, fuser::MountOption::FSName("hello".into()), fuser::MountOption::AutoUnmount];
    fuser::mount2(Hello, mountpoint, &options).expect("mount");
}
