//! The host's files, console and exit through Arm semihosting: each call is a `bkpt 0xab` trap
//! that the host serves (QEMU with `-semihosting-config enable=on`, or a debug probe on a real
//! board). The traps are here only, each in a small function with its `// SAFETY:` note.

use core::fmt;

use cortex_m_semihosting::{debug, nr, syscall, syscall1};

/// Longest path accepted, in bytes (without the NUL the host call needs).
const PATH_MAX: usize = 255;

/// A host file's name as the command line gives it: a directory (may be empty) and a name.
/// Small and printable, for messages; [`FileName::path`] makes the host's form.
#[derive(Clone, Copy)]
pub struct FileName<'a> {
    /// The directory, or "".
    pub dir: &'a str,
    /// The file's name in it.
    pub name: &'a str,
}

impl FileName<'_> {
    /// The NUL-terminated path (as printed), or `None` when longer than 255 bytes or holding a
    /// NUL.
    pub fn path(&self) -> Option<Path> {
        let mut path = Path {
            bytes: [0; PATH_MAX + 1],
            len: 0,
        };
        fmt::write(&mut path, format_args!("{self}")).ok()?;
        (!path.bytes[..path.len].contains(&0)).then_some(path)
    }
}

impl fmt::Display for FileName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dir {
            "" => f.write_str(self.name),
            dir if dir.ends_with('/') => write!(f, "{dir}{}", self.name),
            dir => write!(f, "{dir}/{}", self.name),
        }
    }
}

/// A host path: NUL-terminated for the host.
pub struct Path {
    bytes: [u8; PATH_MAX + 1],
    len: usize,
}

impl fmt::Write for Path {
    /// Appends `s`; fails past 255 bytes, which leaves room for the NUL.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > PATH_MAX {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A host call that failed.
#[derive(Clone, Copy, Debug)]
pub enum HostError {
    /// The host refused the call; `errno` is its error number.
    Refused {
        /// What was asked: "open", "read", ...
        op: &'static str,
        /// The host's errno.
        errno: usize,
    },
    /// The command line is not UTF-8.
    NotText,
    /// The file ended `missing` bytes before the read's end.
    ShortRead {
        /// Bytes asked for but not there.
        missing: usize,
    },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HostError::Refused { op, errno } => {
                let what = match errno {
                    2 => "no such file or directory",
                    7 => "longer than the buffer",
                    13 => "permission denied",
                    21 => "is a directory",
                    28 => "no space left on device",
                    _ => "host error",
                };
                write!(f, "{op} failed: {what} (errno {errno})")
            }
            HostError::NotText => f.write_str("the command line is not UTF-8"),
            HostError::ShortRead { missing } => write!(f, "the file ends {missing} bytes early"),
        }
    }
}

/// The host's errno after a failed call, as `op`'s error.
fn refused(op: &'static str) -> HostError {
    // SAFETY: SYS_ERRNO takes no argument block and only returns a number.
    let errno = unsafe { syscall!(ERRNO) };
    HostError::Refused { op, errno }
}

/// How a file is opened.
#[derive(Clone, Copy)]
pub enum Mode {
    /// Read, binary.
    Read,
    /// Write, binary, created or truncated.
    Write,
}

/// An open host file, closed on drop.
pub struct File {
    handle: usize,
}

impl File {
    /// Opens `path` on the host.
    pub fn open(path: &Path, mode: Mode) -> Result<File, HostError> {
        let mode = match mode {
            Mode::Read => nr::open::R_BINARY,
            Mode::Write => nr::open::W_TRUNC_BINARY,
        };
        // SAFETY: the block is (NUL-terminated name, mode, name length); the host only reads
        // the name's `len` bytes, which `path.bytes` holds, during the call.
        let handle = unsafe { syscall!(OPEN, path.bytes.as_ptr(), mode, path.len) };
        if handle as isize == -1 {
            return Err(refused("open"));
        }
        Ok(File { handle })
    }

    /// The file's length in bytes.
    pub fn len(&self) -> Result<usize, HostError> {
        // SAFETY: SYS_FLEN's block is the handle alone; nothing of ours is written.
        let len = unsafe { syscall!(FLEN, self.handle) };
        if len as isize == -1 {
            return Err(refused("length"));
        }
        Ok(len)
    }

    /// Fills `buf` from byte `offset` of the file.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), HostError> {
        let offset = usize::try_from(offset).map_err(|_| HostError::ShortRead { missing: buf.len() })?;
        // SAFETY: SYS_SEEK's block is (handle, offset); nothing of ours is written.
        if unsafe { syscall!(SEEK, self.handle, offset) } != 0 {
            return Err(refused("seek"));
        }
        // SAFETY: the block is (handle, buffer, length): the host writes at most `buf.len()`
        // bytes into `buf`, which we borrow mutably for the call.
        let missing = unsafe { syscall!(READ, self.handle, buf.as_mut_ptr(), buf.len()) };
        match missing {
            0 => Ok(()),
            m if m <= buf.len() => Err(HostError::ShortRead { missing: m }),
            _ => Err(refused("read")),
        }
    }

    /// Writes all of `bytes` at the file's position.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        // SAFETY: the block is (handle, buffer, length): the host reads `bytes.len()` bytes of
        // `bytes`, which we borrow for the call.
        let unwritten = unsafe { syscall!(WRITE, self.handle, bytes.as_ptr(), bytes.len()) };
        if unwritten != 0 {
            return Err(refused("write"));
        }
        Ok(())
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // SAFETY: SYS_CLOSE's block is the handle alone, which is ours and not used again.
        unsafe { syscall!(CLOSE, self.handle) };
    }
}

/// Removes the host file `path`.
pub fn remove(path: &Path) -> Result<(), HostError> {
    // SAFETY: the block is (NUL-terminated name, length); the host only reads the name.
    if unsafe { syscall!(REMOVE, path.bytes.as_ptr(), path.len) } != 0 {
        return Err(refused("remove"));
    }
    Ok(())
}

/// The command line the host passes (QEMU: the `arg=` items of `-semihosting-config`, joined
/// by spaces; the first is the program's name), read into `buf`.
pub fn command_line(buf: &mut [u8]) -> Result<&str, HostError> {
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the block is (buffer, length); the host writes at most `buf.len()` bytes, the
    // line and its NUL, into `buf`, borrowed mutably for the call, and the length it wrote
    // into the block, borrowed mutably on this stack frame for the call.
    let failed = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) } != 0;
    if failed {
        return Err(refused("read"));
    }
    let line = &buf[..block[1].min(buf.len())];
    let line = line.split(|&b| b == 0).next().unwrap_or(line);
    core::str::from_utf8(line).map_err(|_| HostError::NotText)
}

/// Ends the program: the host exits with status 0 when `success`, else 1.
pub fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // A host that does not stop the board: wait here.
    loop {
        core::hint::spin_loop();
    }
}
