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
    /// Opens the file again by its path (after its device went away and came back).
    fn reopen(&mut self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A node file on a real filesystem.
pub struct FileStorage {
    file: File,
    /// Where it was opened, for [`Storage::reopen`].
    path: Option<std::path::PathBuf>,
}

impl FileStorage {
    /// Wraps an open file.
    pub fn new(file: File) -> Self {
        FileStorage { file, path: None }
    }

    /// Wraps a file opened for writing at `path`, which [`Storage::reopen`] may open again.
    pub fn at(file: File, path: &std::path::Path) -> Self {
        FileStorage { file, path: Some(path.to_owned()) }
    }

    /// The underlying file (for locking).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Storage for FileStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?).map_err(|_| io::Error::other("node file too large"))?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = read_at(&self.file, &mut buf[done..], done as u64)?;
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
            match read_at(&self.file, &mut buf[done..], offset + done as u64) {
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
        let fd = self.file.as_raw_fd();
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
            let n = write_at(&self.file, &data[done..], offset + done as u64)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn reopen(&mut self) -> io::Result<()> {
        let path = self.path.clone().ok_or(io::ErrorKind::Unsupported)?;
        let file = open_regular(&path, true)?.map_err(|kind| io::Error::other(format!("the node's path is now {kind}")))?;
        // The old descriptor's lock goes with it; then the new one is locked for us alone.
        self.file = file;
        self.file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io::Error::new(io::ErrorKind::WouldBlock, "another process took the node"),
            std::fs::TryLockError::Error(e) => e,
        })
    }
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
