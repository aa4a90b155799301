//! The FUSE adapter: translates kernel requests to [`Vfs`] calls and back. No decisions here.

use crate::Shared;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use polykey::vfs::{Attr, FsError, Ino, Invalidation, Kind, SetAttr};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime};

/// Attribute cache lifetime (files and folders), and entry lifetime for folders. CLI commands
/// through the daemon invalidate what they change; a link count changed behind the kernel's
/// back (tag entries hidden by an unlink) may show for up to this long.
const TTL: Duration = Duration::from_secs(1);
/// Entry lifetime for files: zero. A file name's inode can be handed over (a rename over a
/// secret moves the secret, and its tag entries, to the renamed inode); an invalidation sent
/// after the reply could lose the race with the next open, so file names are looked up afresh.
/// Their attributes still live [`TTL`]: the answer to a LOOKUP is fresh, and without it the
/// kernel would follow every LOOKUP with a GETATTR for its permission check.
const FILE_ENTRY_TTL: Duration = Duration::ZERO;

fn entry_ttl(a: &Attr) -> &'static Duration {
    if a.kind == Kind::Dir {
        &TTL
    } else {
        &FILE_ENTRY_TTL
    }
}

/// Replies with an entry: attributes for [`TTL`], the name for [`entry_ttl`].
fn reply_entry(reply: ReplyEntry, a: &Attr) {
    reply.entry_with_ttls(&TTL, entry_ttl(a), &file_attr(a), Generation(0));
}

/// Keep the page cache across opens: content changes the kernel did not make itself (CLI
/// commands through the daemon) are invalidated explicitly (`inval_inode`).
const FOPEN_KEEP_CACHE: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;
/// No FLUSH on close (kernel 5.19+, ignored before): for read-only opens, which have nothing
/// to commit, this saves a round trip per open/close.
const FOPEN_NOFLUSH: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

/// The filesystem as fuser sees it.
pub struct FuseFs {
    shared: Shared,
    destroyed: Sender<()>,
    owner: u32,
}

impl FuseFs {
    pub fn new(shared: Shared, destroyed: Sender<()>) -> Self {
        FuseFs { shared, destroyed, owner: polykey::runtime::euid() }
    }

    /// [`FuseFs::with`] for a request by path, answered EACCES unless it comes from the owner.
    /// The kernel (the mount has no `allow_other`) and fuser (`SessionACL::Owner`) already
    /// refuse every other user, root included; this is the daemon's own check behind them, so
    /// access stays owner-only whatever the mount options. Requests on open handles (read, write, readdir, fsync, release) go through `with`
    /// unchecked, as the kernel may send them without the caller's uid.
    fn by_owner<T>(&self, req: &Request, f: impl FnOnce(&mut polykey::vfs::Vfs) -> Result<T, FsError>) -> Result<T, Errno> {
        if req.uid() != self.owner {
            return Err(Errno::EACCES);
        }
        self.with(f).map_err(|e| errno(&e))
    }

    /// Runs `f` on the filesystem core. Invalidations it asks for are dropped: file names have
    /// a zero entry lifetime and content changes through the mount stay on the same inode, so
    /// nothing a FUSE request does needs one; and sending one from the daemon can block it in
    /// the kernel behind a lock held by a process waiting for this very daemon (after a kill -9,
    /// that left the mount hung for good).
    fn with<T>(&self, f: impl FnOnce(&mut polykey::vfs::Vfs) -> T) -> T {
        self.shared.touch();
        let mut vfs = self.shared.vfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = f(&mut vfs);
        vfs.take_invalidations();
        out
    }
}

/// The errno for each core error kind.
pub fn errno(e: &FsError) -> Errno {
    Errno::from_i32(match e {
        FsError::NotFound => libc::ENOENT,
        FsError::Exists => libc::EEXIST,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::InvalidName | FsError::Unsupported => libc::EINVAL,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::NotPermitted => libc::EPERM,
        FsError::CrossDevice => libc::EXDEV,
        FsError::TooLarge => libc::EFBIG,
        FsError::NoSpace => libc::ENOSPC,
        FsError::Io(msg) => {
            crate::log(&format!("I/O error: {msg}"));
            libc::EIO
        }
    })
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
            Kind::Symlink => FileType::Symlink,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // O_TRUNC then arrives with open, so truncate-and-write is one logical save.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn destroy(&mut self) {
        let _ = self.destroyed.send(());
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.by_owner(req, |v| v.lookup(parent.0, name.as_bytes())) {
            Ok(a) => reply_entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        self.with(|v| v.forget(ino.0));
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.by_owner(req, |v| v.getattr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr { size, mtime: mtime.map(time), mode, uid, gid };
        match self.by_owner(req, |v| v.setattr(ino.0, set)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.by_owner(req, |v| v.readlink(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, _rdev: u32, reply: ReplyEntry) {
        // EACCES for another user, else EPERM: special files have no place in the tree.
        reply.error(self.by_owner(req, |_| Err::<(), _>(FsError::NotPermitted)).err().unwrap_or(Errno::EPERM));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        match self.by_owner(req, |v| v.mkdir(parent.0, name.as_bytes())) {
            Ok(a) => reply_entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.by_owner(req, |v| v.unlink(parent.0, name.as_bytes())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.by_owner(req, |v| v.rmdir(parent.0, name.as_bytes())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        match self.by_owner(req, |v| v.symlink(parent.0, link_name.as_bytes(), target.as_os_str().as_bytes())) {
            Ok(a) => reply_entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.by_owner(req, |v| v.rename(parent.0, name.as_bytes(), newparent.0, newname.as_bytes(), flags.bits())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match self.by_owner(req, |v| v.link(ino.0, newparent.0, newname.as_bytes())) {
            Ok(a) => reply_entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let flags = flags.0;
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        let open_flags = if read_only { FOPEN_KEEP_CACHE | FOPEN_NOFLUSH } else { FOPEN_KEEP_CACHE };
        let pid = req.pid();
        match self.by_owner(req, |v| v.open(ino.0, flags & libc::O_TRUNC != 0).inspect(|fh| v.set_owner(*fh, pid))) {
            Ok(fh) => reply.opened(FileHandle(fh), open_flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|v| v.read(ino.0, offset, size)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|v| v.write(ino.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let pid = req.pid();
        match self.with(|v| v.flush_by(ino.0, fh.0, pid)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.with(|v| v.release(ino.0, fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.with(|v| v.fsync(ino.0, Some(fh.0))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Folder listings are cached by the kernel (`FOPEN_CACHE_DIR`, kept across opens with
    /// `FOPEN_KEEP_CACHE`) until it changes the folder itself or sees its mtime move
    /// (`Vfs::getattr` moves it whenever the listing changed, whatever changed it); commands
    /// through the control socket invalidate the folders they change. Not ENOSYS (the kernel's
    /// zero-message opendir): fusermount3's auto_unmount decides that a mount is dead by
    /// opening its root and getting ENOTCONN, which an opendir that never asks the daemon
    /// doesn't give, so a kill -9 would leave the mount behind.
    fn opendir(&self, req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.by_owner(req, |_| Ok(())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.with(|v| v.readdir(ino.0)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let dots = [(ino.0, Kind::Dir, b".".to_vec()), (ino.0, Kind::Dir, b"..".to_vec())];
        for (i, (ino, kind, name)) in dots.into_iter().chain(entries).enumerate().skip(offset as usize) {
            let kind = match kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
                Kind::Symlink => FileType::Symlink,
            };
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.with(|v| v.fsync(ino.0, None)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.by_owner(req, |v| Ok(v.statfs())) {
            Ok(s) => reply.statfs(s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize),
            Err(e) => reply.error(e),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, _flags: i32, reply: ReplyCreate) {
        let pid = req.pid();
        match self.by_owner(req, |v| v.create(parent.0, name.as_bytes()).inspect(|(_, fh)| v.set_owner(*fh, pid))) {
            Ok((a, fh)) => reply.created(entry_ttl(&a), &file_attr(&a), Generation(0), FileHandle(fh), FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }
}

/// Tells the kernel to drop one cache entry (ENOENT: it had nothing cached, fine).
pub fn notify(notifier: &fuser::Notifier, inv: &Invalidation) {
    let _ = match inv {
        Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino as Ino), 0, 0),
        Invalidation::Entry(parent, name) => notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name)),
    };
}
