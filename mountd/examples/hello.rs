//! A minimal FUSE filesystem (one read-only file), the floor for the mount benchmark: what any
//! FUSE round trip costs on this machine. Modelled on fuser's `hello` example, with the same
//! one-second entry and attribute cache lifetime.
//!
//! Usage: hello MOUNTPOINT (unmount with fusermount3 -u).

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, Request,
};
use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(1);
const TEXT: &[u8] = b"Hello World!\n";

fn attr(ino: u64) -> FileAttr {
    let (kind, perm, size) = if ino == 1 { (FileType::Directory, 0o755, 0) } else { (FileType::RegularFile, 0o644, TEXT.len() as u64) };
    FileAttr {
        ino: INodeNo(ino),
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
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == 1 && name == "hello.txt" {
            reply.entry(&TTL, &attr(2), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }
    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino.0 {
            1 | 2 => reply.attr(&TTL, &attr(ino.0)),
            _ => reply.error(Errno::ENOENT),
        }
    }
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        _size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 == 2 {
            reply.data(&TEXT[(offset as usize).min(TEXT.len())..]);
        } else {
            reply.error(Errno::ENOENT);
        }
    }
    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino.0 != 1 {
            return reply.error(Errno::ENOENT);
        }
        for (i, (ino, kind, name)) in
            [(1, FileType::Directory, "."), (1, FileType::Directory, ".."), (2, FileType::RegularFile, "hello.txt")]
                .into_iter()
                .enumerate()
                .skip(offset as usize)
        {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() {
    let mountpoint = std::env::args_os().nth(1).expect("usage: hello MOUNTPOINT");
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::RO, fuser::MountOption::FSName("hello".into()), fuser::MountOption::AutoUnmount];
    config.acl = fuser::SessionACL::RootAndOwner;
    fuser::mount(Hello, mountpoint, &config).expect("mount");
}
