//! The storage seam: every byte of a node file is read and written through [`Storage`].
//!
//! Production uses [`FileStorage`]; tests substitute backends that fail the N-th write or
//! sync, tear a write at byte K, or stop as a power cut would.

use std::fs::File;
use std::io;

/// Positional I/O on one node file.
#[allow(clippy::len_without_is_empty)] // A node file is never empty: it has a header.
pub trait Storage: Send {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads the whole file.
    fn read_all(&self) -> io::Result<Vec<u8>>;
    /// Reads exactly `buf.len()` bytes at `offset`; fails with `UnexpectedEof` if the file
    /// ends before. Opening a node reads its log through this, a frame at a time. The default
    /// goes through [`Storage::read_all`], for backends that only read whole; real ones
    /// override it.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        copy_out(&self.read_all()?, offset, buf)
    }
    /// The next run of data at or after `offset`, as (start, end), skipping the holes of a
    /// sparse file (which read as zeros); `None` if only holes (or nothing) follow. Readers
    /// that scan the file use it to skip holes. The default: all of the file is data.
    fn data_after(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let len = self.len()?;
        Ok((offset < len).then_some((offset, len)))
    }
    /// Writes `data` at `offset` (all of it, or an error).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes every earlier write and truncation durable.
    fn sync(&mut self) -> io::Result<()>;
    /// How many bytes can really be read: [`Storage::len`], unless the file ends early (a FAT
    /// stick pulled mid-write can leave a size that reads return 0 before). Found by reading
    /// single bytes, a binary search below the length when the last byte does not read.
    fn readable_len(&self) -> io::Result<u64> {
        let len = self.len()?;
        let readable = |at: u64| match self.read_exact_at(at, &mut [0u8]) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        };
        if len == 0 || readable(len - 1)? {
            return Ok(len);
        }
        // Invariant: byte `lo - 1` reads (or `lo` is 0), byte `hi` does not.
        let (mut lo, mut hi) = (0u64, len - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if readable(mid)? {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
    /// Opens the file again by its path (after its device went away and came back) and
    /// writes to it from now on if `accept` (which checks it is the same node) agrees.
    fn reopen(&mut self, accept: &dyn Fn(&dyn Storage) -> io::Result<()>) -> io::Result<()> {
        let _ = accept;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Lets go of the file (its device went away): a driver that serves it alone, such as a
    /// lazily unmounted filesystem, can then finish. Reads and writes fail until [`Storage::reopen`].
    fn release(&mut self) {}
    /// Whether the node's path still leads to the file written through this storage.
    fn placement(&self) -> Placement {
        Placement::Home
    }
    /// Creates a new file beside the node's path, or in `dir` (never replacing anything), and
    /// writes to it from now on; returns its path. The caller fills it with a whole node.
    fn start_rescue(&mut self, dir: Option<&std::path::Path>) -> io::Result<std::path::PathBuf> {
        let _ = dir;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Where the file being written is, seen from the node's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The path leads to it.
    Home,
    /// It is a rescue file (see [`Storage::start_rescue`]) still at its own path.
    Rescue(std::path::PathBuf),
    /// It cannot be reached, or the path's folder is on another filesystem now (a stick
    /// pulled or unmounted): wait for it to come back.
    Gone(String),
    /// The path's folder is on the file's filesystem, but the path leads to another file or to
    /// nothing (replaced by a sync client or `mv`, or removed): the file written is lost to
    /// the user.
    Replaced(String),
}

/// A node file on a real filesystem.
pub struct FileStorage {
    /// `None` once let go ([`Storage::release`]).
    file: Option<File>,
    /// Where it was opened, for [`Storage::reopen`].
    path: Option<std::path::PathBuf>,
    /// The rescue file written to instead, while the path leads elsewhere.
    rescue: Option<std::path::PathBuf>,
}

impl FileStorage {
    /// Wraps an open file.
    pub fn new(file: File) -> Self {
        FileStorage { file: Some(file), path: None, rescue: None }
    }

    /// Wraps a file opened for writing at `path`, which [`Storage::reopen`] may open again.
    pub fn at(file: File, path: &std::path::Path) -> Self {
        FileStorage { file: Some(file), path: Some(path.to_owned()), rescue: None }
    }

    /// The underlying file (for locking), unless it was let go.
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    fn f(&self) -> io::Result<&File> {
        self.file.as_ref().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the node file was let go (its device went away)"))
    }
}

impl Storage for FileStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.f()?.metadata()?.len())
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?).map_err(|_| io::Error::other("node file too large"))?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = read_at(self.f()?, &mut buf[done..], done as u64)?;
            if n == 0 {
                buf.truncate(done);
                break;
            }
            done += n;
        }
        Ok(buf)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match read_at(self.f()?, &mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[cfg(unix)]
    #[allow(unsafe_code)] // lseek(SEEK_DATA/SEEK_HOLE), which std does not offer.
    fn data_after(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        use std::os::fd::AsRawFd;
        let len = self.len()?;
        let (Ok(from), true) = (libc::off_t::try_from(offset), offset < len) else { return Ok(None) };
        let fd = self.f()?.as_raw_fd();
        // SAFETY: lseek on a descriptor this storage owns; it moves only the file offset,
        // which nothing here uses (every read and write is positional).
        let start = unsafe { libc::lseek(fd, from, libc::SEEK_DATA) };
        if start < 0 {
            return match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None), // Only a hole follows.
                _ => Ok(Some((offset, len))),                           // No SEEK_DATA here: all data.
            };
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        let end = if end < 0 { len } else { (end as u64).min(len) };
        Ok(Some((start as u64, end.max(start as u64 + 1))))
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            let n = write_at(self.f()?, &data[done..], offset + done as u64)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.f()?.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.f()?.sync_all()
    }

    fn reopen(&mut self, accept: &dyn Fn(&dyn Storage) -> io::Result<()>) -> io::Result<()> {
        let path = self.path.clone().ok_or(io::ErrorKind::Unsupported)?;
        let file = open_regular(&path, true)?.map_err(|kind| io::Error::other(format!("the node's path is now {kind}")))?;
        lock(&file)?;
        let candidate = FileStorage { file: Some(file), path: None, rescue: None };
        accept(&candidate)?;
        // The old descriptor's lock goes with it.
        self.file = candidate.file;
        self.rescue = None;
        Ok(())
    }

    fn release(&mut self) {
        self.file = None;
    }

    #[cfg(unix)]
    fn placement(&self) -> Placement {
        use std::os::unix::fs::MetadataExt;
        let Some(path) = &self.path else { return Placement::Home };
        let held = match self.f().and_then(|f| f.metadata()) {
            Ok(m) => m,
            Err(e) => return Placement::Gone(format!("the node file cannot be reached: {e}")),
        };
        let same = |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino());
        if same(path) {
            return Placement::Home;
        }
        if let Some(r) = self.rescue.as_ref().filter(|r| same(r)) {
            return Placement::Rescue(r.clone());
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        match std::fs::metadata(dir) {
            Ok(d) if d.dev() == held.dev() => Placement::Replaced(match std::fs::metadata(path) {
                Ok(_) => format!("{} was replaced by another file", path.display()),
                Err(e) => format!("{} is gone ({e})", path.display()),
            }),
            Ok(_) => Placement::Gone(format!("the filesystem holding {} was unmounted or pulled", path.display())),
            Err(e) => Placement::Gone(format!("{} cannot be reached: {e}", dir.display())),
        }
    }

    fn start_rescue(&mut self, dir: Option<&std::path::Path>) -> io::Result<std::path::PathBuf> {
        let path = self.path.clone().ok_or(io::ErrorKind::Unsupported)?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "node".into());
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        for n in 1..100 {
            let file_name = format!("{name}.rescued-{stamp}{}.node", if n == 1 { String::new() } else { format!("-{n}") });
            let rescue = dir.map_or_else(|| path.with_file_name(&file_name), |d| d.join(&file_name));
            match opts.open(&rescue) {
                Ok(file) => {
                    lock(&file)?;
                    self.file = Some(file);
                    self.rescue = Some(rescue.clone());
                    return Ok(rescue);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free rescue file name"))
    }
}

fn lock(file: &File) -> io::Result<()> {
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => io::Error::new(io::ErrorKind::WouldBlock, "another process took the node"),
        std::fs::TryLockError::Error(e) => e,
    })
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, off)
}
#[cfg(unix)]
fn write_at(f: &File, buf: &[u8], off: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(f, buf, off)
}
#[cfg(windows)]
fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, off)
}
#[cfg(windows)]
fn write_at(f: &File, buf: &[u8], off: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(f, buf, off)
}

/// Opens the node file at `path` (for writing too with `write`), or says what else is there
/// (`Ok(Err("a FIFO"))`, ...). It opens without blocking and checks the open file, so a FIFO
/// or a device at the path cannot hang the caller (opening a FIFO waits for a writer), and
/// nothing can be swapped in between a check and the open.
pub fn open_regular(path: &std::path::Path, write: bool) -> io::Result<Result<File, &'static str>> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(write);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = match opts.open(path) {
        Ok(f) => f,
        // A FIFO opened for writing without a reader, or a device that will not open.
        #[cfg(unix)]
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::ENODEV)) => {
            return Ok(Err(std::fs::metadata(path).map(|m| file_kind(&m)).unwrap_or("not a regular file")));
        }
        Err(e) if e.kind() == io::ErrorKind::IsADirectory => return Ok(Err("a folder")),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Err(file_kind(&meta)));
    }
    // O_NONBLOCK means nothing for a regular file's reads and writes; it stays.
    Ok(Ok(file))
}

/// What a non-regular file is, in words.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Copies `buf.len()` bytes at `offset` of `bytes` into `buf`, or fails with `UnexpectedEof`:
/// [`Storage::read_exact_at`] for a backend that holds the file in memory.
pub fn copy_out(bytes: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let src = usize::try_from(offset).ok().and_then(|at| bytes.get(at..at.checked_add(buf.len())?)).ok_or(io::ErrorKind::UnexpectedEof)?;
    buf.copy_from_slice(src);
    Ok(())
}

/// Makes a directory entry durable (after creating a file in it). A no-op off Unix.
pub fn sync_dir(dir: &std::path::Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// An in-memory node file, for tests and fuzzing.
#[derive(Default, Clone)]
pub struct MemStorage {
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl Storage for MemStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
    fn read_all(&self) -> io::Result<Vec<u8>> {
        Ok(self.bytes.clone())
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        copy_out(&self.bytes, offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset as usize + data.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.bytes.resize(len as usize, 0);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
