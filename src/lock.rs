//! One lock per processor and database, so two runs of the same processor
//! on one database never overlap, while different processors run side by
//! side.
//!
//! The lock is keyed on the database file itself, not on how it was named:
//! a symlink, a relative path or another spelling reach the same lock. It is
//! two locks, both released by the kernel when the process dies, so a crash
//! never leaves a stale lock behind:
//! - an advisory `flock` on `<db>.<processor>.lock` beside the resolved
//!   database file (the file also carries the attempt journal,
//!   [`crate::journal`]), which holds across network namespaces;
//! - a Linux abstract socket named from the database file's device and inode
//!   and the processor, which no one can delete: a lock file removed under a
//!   running run does not let a second run in.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use md5::{Digest as _, Md5};

/// Held until dropped.
#[derive(Debug)]
pub struct ProcessorLock {
    file: File,
    path: PathBuf,
    _name: Option<UnixListener>,
}

/// The lock file of `processor` beside the database file `db` resolves to.
pub fn path_for(db: &Path, processor: &str) -> Result<PathBuf> {
    let db = std::fs::canonicalize(db)
        .with_context(|| format!("cannot resolve database {}", db.display()))?;
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{processor}.lock"));
    Ok(db.with_file_name(name))
}

/// Takes the lock, waiting up to `wait` for it. `Ok(None)` means another run
/// holds it.
pub fn acquire(
    db: &Path,
    processor: &str,
    wait: Option<Duration>,
) -> Result<Option<ProcessorLock>> {
    let meta =
        std::fs::metadata(db).with_context(|| format!("cannot open database {}", db.display()))?;
    let name = abstract_name(meta.dev(), meta.ino(), processor)?;
    let path = path_for(db, processor)?;
    let pause = Duration::from_millis(50);
    wait_for(wait, pause, || try_acquire(&name, &path))
}

/// Tries `attempt` until it takes what it tries for, or `wait` is spent
/// (`None`: one try; a wait too long to represent is a wait for ever),
/// `pause` between tries. A stopping signal ends the wait with its code.
/// Every lock of a run waits this way, the lock file's and the server's.
pub fn wait_for<T>(
    wait: Option<Duration>,
    pause: Duration,
    mut attempt: impl FnMut() -> Result<Try<T>>,
) -> Result<Option<T>> {
    let deadline = wait.map(|w| Instant::now().checked_add(w));
    loop {
        if let Some(signal) = crate::signals::received() {
            return Err(crate::exit::fail(
                crate::signals::exit_code(signal),
                format!(
                    "interrupted by {} while waiting for the lock",
                    crate::signals::name(signal)
                ),
            ));
        }
        match attempt()? {
            Try::Held(held) => return Ok(Some(held)),
            // What was locked changed under the try: try what is there now.
            Try::Changed => continue,
            Try::Busy => {}
        }
        match deadline {
            Some(None) => {}
            Some(Some(d)) if Instant::now() < d => {}
            _ => return Ok(None),
        }
        std::thread::sleep(pause);
    }
}

/// What one try at a lock came to.
pub enum Try<T> {
    Held(T),
    Busy,
    /// The lock file was removed or replaced between our open and our
    /// lock.
    Changed,
}

fn try_acquire(name: &SocketAddr, path: &Path) -> Result<Try<ProcessorLock>> {
    let socket = match UnixListener::bind_addr(name) {
        Ok(socket) => Some(socket),
        // Held by another run of ours, or squatted by someone else: the
        // name is predictable, so only a holder running as us (or root)
        // counts; a squatter, or a holder that cannot be asked, leaves the
        // flock to decide alone.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match listener(name) {
            Listener::Ours => return Ok(Try::Busy),
            // A holder gone as we looked, a name bound without listening,
            // a squatter, a holder that cannot be asked: the flock decides.
            Listener::Nobody | Listener::Theirs | Listener::Unknown => None,
        },
        Err(e) => return Err(e).context("cannot take the processor lock"),
    };
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Try::Busy),
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    let same = std::fs::symlink_metadata(path).is_ok_and(|m| {
        file.metadata()
            .is_ok_and(|f| f.ino() == m.ino() && f.dev() == m.dev())
    });
    if !same {
        return Ok(Try::Changed);
    }
    Ok(Try::Held(ProcessorLock {
        file,
        path: path.to_owned(),
        _name: socket,
    }))
}

/// Whether a run of `processor` holds its lock on the database `db` now
/// (for `state`, which must not take the lock itself: a run starting at
/// that moment would find it busy).
pub fn is_held(db: &Path, processor: &str) -> bool {
    let Ok(meta) = std::fs::metadata(db) else {
        return false;
    };
    abstract_name(meta.dev(), meta.ino(), processor)
        .is_ok_and(|name| matches!(listener(&name), Listener::Ours | Listener::Unknown))
}

/// Who listens on a lock's abstract name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Nobody,
    /// A process running as this user or root: a run of ours.
    Ours,
    /// Another user: a squatter on the predictable name.
    Theirs,
    /// Its queue is full (a holder never accepts): cannot tell.
    Unknown,
}

/// Asks who listens, without ever blocking: the connection is made
/// non-blocking, and a holder's full queue answers at once.
fn listener(name: &SocketAddr) -> Listener {
    let Some(bytes) = name.as_abstract_name() else {
        return Listener::Unknown;
    };
    // SAFETY: a plain socket call; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Listener::Unknown;
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_un is a valid value of it.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if bytes.len() + 1 > addr.sun_path.len() {
        return Listener::Unknown;
    }
    // Abstract: a leading NUL, then the name.
    for (slot, b) in addr.sun_path.iter_mut().skip(1).zip(bytes) {
        *slot = *b as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + bytes.len()) as libc::socklen_t;
    // SAFETY: `addr` is a sockaddr_un of which `len` bytes are set.
    let connected = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if connected != 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ECONNREFUSED) | Some(libc::ENOENT) => Listener::Nobody,
            _ => Listener::Unknown,
        };
    }
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut cred_len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `cred_len` bytes into `cred`, a ucred.
    let got = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut cred_len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match got {
        0 if cred.uid == me || cred.uid == 0 => Listener::Ours,
        0 => Listener::Theirs,
        _ => Listener::Unknown,
    }
}

/// Opens (creating, mode 0600) the lock file, refusing anything but a
/// regular file of our own with one name: a FIFO or a device planted at its
/// name is an error, never a hang, and a hard link to another file is
/// never truncated.
fn open_lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("lock file {} is not a regular file", path.display());
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.nlink() > 1 || meta.uid() != me {
        bail!(
            "lock file {} is not ours alone (owner uid {}, {} links): remove it",
            path.display(),
            meta.uid(),
            meta.nlink()
        );
    }
    Ok(file)
}

/// For a PostgreSQL database: the file this host's attempt journal and
/// file lock hang on, in `$XDG_STATE_HOME/sessionpipe` (else
/// `~/.local/state/sessionpipe`), a folder that must be ours alone (mode
/// 0700, owned by us, not a symlink: one someone else made is refused, not
/// used). The server's advisory lock is what excludes runs on other hosts;
/// the journal is this host's, so a run that dies is charged by this host's
/// next run.
pub fn journal_anchor(address: &str, source: &str) -> Result<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        })
        .context("neither XDG_STATE_HOME nor HOME is set: the attempt journal lives there")?;
    let dir = state.join("sessionpipe");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        bail!(
            "{} is not a private folder of ours (owner uid {}, mode {:o}): remove it",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    let name = crate::session::hex(&Md5::digest(format!("{address}\0{source}").as_bytes()));
    let anchor = dir.join(format!("{name}.db"));
    open_lock_file(&anchor)?;
    Ok(anchor)
}

/// The abstract socket name of one processor's lock on one database file.
fn abstract_name(dev: u64, inode: u64, processor: &str) -> Result<SocketAddr> {
    let key = Md5::digest(format!("{dev}:{inode}:{processor}").as_bytes());
    let name = format!("sessionpipe-lock/{}", crate::session::hex(&key));
    SocketAddr::from_abstract_name(name.as_bytes()).context("cannot name the processor lock")
}

impl ProcessorLock {
    /// The locked file, which holds the journal.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_database_file_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        std::fs::write(&db, b"").unwrap();
        let alias = dir.path().join("alias.db");
        std::os::unix::fs::symlink(&db, &alias).unwrap();
        let first = acquire(&db, "usage", None).unwrap();
        assert!(first.is_some());
        assert!(acquire(&db, "usage", None).unwrap().is_none());
        assert!(acquire(&alias, "usage", None).unwrap().is_none());
        let dotted = dir.path().join(".").join("state.db");
        assert!(acquire(&dotted, "usage", None).unwrap().is_none());
        assert!(
            acquire(&db, "usage", Some(Duration::from_millis(120)))
                .unwrap()
                .is_none()
        );
        assert!(acquire(&db, "other", None).unwrap().is_some());
        // The lock file removed under the holder: still one holder.
        std::fs::remove_file(path_for(&db, "usage").unwrap()).unwrap();
        assert!(acquire(&db, "usage", None).unwrap().is_none());
        drop(first);
        assert!(acquire(&alias, "usage", None).unwrap().is_some());
        assert_eq!(
            path_for(&alias, "usage").unwrap(),
            std::fs::canonicalize(dir.path())
                .unwrap()
                .join("state.db.usage.lock")
        );
    }

    #[test]
    fn a_fifo_at_the_lock_file_name_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        std::fs::write(&db, b"").unwrap();
        let fifo = std::ffi::CString::new(dir.path().join("state.db.usage.lock").to_str().unwrap())
            .unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path it is given.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(acquire(&db, "usage", None).is_err());
    }
}
