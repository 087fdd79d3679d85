//! Crash-safe file output: every file crambench writes goes to a temporary file in the target's
//! directory, is fsynced, then renamed over the target, and the directory is fsynced. A reader
//! sees the old file or the new one, never half of one; a failed write leaves the old file intact.
use crate::error::Error;
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// Fault injection for tests of full-disk behaviour: when the environment variable
/// `CRAMBENCH_FAULT_ENOSPC` is set to a non-empty string, every crash-safe write whose target
/// path contains it fails with ENOSPC ("No space left on device") after part of the data went
/// to the temporary file — what a full disk does. Unset (always, outside tests) it costs one
/// environment lookup and changes nothing.
pub fn injected_fault(path: &Path) -> Option<std::io::Error> {
    let pat = std::env::var_os("CRAMBENCH_FAULT_ENOSPC")?;
    let pat = pat.to_string_lossy();
    (!pat.is_empty() && path.to_string_lossy().contains(pat.as_ref()))
        .then(|| std::io::Error::from_raw_os_error(libc::ENOSPC))
}

/// A test hook for crash tests: when the environment variable `CRAMBENCH_TEST_CRASH_AT` is
/// `NAME` or `NAME#K`, the process kills itself with SIGKILL at the first (or K-th) time it
/// passes the point called `NAME` — what a power cut or the OOM killer does there. The points:
/// `write:<file name>` (a crash-safe write, after its temporary file is complete and before the
/// rename), `data-publish`, `pretrain-step`, `checkpoint-payload`, `checkpoint-renamed`,
/// `glue-trial`, `glue-publish`. `panic:NAME[#K]` panics there instead (the panic hook's test).
/// Unset (always, outside tests) it costs one environment lookup.
pub fn crash_point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static AT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("CRAMBENCH_TEST_CRASH_AT").ok()?;
        Some(match v.rsplit_once('#') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((want, k)) = at {
        let (panic, want) = match want.strip_prefix("panic:") {
            Some(w) => (true, w),
            None => (false, want.as_str()),
        };
        if want == name && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *k {
            if panic {
                panic!("test panic at crash point {name}");
            }
            // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

thread_local! {
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is inside [`contain_panics`] (the binary's panic hook then lets
/// the panic unwind to it instead of ending the process as a crambench bug).
pub fn panics_contained() -> bool {
    CONTAINED.with(|c| c.get())
}

/// Run `f`, a call into a third-party decoder that is known to panic on some malformed input
/// (the `parquet` crate on corrupted pages), and turn a panic into bad input naming `what`
/// (exit 2) instead of a crash. Only for code that touches no shared state of ours.
pub fn contain_panics<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let was = CONTAINED.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(was));
    match r {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            Err(Error::input(what, format!("malformed file: the decoder failed ({msg})")).into())
        }
    }
}

/// Write `bytes` to a new temporary file next to `path` (permissions `mode` set before any byte
/// is written, so a secret never exists with looser permissions) and fsync it.
fn synced_temp<'a>(
    path: &'a Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> Result<(tempfile::NamedTempFile, &'a Path)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".crambench-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    {
        // A temporary file is created 0600; without an explicit mode the result gets what a
        // plain `File::create` would (0666 less the umask), so manifests and reports stay
        // readable by others as users expect.
        use std::os::unix::fs::PermissionsExt;
        let mode = mode.unwrap_or(0o666 & !umask());
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    if let Some(e) = injected_fault(path) {
        tmp.write_all(&bytes[..bytes.len() / 2])
            .map_err(|e| Error::io(path, e))?;
        return Err(Error::io(path, e).into());
    }
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    Ok((tmp, dir))
}

/// The process umask, read from `/proc/self/status` (changing it to read it would race with
/// other threads); 022 where that is not available.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// fsync every regular file under `dir`, each subdirectory and `dir` itself (symbolic links
/// are not followed).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let kind = path.symlink_metadata().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// fsync a directory so a rename inside it is durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write `bytes` to `path` atomically, replacing any existing file. `mode` sets Unix
/// permissions on the new file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    write_all_atomic(&[(path, bytes, mode)])
}

/// Write several files as one: every file goes to its synced temporary file first, and only
/// when all of them are written are they renamed into place. A failure while writing (a full
/// disk, a refused permission) leaves every target as it was — none of the new files is
/// published, no old one is replaced. (The renames that follow need no space and do not fail
/// on a full disk.) `files`: (target, bytes, mode).
pub fn write_all_atomic(files: &[(&Path, &[u8], Option<u32>)]) -> Result<()> {
    for (tmp, path, dir) in stage_all(files)? {
        crash_point(&format!(
            "write:{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        sync_dir(dir);
    }
    Ok(())
}

/// Build a directory and publish it whole: `fill` writes into a temporary directory beside
/// `out` (`.<name>.tmp-<pid>`, replacing a stale one); every file in it and the directory itself
/// are then synced (whatever wrote them), the directory renamed to `out` and the rename synced.
/// On any failure the temporary directory is removed and `out` never appears half-written.
pub fn publish_dir<T>(out: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = fill(&tmp).and_then(|v| {
        sync_tree(&tmp)?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        sync_dir(parent);
        Ok(v)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Every file of a group written to its synced temporary file (nothing renamed yet).
#[allow(clippy::type_complexity)]
fn stage_all<'a>(
    files: &[(&'a Path, &[u8], Option<u32>)],
) -> Result<Vec<(tempfile::NamedTempFile, &'a Path, &'a Path)>> {
    files
        .iter()
        .map(|(path, bytes, mode)| {
            let (tmp, dir) = synced_temp(path, bytes, *mode)?;
            Ok((tmp, *path, dir))
        })
        .collect()
}

/// [`write_all_atomic`] for new files: refuses (before writing anything) if any target exists,
/// and publishes each with a no-clobber link, so an existing file is never replaced.
pub fn write_all_new_atomic(files: &[(&Path, &[u8], Option<u32>)]) -> Result<()> {
    let exists = |path: &Path| {
        anyhow::Error::new(Error::Refused(format!(
            "{} already exists; refusing to overwrite it",
            path.display()
        )))
    };
    if let Some((path, _, _)) = files.iter().find(|(p, _, _)| p.exists()) {
        return Err(exists(path));
    }
    for (tmp, path, dir) in stage_all(files)? {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                exists(path)
            } else {
                Error::io(path, e.error).into()
            }
        })?;
        sync_dir(dir);
    }
    Ok(())
}

/// Like [`write_atomic`], but fails if `path` already exists (checked before writing and made
/// race-free by a hard link instead of a rename).
pub fn write_new_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let exists = || {
        anyhow::Error::new(Error::Refused(format!(
            "{} already exists; refusing to overwrite it",
            path.display()
        )))
    };
    if path.exists() {
        return Err(exists());
    }
    let (tmp, dir) = synced_temp(path, bytes, mode)?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            exists()
        } else {
            Error::io(path, e.error).into()
        }
    })?;
    sync_dir(dir);
    Ok(())
}

/// What kind of file `ft` is, for messages.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Open an input file for reading, refusing anything but a regular file (after following
/// symbolic links): a FIFO, a device such as `/dev/zero`, a socket or a directory is bad input,
/// never read — reading one would block forever or never end. Every file crambench reads as
/// input is opened here.
///
/// The file is opened non-blocking (so that opening a FIFO without a writer does not hang),
/// checked with `fstat` on the open descriptor (no race with a rename between check and
/// open), and switched back to blocking reads.
pub fn open_input(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::input(
            path.display(),
            format!("is {}, expected a regular file", kind_of(meta.file_type())),
        )
        .into());
    }
    // SAFETY: fcntl on a descriptor this function owns; F_GETFL/F_SETFL take and return ints.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
    {
        return Err(Error::io(path, std::io::Error::last_os_error()).into());
    }
    Ok(file)
}

/// A reader that fails, instead of growing a buffer without end, when a line (bytes between
/// newlines) is longer than `cap`: the error (`InvalidData`) names the 1-based line, the cap
/// and `what` the cap is (for the message, e.g. "the GLUE record limit").
pub struct LineCap<R> {
    inner: R,
    cap: u64,
    what: &'static str,
    /// Lines completed so far, and the length of the current one.
    lines: u64,
    len: u64,
}

impl<R> LineCap<R> {
    pub fn new(inner: R, cap: u64, what: &'static str) -> Self {
        LineCap {
            inner,
            cap,
            what,
            lines: 0,
            len: 0,
        }
    }
}

impl<R: std::io::Read> std::io::Read for LineCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut segments = buf[..n].split(|&b| b == b'\n').peekable();
        while let Some(seg) = segments.next() {
            self.len += seg.len() as u64;
            if self.len > self.cap {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "line {} is longer than {} bytes, {}",
                        self.lines + 1,
                        self.cap,
                        self.what
                    ),
                ));
            }
            if segments.peek().is_some() {
                self.lines += 1;
                self.len = 0;
            }
        }
        Ok(n)
    }
}

/// Read a whole file, refusing files larger than `limit` bytes and files that are not regular
/// files ([`open_input`]) with a clear error. The limit also bounds the read itself, so a file
/// that grows after the size check is still refused.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = open_input(path)?;
    let too_big = |len: u64| -> anyhow::Error {
        Error::input(
            path.display(),
            format!("file is {len} bytes; the limit is {limit} bytes"),
        )
        .into()
    };
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > limit {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// An exclusive advisory lock (`flock`) on a lock file, held until dropped; the file says who
/// holds it (pid and start time), so a second process is refused with the holder's name. The
/// kernel releases the lock when its holder dies, however it dies (SIGKILL included), so a lock
/// file left behind never blocks anyone.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
    pub path: std::path::PathBuf,
}

impl Lock {
    /// Take the lock at `path` (created if missing), or fail with [`Error::Refused`] naming
    /// the holder; `what` says what is locked ("run directory …").
    pub fn acquire(path: &Path, what: &str) -> Result<Lock> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // flock(2), not File::try_lock: the crate's MSRV predates it.
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io(path, e).into());
            }
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Error::Refused(format!(
                "{what} is in use by another crambench process ({}); wait for it to finish \
                 or stop it (lock {})",
                if holder.is_empty() {
                    "holder unknown"
                } else {
                    holder
                },
                path.display()
            ))
            .into());
        }
        use std::io::Seek;
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        let info = format!(
            "pid {}, started {}\n",
            std::process::id(),
            time::OffsetDateTime::now_utc()
                .format(&fmt)
                .unwrap_or_default()
        );
        f.set_len(0)
            .and_then(|_| f.seek(std::io::SeekFrom::Start(0)))
            .and_then(|_| f.write_all(info.as_bytes()))
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(path, e))?;
        Ok(Lock {
            _file: f,
            path: path.to_path_buf(),
        })
    }
}

/// Whether `name` is a temporary file of [`write_atomic`] (`.crambench-*.tmp`).
pub fn is_atomic_temp(name: &str) -> bool {
    name.starts_with(".crambench-") && name.ends_with(".tmp")
}

/// Remove what killed processes left under `dir` (recursively, symbolic links not followed):
/// temporary files of [`write_atomic`] and directories whose names `stale_dir` accepts. Only
/// call it while holding the lock that every writer of `dir` takes, so nothing removed can
/// belong to a live process. Returns what was removed.
pub fn remove_stale(dir: &Path, stale_dir: &dyn Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() && stale_dir(&name) {
                if std::fs::remove_dir_all(e.path()).is_ok() {
                    removed.push(e.path());
                }
            } else if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && is_atomic_temp(&name) && std::fs::remove_file(e.path()).is_ok()
            {
                removed.push(e.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_a_mode_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"{}", None).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // The same as a file the standard library creates under the process umask.
        let plain = d.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let want = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want);
    }

    #[test]
    fn non_regular_inputs_are_refused_without_reading() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let zero = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for (p, kind) in [
            (&fifo, "FIFO"),
            (&zero, "character device"),
            (&d.path().to_path_buf(), "directory"),
        ] {
            // Each would block (FIFO without a writer) or never end (/dev/zero).
            let e = read_limited(p, 1 << 20).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::BadInput);
            assert!(e.to_string().contains(kind), "{e}");
            assert!(open_input(p).is_err());
        }
        let f = d.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(read_limited(&f, 3).unwrap(), b"abc");
        assert!(read_limited(&f, 2).is_err());
    }

    #[test]
    fn line_cap_stops_an_endless_line() {
        use std::io::Read;
        let mut ok = Vec::new();
        LineCap::new(&b"abc\ndefg\nhi"[..], 4, "the test limit")
            .read_to_end(&mut ok)
            .unwrap();
        assert_eq!(ok, b"abc\ndefg\nhi");
        // An endless line (as /dev/zero would give) fails at the cap, naming the line.
        let e = LineCap::new(std::io::repeat(b'x'), 1 << 16, "the test limit")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("line 1 is longer than 65536 bytes"),
            "{e}"
        );
        let e = LineCap::new(&b"ab\nabcdef\n"[..], 4, "the test limit")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn a_group_is_published_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.md");
        std::fs::write(&a, b"old a").unwrap();
        // The second file cannot be written (its directory is missing; a full disk fails the
        // same step): the first is not published either, and the old one stays.
        let b = d.path().join("missing/b.html");
        let e = write_all_atomic(&[(&a, b"new a", None), (&b, b"new b", None)]).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::BadInput);
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporaries left"
        );
        let b = d.path().join("b.html");
        write_all_atomic(&[(&a, b"new a", None), (&b, b"new b", None)]).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new a");
        assert_eq!(std::fs::read(&b).unwrap(), b"new b");
        // New files only: an existing target refuses the whole group before anything is written.
        let c = d.path().join("c");
        let e = write_all_new_atomic(&[(&c, b"c", None), (&a, b"x", None)]).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::Refused);
        assert!(!c.exists());
        assert_eq!(std::fs::read(&a).unwrap(), b"new a");
    }

    #[test]
    fn atomic_write_replaces_and_new_refuses() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.txt");
        write_atomic(&p, b"one", None).unwrap();
        write_atomic(&p, b"two", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let e = write_new_atomic(&p, b"three", None).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::Refused);
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // no temporary files left behind
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_published_directory_appears_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("nested/ckpt");
        let e = publish_dir(&out, |tmp| -> Result<()> {
            write_atomic(&tmp.join("a"), b"half", None)?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert!(e.to_string().contains("disk full"));
        assert!(!out.exists());
        let left: Vec<_> = std::fs::read_dir(d.path().join("nested"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "the temporary directory is removed");
        let n = publish_dir(&out, |tmp| {
            write_atomic(&tmp.join("a"), b"whole", None)?;
            Ok(7)
        })
        .unwrap();
        assert_eq!(n, 7);
        assert_eq!(std::fs::read(out.join("a")).unwrap(), b"whole");
        assert_eq!(
            std::fs::read_dir(d.path().join("nested")).unwrap().count(),
            1
        );
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let l = Lock::acquire(&p, "run directory x").unwrap();
        let e = Lock::acquire(&p, "run directory x").unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::Refused);
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(l);
        Lock::acquire(&p, "run directory x").unwrap();
    }

    #[test]
    fn stale_temporaries_are_removed_and_results_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/.tmp-ckpt-1-99")).unwrap();
        std::fs::write(d.path().join("a/.crambench-x.tmp"), b"half").unwrap();
        std::fs::write(d.path().join("a/result.json"), b"{}").unwrap();
        std::fs::create_dir_all(d.path().join("a/ckpt-1")).unwrap();
        let removed = remove_stale(d.path(), &|n| n.starts_with(".tmp-ckpt-"));
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(d.path().join("a/result.json").is_file());
        assert!(d.path().join("a/ckpt-1").is_dir());
    }
}

/// A progress bar on stderr for `total` bytes with `msg` in front (bytes, rate, time left);
/// hidden when `show` is false. indicatif draws nothing when stderr is not a terminal.
pub fn byte_progress(show: bool, total: u64, msg: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:<22} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template"),
    );
    pb.set_message(msg.to_string());
    pb
}
