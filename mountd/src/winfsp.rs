//! The WinFSP adapter (Windows): translates WinFSP's requests to [`Vfs`] calls and back, as
//! `fuse.rs` does for FUSE. It decides nothing the core decides; the few checks here are the
//! ones Windows' request shapes force (see `set_delete`).
//!
//! Written against the `winfsp` crate 0.13.2 (+winfsp-2.1) and `windows` 0.61, read from their
//! sources; it has not been compiled or run (the project builds on Linux). Before a Windows
//! build links, one more file is needed, because WinFSP's DLL must be delay-loaded and only the
//! final crate's build script can pass that to the linker:
//!
//! ```text
//! # mountd/Cargo.toml
//! [target.'cfg(windows)'.build-dependencies]
//! winfsp = "0.13.2"
//! # mountd/build.rs
//! fn main() {
//!     if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
//!         winfsp::build::winfsp_link_delayload();
//!     }
//! }
//! ```
//!
//! With the `system` feature, building needs WinFSP installed with its developer files (its
//! headers and import library are found through the registry), an MSVC target, and libclang
//! for winfsp-sys's bindgen; running needs WinFSP installed (its DLL is found the same way).
//!
//! **Paths.** WinFSP names files by full path (`\repos\aws\key`); each request resolves it
//! component by component with [`Vfs::lookup`] from [`ROOT_INO`], so the core stays the only
//! place that knows the tree. Names are UTF-16 on Windows and bytes in the core: a name that is
//! not UTF-8 (made on Linux) is listed lossily and cannot be opened from Windows, nor can a name
//! holding a character Windows forbids (`\ : * ? " < > |`). Lookups are case-sensitive, as in
//! the core.
//!
//! **Tags.** WinFSP has no hard links, so `tags\<tag>\<entry>` is not a link to the secret as
//! on Unix but a plain file that *is* the secret: same content, same file ID (the index number
//! is the inode), written through either path alike; the link count shows 0 (WinFSP's
//! "unknown"). Deleting a tag entry untags; a new file in a tag folder becomes a secret of the
//! repository named like the tag (the core's rule); moving a secret between `repos` and `tags`
//! is refused (`STATUS_NOT_SAME_DEVICE`, so Explorer copies instead). Tagging an existing
//! secret needs `polykey tag`, which is not reachable while mounted on Windows (below).
//!
//! **Saves.** CloseHandle reaches the core as FUSE's `flush` does (WinFSP's Cleanup), so each
//! close commits, as on Unix; but a failure to save cannot fail CloseHandle as it fails close
//! with EIO: it is logged, and the change is kept and retried.
//!
//! **Not on Windows yet** (each said in the log or below, not replaced by a guess): the control
//! socket (`polykey unmount`, `status`, and CLI commands during a mount: `src/runtime.rs` is
//! Unix-only; a named-pipe channel is to be written) and so the mount record; memory locking
//! and the other hardening in `sys.rs`; the log file in the runtime folder (the log stays on
//! standard error); detaching from the console in the background (the parent must start this
//! process detached). Stopping is Ctrl-C, Ctrl-Break or closing the console, logging off or
//! shutting down; a killed process loses at most the last [`polykey::vfs::GRACE`] of changes to
//! files still open, as on Unix.

// FFI with Windows: the console control handler, the process token's user SID, the security
// descriptor, and copying it into WinFSP's untyped buffers. Nothing else here is unsafe.
#![allow(unsafe_code)]

use crate::{log, parse_args, report, Args, Event, Shared, State, TICK};
use polykey::vfs::{Attr, Fh, FsError, Ino, Kind, SetAttr, Vfs, RENAME_NOREPLACE, ROOT_INO};
use std::ffi::c_void;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use windows::core::{BOOL, HSTRING, PWSTR};
use windows::Win32::Foundation::{
    CloseHandle, LocalFree, HANDLE, HLOCAL, NTSTATUS, STATUS_ACCESS_DENIED, STATUS_BUFFER_OVERFLOW, STATUS_DIRECTORY_NOT_EMPTY,
    STATUS_DISK_FULL, STATUS_END_OF_FILE, STATUS_FILE_IS_A_DIRECTORY, STATUS_FILE_TOO_LARGE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_A_DIRECTORY, STATUS_NOT_SAME_DEVICE, STATUS_OBJECT_NAME_COLLISION, STATUS_OBJECT_NAME_INVALID, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_OBJECT_PATH_NOT_FOUND, STATUS_UNEXPECTED_IO_ERROR,
};
use windows::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows::Win32::Security::{
    GetSecurityDescriptorLength, GetTokenInformation, TokenUser, PSECURITY_DESCRIPTOR, TOKEN_QUERY, TOKEN_USER,
};
use windows::Win32::Storage::FileSystem::{FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL};
use windows::Win32::System::Console::{SetConsoleCtrlHandler, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT};
use windows::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
use winfsp::constants::FspCleanupFlags;
use winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext, OpenFileInfo, VolumeInfo, WideNameInfo,
};
use winfsp::host::{FileSystemHost, FineGuard, VolumeParams};
use winfsp::{FspError, U16CStr};

/// NT create options (ntifs.h), as WinFSP passes them to `open` and `create`.
const FILE_DIRECTORY_FILE: u32 = 0x0000_0001;
const FILE_NON_DIRECTORY_FILE: u32 = 0x0000_0040;
/// FILETIME (100 ns ticks since 1601) of the Unix epoch.
const UNIX_EPOCH_FILETIME: u64 = 116_444_736_000_000_000;
const VOLUME_LABEL: &str = "polykey";
/// How long a console close, logoff or shutdown handler holds the process for the write-out.
/// Windows ends the process sooner (about 5 s after a close); this only bounds the wait.
const FINAL_WAIT: Duration = Duration::from_secs(20);

/// The NTSTATUS for each core error kind.
pub fn ntstatus(e: &FsError) -> NTSTATUS {
    match e {
        FsError::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
        FsError::Exists => STATUS_OBJECT_NAME_COLLISION,
        FsError::NotEmpty => STATUS_DIRECTORY_NOT_EMPTY,
        FsError::NotDir => STATUS_NOT_A_DIRECTORY,
        FsError::IsDir => STATUS_FILE_IS_A_DIRECTORY,
        FsError::InvalidName | FsError::NameTooLong => STATUS_OBJECT_NAME_INVALID,
        FsError::NotPermitted => STATUS_ACCESS_DENIED,
        FsError::CrossDevice => STATUS_NOT_SAME_DEVICE,
        FsError::Unsupported => STATUS_INVALID_PARAMETER,
        FsError::TooLarge => STATUS_FILE_TOO_LARGE,
        FsError::NoSpace => STATUS_DISK_FULL,
        FsError::Io(msg) => {
            log(&format!("I/O error: {msg}"));
            STATUS_UNEXPECTED_IO_ERROR
        }
    }
}

fn nt(status: NTSTATUS) -> FspError {
    FspError::NTSTATUS(status.0)
}

fn fsp(e: FsError) -> FspError {
    nt(ntstatus(&e))
}

/// One open handle. WinFSP boxes one per open (`VolumeParams::new` sets that mode) and gives
/// it back to `close`.
pub struct Handle {
    ino: Ino,
    /// The core's open handle of a file; none for a folder (the core has no folder handles).
    fh: Option<Fh>,
    /// The folder listing WinFSP pages through (unused for files).
    dir_buffer: DirBuffer,
}

impl Handle {
    fn new(ino: Ino, fh: Option<Fh>) -> Handle {
        Handle { ino, fh, dir_buffer: DirBuffer::new() }
    }

    fn is_dir(&self) -> bool {
        self.fh.is_none()
    }
}

/// The filesystem as WinFSP sees it.
pub struct PolykeyFs {
    shared: Shared,
    events: Sender<Event>,
    /// The owner-only security descriptor every file and folder shows (self-relative).
    security: Vec<u8>,
    /// Open file handles (not folders), so stopping can wait for them as a lazy unmount does.
    open_files: Arc<AtomicUsize>,
}

impl PolykeyFs {
    /// Runs `f` on the filesystem core.
    fn with<T>(&self, f: impl FnOnce(&mut Vfs) -> T) -> T {
        self.shared.touch();
        let mut vfs = self.shared.vfs.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut vfs);
        // Nothing to invalidate: with FileInfoTimeout 0 WinFSP caches no names or attributes,
        // and the cache manager is off. Drained so they do not pile up.
        drop(vfs.take_invalidations());
        out
    }
}

/// A Windows path as the core's name components (`\` is the root: none).
fn components(path: &U16CStr) -> Result<Vec<Vec<u8>>, FspError> {
    let s = path.to_string().map_err(|_| nt(STATUS_OBJECT_NAME_INVALID))?;
    Ok(s.split('\\').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()).collect())
}

/// Walks `comps` from the root.
fn resolve(vfs: &mut Vfs, comps: &[Vec<u8>]) -> Result<Attr, FspError> {
    let mut attr = vfs.getattr(ROOT_INO).map_err(fsp)?;
    for (i, c) in comps.iter().enumerate() {
        attr = match vfs.lookup(attr.ino, c) {
            Ok(a) => a,
            // Windows tells a missing or non-folder step on the way from a missing last name.
            Err(FsError::NotFound) if i + 1 < comps.len() => return Err(nt(STATUS_OBJECT_PATH_NOT_FOUND)),
            Err(FsError::NotDir) => return Err(nt(STATUS_OBJECT_PATH_NOT_FOUND)),
            Err(e) => return Err(fsp(e)),
        };
    }
    Ok(attr)
}

/// The folder that holds `path`, and the last name.
fn parent_of(vfs: &mut Vfs, path: &U16CStr) -> Result<(Ino, Vec<u8>), FspError> {
    let mut comps = components(path)?;
    let name = comps.pop().ok_or(nt(STATUS_ACCESS_DENIED))?; // The root itself.
    let parent = resolve(vfs, &comps)?;
    if parent.kind != Kind::Dir {
        return Err(nt(STATUS_OBJECT_PATH_NOT_FOUND));
    }
    Ok((parent.ino, name))
}

fn filetime(t: SystemTime) -> u64 {
    let ticks = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::from(UNIX_EPOCH_FILETIME) + (d.as_nanos() / 100) as i128,
        Err(e) => i128::from(UNIX_EPOCH_FILETIME) - (e.duration().as_nanos() / 100) as i128,
    };
    u64::try_from(ticks.max(0)).unwrap_or(u64::MAX)
}

/// A FILETIME from Windows; `None` for 0 ("leave as is") and the negative special values.
fn system_time(ft: u64) -> Option<SystemTime> {
    if ft == 0 || ft > i64::MAX as u64 {
        return None;
    }
    let since = |ticks: u64| Duration::from_secs(ticks / 10_000_000) + Duration::from_nanos(ticks % 10_000_000 * 100);
    if ft >= UNIX_EPOCH_FILETIME {
        UNIX_EPOCH.checked_add(since(ft - UNIX_EPOCH_FILETIME))
    } else {
        UNIX_EPOCH.checked_sub(since(UNIX_EPOCH_FILETIME - ft))
    }
}

fn attributes(a: &Attr) -> u32 {
    // A scratch symlink (only made through FUSE) shows as a file; it cannot be opened here.
    if a.kind == Kind::Dir {
        FILE_ATTRIBUTE_DIRECTORY.0
    } else {
        FILE_ATTRIBUTE_NORMAL.0
    }
}

fn fill(info: &mut FileInfo, a: &Attr) {
    info.file_attributes = attributes(a);
    info.reparse_tag = 0;
    info.file_size = a.size;
    info.allocation_size = a.size.div_ceil(4096) * 4096;
    info.creation_time = filetime(a.ctime);
    info.last_access_time = filetime(a.mtime);
    info.last_write_time = filetime(a.mtime);
    info.change_time = filetime(a.ctime);
    // The same inode on every path: a secret and its tag entries share a file ID.
    info.index_number = a.ino;
    info.hard_links = 0; // WinFSP: always 0 (hard links are not implemented).
    info.ea_size = 0;
}

/// Copies the security descriptor into WinFSP's buffer if it fits.
fn copy_descriptor(sd: &[u8], buf: &mut [c_void]) -> bool {
    if buf.len() < sd.len() {
        return false;
    }
    // SAFETY: `buf` is a writable byte buffer (`c_void` is one byte) at least `sd.len()` long,
    // and the two do not overlap (`sd` is ours).
    unsafe { std::ptr::copy_nonoverlapping(sd.as_ptr(), buf.as_mut_ptr().cast::<u8>(), sd.len()) };
    true
}

impl FileSystemContext for PolykeyFs {
    type FileContext = Handle;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        security_descriptor: Option<&mut [c_void]>,
        _reparse_point_resolver: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> winfsp::Result<FileSecurity> {
        let comps = components(file_name)?;
        let attr = self.with(|v| resolve(v, &comps))?;
        // Too small a buffer still gets the size needed, as the crate's own memfs port does
        // (an error would not carry it); WinFSP's first buffer (1 KiB) holds ours (~100 bytes).
        if let Some(buf) = security_descriptor {
            copy_descriptor(&self.security, buf);
        }
        Ok(FileSecurity { reparse: false, sz_security_descriptor: self.security.len() as u64, attributes: attributes(&attr) })
    }

    fn open(&self, file_name: &U16CStr, create_options: u32, _granted_access: u32, file_info: &mut OpenFileInfo) -> winfsp::Result<Handle> {
        let comps = components(file_name)?;
        let (attr, fh) = self.with(|v| -> winfsp::Result<(Attr, Option<Fh>)> {
            let attr = resolve(v, &comps)?;
            let dir = attr.kind == Kind::Dir;
            if dir && create_options & FILE_NON_DIRECTORY_FILE != 0 {
                return Err(nt(STATUS_FILE_IS_A_DIRECTORY));
            }
            if !dir && create_options & FILE_DIRECTORY_FILE != 0 {
                return Err(nt(STATUS_NOT_A_DIRECTORY));
            }
            let fh = if dir { None } else { Some(v.open(attr.ino, false).map_err(fsp)?) };
            Ok((attr, fh))
        })?;
        if fh.is_some() {
            self.open_files.fetch_add(1, Ordering::SeqCst);
        }
        fill(file_info.as_mut(), &attr);
        Ok(Handle::new(attr.ino, fh))
    }

    /// Creates and opens. The requested attributes, security descriptor and allocation size
    /// are not kept: every entry shows the owner-only descriptor, and the core has no
    /// preallocation.
    fn create(
        &self,
        file_name: &U16CStr,
        create_options: u32,
        _granted_access: u32,
        _file_attributes: u32,
        _security_descriptor: Option<&[c_void]>,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        _extra_buffer_is_reparse_point: bool,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<Handle> {
        let dir = create_options & FILE_DIRECTORY_FILE != 0;
        let (attr, fh) = self.with(|v| -> winfsp::Result<(Attr, Option<Fh>)> {
            let (parent, name) = parent_of(v, file_name)?;
            if dir {
                Ok((v.mkdir(parent, &name).map_err(fsp)?, None))
            } else {
                // `Vfs::create` also opens the new file, as FUSE's create does.
                let (attr, fh) = v.create(parent, &name).map_err(fsp)?;
                Ok((attr, Some(fh)))
            }
        })?;
        if fh.is_some() {
            self.open_files.fetch_add(1, Ordering::SeqCst);
        }
        fill(file_info.as_mut(), &attr);
        Ok(Handle::new(attr.ino, fh))
    }

    /// CREATE_ALWAYS or TRUNCATE_EXISTING on an existing file, after `open`: it is emptied.
    /// Like O_TRUNC on Unix, the truncate and the writes that follow are one save (the file is
    /// open, so the core commits them together at close).
    fn overwrite(
        &self,
        context: &Handle,
        _file_attributes: u32,
        _replace_file_attributes: bool,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        let attr = self.with(|v| v.setattr(context.ino, SetAttr { size: Some(0), ..SetAttr::default() })).map_err(fsp)?;
        fill(file_info, &attr);
        Ok(())
    }

    /// CloseHandle: the close(2) of Unix, so the FUSE `flush`: the open's changes are committed
    /// and saved now. A failure cannot reach the application here (WinFSP's Cleanup returns
    /// nothing), unlike EIO from close on Unix; it is logged, and the change is kept and
    /// retried by the tick. Deletion (delete-on-close, or a delete disposition set earlier)
    /// also happens here on Windows. WinFSP sends Cleanup for every handle, since
    /// `post_cleanup_when_modified_only` is left off.
    fn cleanup(&self, context: &Handle, file_name: Option<&U16CStr>, flags: u32) {
        let delete = file_name.filter(|_| FspCleanupFlags::FspCleanupDelete.is_flagged(flags));
        let r = self.with(|v| -> winfsp::Result<()> {
            let flushed = match context.fh {
                Some(fh) => v.flush(context.ino, fh).map_err(fsp),
                None => Ok(()),
            };
            let deleted = match delete {
                Some(name) => parent_of(v, name).and_then(|(parent, last)| {
                    let removed = if context.is_dir() { v.rmdir(parent, &last) } else { v.unlink(parent, &last) };
                    removed.map_err(fsp)
                }),
                None => Ok(()),
            };
            flushed.and(deleted)
        });
        if let Err(e) = r {
            let name = delete.map(U16CStr::to_string_lossy).unwrap_or_default();
            log(&format!("closing inode {} {name}: {e:?}", context.ino));
        }
    }

    /// The last reference to the handle is gone: the FUSE release.
    fn close(&self, context: Handle) {
        let Some(fh) = context.fh else { return };
        self.open_files.fetch_sub(1, Ordering::SeqCst);
        let r = self.with(|v| {
            let r = v.release(context.ino, fh);
            // No kernel lookup counts on Windows: an unreachable local file goes now.
            v.forget(context.ino);
            r
        });
        if let Err(e) = r {
            log(&format!("saving on close failed, will retry: {e}"));
        }
    }

    fn read(&self, context: &Handle, buffer: &mut [u8], offset: u64) -> winfsp::Result<u32> {
        let want = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        let data = self.with(|v| v.read(context.ino, offset, want)).map_err(fsp)?;
        if data.is_empty() && !buffer.is_empty() {
            return Err(nt(STATUS_END_OF_FILE));
        }
        let n = data.len().min(buffer.len());
        buffer[..n].copy_from_slice(&data[..n]);
        Ok(n as u32)
    }

    fn write(
        &self,
        context: &Handle,
        buffer: &[u8],
        offset: u64,
        write_to_eof: bool,
        constrained_io: bool,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<u32> {
        let (attr, n) = self
            .with(|v| -> Result<(Attr, u32), FsError> {
                let size = v.getattr(context.ino)?.size;
                let offset = if write_to_eof { size } else { offset };
                // Paging I/O never extends a file.
                let data = match constrained_io {
                    true if offset >= size => &[][..],
                    true => &buffer[..buffer.len().min(usize::try_from(size - offset).unwrap_or(usize::MAX))],
                    false => buffer,
                };
                let n = if data.is_empty() { 0 } else { v.write(context.ino, offset, data)? };
                Ok((v.getattr(context.ino)?, n))
            })
            .map_err(fsp)?;
        fill(file_info, &attr);
        Ok(n)
    }

    /// FlushFileBuffers: the fsync. Without a handle, the volume: pending saves are written.
    fn flush(&self, context: Option<&Handle>, file_info: &mut FileInfo) -> winfsp::Result<()> {
        let ino = context.map_or(ROOT_INO, |c| c.ino);
        let fh = context.and_then(|c| c.fh);
        let attr = self
            .with(|v| -> Result<Attr, FsError> {
                v.fsync(ino, fh)?;
                v.getattr(ino)
            })
            .map_err(fsp)?;
        fill(file_info, &attr);
        Ok(())
    }

    fn get_file_info(&self, context: &Handle, file_info: &mut FileInfo) -> winfsp::Result<()> {
        let attr = self.with(|v| v.getattr(context.ino)).map_err(fsp)?;
        fill(file_info, &attr);
        Ok(())
    }

    fn get_security(&self, _context: &Handle, security_descriptor: Option<&mut [c_void]>) -> winfsp::Result<u64> {
        if let Some(buf) = security_descriptor {
            if !copy_descriptor(&self.security, buf) {
                return Err(nt(STATUS_BUFFER_OVERFLOW));
            }
        }
        Ok(self.security.len() as u64)
    }

    /// Only the modification time is kept; attributes (read-only, hidden) and the other times
    /// have no place in the core and are accepted and ignored, as chmod's mode is on Unix.
    fn set_basic_info(
        &self,
        context: &Handle,
        _file_attributes: u32,
        _creation_time: u64,
        _last_access_time: u64,
        last_write_time: u64,
        _last_change_time: u64,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        let set = SetAttr { mtime: system_time(last_write_time), ..SetAttr::default() };
        let attr = self.with(|v| v.setattr(context.ino, set)).map_err(fsp)?;
        fill(file_info, &attr);
        Ok(())
    }

    fn set_file_size(&self, context: &Handle, new_size: u64, set_allocation_size: bool, file_info: &mut FileInfo) -> winfsp::Result<()> {
        let attr = self
            .with(|v| -> Result<Attr, FsError> {
                if set_allocation_size {
                    // No preallocation in the core; an allocation below the end cuts the file.
                    let a = v.getattr(context.ino)?;
                    if new_size >= a.size {
                        return Ok(a);
                    }
                }
                v.setattr(context.ino, SetAttr { size: Some(new_size), ..SetAttr::default() })
            })
            .map_err(fsp)?;
        fill(file_info, &attr);
        Ok(())
    }

    /// Windows asks here whether a delete may happen and carries it out at `cleanup`, where no
    /// error can be returned; so what `Vfs::rmdir` would refuse is refused now: the root and
    /// its two fixed folders, and a folder that is not empty. `cleanup` still goes through the
    /// core, which has the last word. Files: `Vfs::unlink` refuses nothing that exists.
    fn set_delete(&self, context: &Handle, file_name: &U16CStr, delete_file: bool) -> winfsp::Result<()> {
        if !delete_file || !context.is_dir() {
            return Ok(());
        }
        if components(file_name)?.len() < 2 {
            return Err(nt(STATUS_ACCESS_DENIED));
        }
        if !self.with(|v| v.readdir(context.ino)).map_err(fsp)?.is_empty() {
            return Err(nt(STATUS_DIRECTORY_NOT_EMPTY));
        }
        Ok(())
    }

    fn rename(&self, _context: &Handle, file_name: &U16CStr, new_file_name: &U16CStr, replace_if_exists: bool) -> winfsp::Result<()> {
        let flags = if replace_if_exists { 0 } else { RENAME_NOREPLACE };
        self.with(|v| -> winfsp::Result<()> {
            let (parent, name) = parent_of(v, file_name)?;
            let (newparent, newname) = parent_of(v, new_file_name)?;
            v.rename(parent, &name, newparent, &newname, flags).map_err(fsp)
        })
    }

    fn read_directory(
        &self,
        context: &Handle,
        _pattern: Option<&U16CStr>,
        marker: DirMarker<'_>,
        buffer: &mut [u8],
    ) -> winfsp::Result<u32> {
        if !context.is_dir() {
            return Err(nt(STATUS_NOT_A_DIRECTORY));
        }
        // Listed once per enumeration (no marker: from the start); WinFSP sorts the buffer
        // and pages through it by name. WinFSP filters by the pattern itself.
        if let Ok(lock) = context.dir_buffer.acquire(marker.is_none(), None) {
            let entries = self
                .with(|v| -> Result<Vec<(Vec<u8>, Attr)>, FsError> {
                    let me = v.getattr(context.ino)?;
                    let mut out = Vec::new();
                    if context.ino != ROOT_INO {
                        // Windows lists `.` and `..` in every folder but the root; only their
                        // names matter, so the folder's own attributes serve for both.
                        out.push((b".".to_vec(), me));
                        out.push((b"..".to_vec(), me));
                    }
                    for (ino, _kind, name) in v.readdir(context.ino)? {
                        // One unreadable entry does not fail the whole listing.
                        if let Ok(a) = v.getattr(ino) {
                            out.push((name, a));
                        }
                    }
                    Ok(out)
                })
                .map_err(fsp)?;
            let mut info: DirInfo = DirInfo::new();
            for (name, attr) in &entries {
                info.reset();
                let name = String::from_utf8_lossy(name);
                if info.set_name(&*name).is_err() {
                    continue;
                }
                fill(info.file_info_mut(), attr);
                lock.write(&mut info)?;
            }
        }
        Ok(context.dir_buffer.read(marker, buffer))
    }

    fn get_volume_info(&self, out_volume_info: &mut VolumeInfo) -> winfsp::Result<()> {
        let s = self.with(|v| v.statfs());
        out_volume_info.total_size = s.blocks.saturating_mul(u64::from(s.bsize));
        out_volume_info.free_size = s.bfree.saturating_mul(u64::from(s.bsize));
        out_volume_info.set_volume_label(VOLUME_LABEL);
        Ok(())
    }

    /// WinFSP stopped serving the volume. Not normally: it went away under us (the FUSE
    /// `destroy`); normally: our own stop, already under way.
    fn dispatcher_stopped(&self, normally: bool) {
        if !normally {
            let _ = self.events.send(Event::Unmounted);
        }
    }
}

/// The user this process runs as, as an SDDL SID string (`S-1-5-21-…`).
fn current_user_sid() -> Result<String, String> {
    // SAFETY: the token handle is ours and closed once; `buf` is 8-byte aligned (u64) and, when
    // the second call succeeds, holds a TOKEN_USER whose SID points into `buf`, which outlives
    // its use; the SID string is allocated by the system and freed once with LocalFree.
    unsafe {
        let mut token = HANDLE::default();
        OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token).map_err(|e| e.to_string())?;
        let mut len = 0u32;
        // The first call only reports the size (failing with ERROR_INSUFFICIENT_BUFFER).
        let _ = GetTokenInformation(token, TokenUser, None, 0, &mut len);
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        let got = GetTokenInformation(token, TokenUser, Some(buf.as_mut_ptr().cast::<c_void>()), len, &mut len);
        let _ = CloseHandle(token);
        got.map_err(|e| e.to_string())?;
        let user = &*buf.as_ptr().cast::<TOKEN_USER>();
        let mut text = PWSTR::null();
        ConvertSidToStringSidW(user.User.Sid, &mut text).map_err(|e| e.to_string())?;
        let sid = text.to_string().map_err(|e| e.to_string());
        let _ = LocalFree(Some(HLOCAL(text.0.cast::<c_void>())));
        sid
    }
}

/// The descriptor every file and folder shows: owned by, and open only to, the mounting user
/// (as FUSE without allow_other: not even an administrator). Changing it is refused (the
/// crate's default for `set_security`).
fn owner_only_descriptor() -> Result<Vec<u8>, String> {
    let sid = current_user_sid().map_err(|e| format!("cannot read this process's user: {e}"))?;
    let sddl = HSTRING::from(format!("O:{sid}G:{sid}D:P(A;;FA;;;{sid})").as_str());
    let mut sd = PSECURITY_DESCRIPTOR::default();
    // SAFETY: `sddl` is a NUL-terminated wide string alive for the call; on success `sd` is a
    // self-relative descriptor from LocalAlloc, of the length GetSecurityDescriptorLength
    // gives, copied out and freed once.
    unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(&sddl, SDDL_REVISION_1, &mut sd, None)
            .map_err(|e| format!("cannot build the security descriptor: {e}"))?;
        let len = GetSecurityDescriptorLength(sd) as usize;
        let bytes = std::slice::from_raw_parts(sd.0.cast::<u8>(), len).to_vec();
        let _ = LocalFree(Some(HLOCAL(sd.0)));
        Ok(bytes)
    }
}

fn volume_params() -> VolumeParams {
    let now = filetime(SystemTime::now());
    let mut p = VolumeParams::new();
    p.filesystem_name("polykey")
        .sector_size(512)
        .sectors_per_allocation_unit(8)
        .max_component_length(255)
        .volume_creation_time(now)
        .volume_serial_number((now / 10_000_000) as u32)
        // 0: every query reaches the core and the cache manager stays off, so plaintext is not
        // kept in the system file cache and a change through one path (a tag entry) shows at
        // once on the others; as TTL zero in fuse.rs.
        .file_info_timeout(0)
        .case_sensitive_search(true)
        .case_preserved_names(true)
        .unicode_on_disk(true)
        .persistent_acls(true);
    p
}

/// Where the console control handler sends its event, and how it learns the write-out is done.
static EVENTS: OnceLock<Sender<Event>> = OnceLock::new();
static STOPPED: Mutex<bool> = Mutex::new(false);
static STOPPED_CV: Condvar = Condvar::new();

/// Console events after which Windows ends the process once the handler returns.
fn is_final(ctrl: u32) -> bool {
    matches!(ctrl, CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT)
}

/// Ctrl-C, Ctrl-Break, console close, logoff, shutdown: the Unix shutdown signals. Runs on a
/// thread Windows creates; never panics (it could not unwind out of here).
extern "system" fn on_console_event(ctrl: u32) -> BOOL {
    if let Some(tx) = EVENTS.get() {
        let _ = tx.send(Event::Signal(ctrl as i32));
    }
    if is_final(ctrl) {
        // Returning lets Windows end the process: hold it until everything is written.
        let done = STOPPED.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = STOPPED_CV.wait_timeout_while(done, FINAL_WAIT, |d| !*d);
    }
    BOOL::from(true)
}

fn watch_console(events: Sender<Event>) {
    let _ = EVENTS.set(events);
    let handler: unsafe extern "system" fn(u32) -> BOOL = on_console_event;
    // SAFETY: registers a plain function that lives as long as the process.
    if let Err(e) = unsafe { SetConsoleCtrlHandler(Some(handler), true) } {
        log(&format!("cannot watch the console for Ctrl-C and close: {e}"));
    }
}

/// Windows entry point: the Unix start-up (`main.rs`) as far as it applies here.
pub fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("polykey-mountd: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match start(&args) {
        Ok(code) => code,
        Err(msg) => {
            report(args.foreground, &format!("error: {msg}"));
            ExitCode::FAILURE
        }
    };
    *STOPPED.lock().unwrap_or_else(PoisonError::into_inner) = true;
    STOPPED_CV.notify_all();
    code
}

fn start(args: &Args) -> Result<ExitCode, String> {
    // The mount point is not canonicalized: it is a drive letter (`X:`) or a folder that must
    // not exist yet (WinFSP creates it).
    let mountpoint = args.mountpoint.clone();
    // Loads WinFSP's DLL (delay-loaded; found through the registry with the `system` feature).
    winfsp::winfsp_init().map_err(|e| format!("cannot load WinFSP (is it installed?): {e:?}"))?;
    let security = owner_only_descriptor()?;
    let (node, node_path, opened_note) = crate::open_node(args)?;
    // Owner and group are the security descriptor's business on Windows; the core's numbers
    // only show through FUSE.
    let shared = State::shared(node, 0, 0);
    let (events_tx, events) = mpsc::channel::<Event>();
    watch_console(events_tx.clone());
    let open_files = Arc::new(AtomicUsize::new(0));
    let fs = PolykeyFs { shared: shared.clone(), events: events_tx.clone(), security, open_files: open_files.clone() };
    let mut host = FileSystemHost::<PolykeyFs, FineGuard>::new(volume_params(), fs)
        .map_err(|e| format!("cannot create the WinFSP file system: {e}"))?;
    host.mount(mountpoint.clone()).map_err(|e| format!("cannot mount at {}: {e}", mountpoint.display()))?;
    host.start().map_err(|e| format!("cannot start serving the mount: {e}"))?;
    std::thread::spawn(move || loop {
        std::thread::sleep(TICK);
        if events_tx.send(Event::Tick).is_err() {
            break;
        }
    });
    report(args.foreground, "ready");
    log(&format!("mounted {} at {}", node_path.display(), mountpoint.display()));
    if let Some(note) = opened_note {
        log(&note);
    }
    log("memory is not locked on Windows (not written yet): plaintext may reach the page file");
    log("no control channel on Windows yet: stop with Ctrl-C or by closing the console");
    let code = run(&shared, &events, args.lock_after, host, &open_files);
    log("stopped");
    Ok(code)
}

fn commit_all(shared: &Shared) -> Result<(), String> {
    shared.vfs.lock().unwrap_or_else(PoisonError::into_inner).commit_all().map_err(|e| e.to_string())
}

/// The main loop: periodic work until asked to stop, then write out and unmount.
fn run(
    shared: &Shared,
    events: &mpsc::Receiver<Event>,
    lock_after: Option<Duration>,
    mut host: FileSystemHost<PolykeyFs, FineGuard>,
    open_files: &AtomicUsize,
) -> ExitCode {
    let mut stopping = false;
    // Windows ends the process shortly after a console close, logoff or shutdown.
    let mut urgent = false;
    let mut unmounted = false;
    let mut failing = false;
    let mut recorded = None;
    for ev in events {
        match ev {
            Event::Tick => failing = crate::on_tick(shared, &mut recorded, failing, lock_after, &mut stopping),
            Event::Signal(ctrl) => {
                log(&format!("console event {ctrl}: writing out and unmounting"));
                stopping = true;
                urgent |= is_final(ctrl as u32);
            }
            Event::Unmounted => {
                unmounted = true;
                stopping = true;
            }
            // Sent only by the Unix control socket; kept so the match stays exhaustive.
            Event::UnmountRequest(reply, ..) => {
                let _ = reply.send(Err("no control channel on Windows".into()));
            }
        }
        if stopping {
            match commit_all(shared) {
                Ok(()) => break,
                Err(e) if !failing => {
                    failing = true;
                    log(&format!("cannot write out before unmounting, will retry: {e}"));
                }
                Err(_) => {}
            }
        }
    }
    // The drive letter or folder goes first, so nothing new opens; files still open keep
    // working until closed, as after the lazy unmount on Unix (unless Windows is about to end
    // the process, or the volume is already gone).
    host.unmount();
    if !unmounted && !urgent && open_files.load(Ordering::SeqCst) > 0 {
        log("unmounted; waiting for the files still open to be closed");
        for ev in events {
            match ev {
                Event::Tick => {
                    let _ = shared.vfs.lock().unwrap_or_else(PoisonError::into_inner).tick();
                    if open_files.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                }
                Event::Signal(ctrl) if is_final(ctrl as u32) => break,
                Event::Unmounted => break,
                Event::UnmountRequest(reply, ..) => {
                    let _ = reply.send(Err("no control channel on Windows".into()));
                }
                Event::Signal(_) => {}
            }
        }
    }
    // Stops the dispatcher and frees the file system (FileSystemHost's Drop).
    drop(host);
    // Whatever arrived through files that stayed open is written too; never give up on data.
    while let Err(e) = commit_all(shared) {
        if !failing {
            log(&format!("cannot write out, will retry: {e}"));
            failing = true;
        }
        std::thread::sleep(TICK);
    }
    // Wipe every plaintext buffer and key now, not whenever the process ends.
    shared.vfs.lock().unwrap_or_else(PoisonError::into_inner).wipe();
    ExitCode::SUCCESS
}
