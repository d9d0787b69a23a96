//! Atomic file writes, shared by every crate that writes a user's files (snapshots, vectors,
//! vocabularies, exported models).
//!
//! A file is written under a temporary name in its destination's folder, fsynced, and renamed
//! over the destination, so a full disk, a kill or a crash leaves either the old file or the
//! new one, never half of one. Several files that belong together (a model's `config.json` and
//! its weights) are all written first and renamed only when every one of them is complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary name beside `dest`: `.NAME.tmp-PID-N` (`N` counts this process's temporary
/// files, so two writers never share one), with `NAME` cut to 200 bytes so that a destination
/// name near the file system's 255-byte limit still gets one.
fn temp_path(dest: &Path) -> PathBuf {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    folder(dest).join(format!(".{}.tmp-{}-{n}", &name[..cut], std::process::id()))
}

/// Whether `name` is one of the temporary names of [`AtomicFile`] (`.NAME.tmp-PID-N`, with
/// digits for PID and N): a write that a kill interrupted leaves one behind, which folder
/// checks pass over.
pub fn is_temp_name(name: &str) -> bool {
    let Some((stem, tail)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !stem.is_empty()
        && tail
            .split_once('-')
            .is_some_and(|(a, b)| digits(a) && digits(b))
}

/// The process id in a temporary name ([`is_temp_name`]).
pub fn temp_name_pid(name: &str) -> Option<u32> {
    if !is_temp_name(name) {
        return None;
    }
    let (_, tail) = name.rsplit_once(".tmp-")?;
    tail.split_once('-')?.0.parse().ok()
}

/// Whether `name` is a temporary name ([`is_temp_name`]) whose writer is no longer running: a
/// file that a killed process (`kill -9`) left behind. Known only where `/proc` lists the
/// processes; elsewhere always false (the file might be another process's write in progress).
pub fn is_stale_temp_name(name: &str) -> bool {
    let proc = Path::new("/proc");
    temp_name_pid(name).is_some_and(|pid| {
        proc.join("self").is_dir()
            && pid != std::process::id()
            && !proc.join(pid.to_string()).exists()
    })
}

/// A copy of this process's standard output or error descriptor when `dest` names one of
/// them: `/dev/stdout` and the like, or any path to the same file (compared by device and
/// inode). An error when the name is one of them but the descriptor is closed.
fn own_stream(dest: &Path) -> std::io::Result<Option<File>> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let named = match dest.to_string_lossy().as_ref() {
            "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => Some(1),
            "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" => Some(2),
            _ => None,
        };
        let streams = [
            (1, std::io::stdout().as_fd().try_clone_to_owned()),
            (2, std::io::stderr().as_fd().try_clone_to_owned()),
        ];
        let target = std::fs::metadata(dest).ok();
        for (n, fd) in streams {
            let fd = match fd {
                Ok(fd) => File::from(fd),
                Err(e) if named == Some(n) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "standard {} is closed",
                            if n == 1 { "output" } else { "error" }
                        ),
                    ))
                }
                Err(_) => continue,
            };
            let same = match (&target, fd.metadata()) {
                (Some(t), Ok(m)) => t.dev() == m.dev() && t.ino() == m.ino(),
                _ => false,
            };
            if named == Some(n) || same {
                return Ok(Some(fd));
            }
        }
        Ok(None)
    }
    #[cfg(not(unix))]
    {
        let _ = dest;
        Ok(None)
    }
}

/// The folder `dest` is in (`.` for a bare file name).
fn folder(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The temporary files being written now, for [`remove_temporaries`].
static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
/// Held (shared) while files are renamed into place, so that [`remove_temporaries`] waits for
/// a batch of renames ([`write_all_atomic`]) to end instead of leaving half of it done.
static RENAMING: std::sync::RwLock<()> = std::sync::RwLock::new(());
/// Set by [`remove_temporaries`]: the process is ending, and no new file is started.
static CLOSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn renaming() -> std::sync::RwLockReadGuard<'static, ()> {
    RENAMING.read().unwrap_or_else(|e| e.into_inner())
}

/// Removes the temporary files that writes in progress have made, for a process about to
/// exit at a stop request (Ctrl-C): their destinations keep what they held, and no hidden
/// temporary file stays behind. Renames under way finish first (files written together are
/// all renamed or none), and no write starts after it. (A kill that cannot be handled,
/// `kill -9`, leaves the temporaries: see [`is_temp_name`].)
pub fn remove_temporaries() {
    let _no_renames = RENAMING.write().unwrap_or_else(|e| e.into_inner());
    let mut live = live();
    CLOSING.store(true, std::sync::atomic::Ordering::SeqCst);
    for p in live.drain(..) {
        let _ = std::fs::remove_file(p);
    }
    for d in LIVE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Scratch folders in use, removed by [`remove_temporaries`].
static LIVE_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A scratch folder that a stop request removes ([`remove_temporaries`]) while this guard
/// lives (the folder itself is made and removed by its owner).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Registers `path`.
    pub fn track(path: &Path) -> ScratchDir {
        LIVE_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_path_buf());
        ScratchDir(path.to_path_buf())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        LIVE_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &self.0);
    }
}

/// A new, empty folder under the system's temporary folder, removed with everything in it
/// when dropped: scratch space for tests, examples and probes, so that runs of them do not
/// pile up folders there. It reads as its path (`Deref<Target = Path>`).
///
/// Dropped while its thread panics (a failing test), the folder is kept and its path printed
/// on standard error, so what the test left can be looked at (a panic that is caught on
/// purpose keeps it too).
#[derive(Debug)]
pub struct TempFolder(PathBuf);

impl TempFolder {
    /// Makes `TMP/ferrolab-LABEL-PID-N`, where `N` counts this process's folders (so two
    /// folders with one label never meet) and `TMP` is [`std::env::temp_dir`]. A folder left
    /// at that path by an earlier process with the same PID is emptied first.
    pub fn new(label: &str) -> std::io::Result<TempFolder> {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ferrolab-{label}-{}-{n}", std::process::id()));
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir(&path)?;
        Ok(TempFolder(path))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Gives up the removal: the folder stays, and its path is returned.
    pub fn keep(self) -> PathBuf {
        let mut me = std::mem::ManuallyDrop::new(self);
        std::mem::take(&mut me.0)
    }
}

impl std::ops::Deref for TempFolder {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempFolder {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempFolder {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Refuses to read `path` unless it is a regular file (through links): a device such as
/// `/dev/zero` would be read until memory runs out, and a pipe nobody writes to would block
/// for ever. The error's kind is `InvalidInput`.
pub fn check_regular(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            if meta.is_dir() {
                "is a folder, not a file"
            } else {
                "is not a regular file (a device or a pipe): it is not read"
            },
        ))
    }
}

/// [`std::fs::read`] of a regular file only ([`check_regular`]).
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    check_regular(path)?;
    std::fs::read(path)
}

/// [`std::fs::read_to_string`] of a regular file only ([`check_regular`]).
pub fn read_regular_to_string(path: &Path) -> std::io::Result<String> {
    check_regular(path)?;
    std::fs::read_to_string(path)
}

/// How [`AtomicFile`] treats a destination that is a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// The link is replaced by the new file, as a rename does (a link to a device is
    /// written through: see [`AtomicFile`]).
    Replace,
    /// A link to a regular file has that file replaced, and the link stays (for files a user
    /// names on the command line, which may be links they keep on purpose).
    Follow,
}

/// Where an [`AtomicFile`]'s bytes go.
enum Sink {
    /// A temporary file beside the destination, renamed over it at the commit.
    Temp(PathBuf, BufWriter<File>),
    /// A device, a terminal or a pipe, written as the bytes come (nothing to replace).
    Device(BufWriter<File>),
    /// This process's standard output or error (a copy of its descriptor).
    Stream(BufWriter<File>),
    /// Memory, written over the destination at the commit: a regular file in a folder where
    /// no temporary file can be made ([`Links::Follow`] only).
    InPlace(Vec<u8>),
    /// Committed or dropped.
    Done,
}

/// A file being written atomically: write to it (it is buffered), then [`AtomicFile::commit`].
/// Dropped without a commit (an error on the way), it removes its temporary file and the
/// destination is left as it was.
///
/// A destination that is not a regular file or a folder (`/dev/null`, a terminal, a pipe) is
/// written directly: it cannot be replaced, and is not replaced.
pub struct AtomicFile {
    dest: PathBuf,
    sink: Sink,
}

impl AtomicFile {
    /// Starts writing `dest` (nothing at `dest` changes until the commit); a link at `dest` is
    /// replaced ([`Links::Replace`]).
    ///
    /// The new file takes the permissions of the one it replaces (a hard link to the old file
    /// keeps the old contents, as with any rename). A `dest` that is a folder is refused
    /// before anything is written.
    pub fn create(dest: &Path) -> std::io::Result<AtomicFile> {
        AtomicFile::create_with(dest, Links::Replace)
    }

    /// [`AtomicFile::create`], with the given treatment of a link at `dest`. With
    /// [`Links::Follow`], a regular file in a folder this process cannot write to (so no
    /// temporary file can be made beside it) is written over in place at the commit (the
    /// bytes are held in memory until then; a failure of that last write can leave it cut
    /// short, as any plain write).
    pub fn create_with(dest: &Path, links: Links) -> std::io::Result<AtomicFile> {
        // this process's own standard output or error, by any name (`/dev/stdout`, a link to
        // it, ...): written through the descriptor it has, so that a file the shell redirected
        // it to is neither replaced nor written from its start
        if let Some(stream) = own_stream(dest)? {
            return Ok(AtomicFile {
                dest: dest.to_path_buf(),
                sink: Sink::Stream(BufWriter::new(stream)),
            });
        }
        let dest = match std::fs::canonicalize(dest) {
            // (only to a regular file: a link to a device is written through below)
            Ok(real) if links == Links::Follow && dest.is_symlink() && real.is_file() => real,
            _ => dest.to_path_buf(),
        };
        // another open descriptor (`/dev/fd/3`): written through, never replaced
        let given = dest.to_string_lossy();
        if given.starts_with("/dev/fd/") || given.starts_with("/proc/") {
            let f = File::options().write(true).truncate(true).open(&dest)?;
            return Ok(AtomicFile {
                dest,
                sink: Sink::Device(BufWriter::new(f)),
            });
        }
        match std::fs::metadata(&dest) {
            Ok(m) if m.is_dir() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "is a folder, where a file is to be written",
                ))
            }
            Ok(m) if !m.is_file() => {
                let f = File::options().write(true).truncate(true).open(&dest)?;
                return Ok(AtomicFile {
                    dest,
                    sink: Sink::Device(BufWriter::new(f)),
                });
            }
            _ => {}
        }
        let tmp = temp_path(&dest);
        // made and registered at once, so that a stop request cannot miss it
        let made = {
            let mut live = live();
            if CLOSING.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the process is stopping",
                ));
            }
            let f = File::options().write(true).create_new(true).open(&tmp);
            if f.is_ok() {
                live.push(tmp.clone());
            }
            f
        };
        let f = match made {
            Ok(f) => f,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) && links == Links::Follow
                    && dest.is_file() =>
            {
                return Ok(AtomicFile {
                    dest,
                    sink: Sink::InPlace(Vec::new()),
                });
            }
            Err(e) => return Err(e),
        };
        let file = AtomicFile {
            dest,
            sink: Sink::Temp(tmp, BufWriter::with_capacity(1 << 20, f)),
        };
        if let (Ok(old), Sink::Temp(_, out)) = (std::fs::metadata(&file.dest), &file.sink) {
            out.get_ref().set_permissions(old.permissions())?; // (dropped: removed)
        }
        Ok(file)
    }

    /// Flushes and fsyncs a temporary file (the first half of a commit); writes a device's
    /// rest, or an in-place file whole.
    fn finish(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Temp(_, out) => {
                out.flush()?;
                out.get_ref().sync_all()
            }
            Sink::Device(out) => out.flush(),
            Sink::Stream(out) => out.flush(),
            Sink::InPlace(bytes) => {
                let mut f = File::options()
                    .write(true)
                    .truncate(true)
                    .open(&self.dest)?;
                f.write_all(bytes)?;
                f.sync_all()?;
                self.sink = Sink::Done;
                Ok(())
            }
            Sink::Done => Ok(()),
        }
    }

    /// Moves a complete temporary file into place.
    fn rename(mut self) -> std::io::Result<()> {
        let Sink::Temp(tmp, _) = &self.sink else {
            self.sink = Sink::Done;
            return Ok(());
        };
        std::fs::rename(tmp, &self.dest)?;
        live().retain(|p| p != tmp);
        self.sink = Sink::Done;
        if let Ok(d) = File::open(folder(&self.dest)) {
            let _ = d.sync_all(); // best effort: not every platform can fsync a folder
        }
        Ok(())
    }

    /// Flushes, fsyncs and renames the file over its destination.
    pub fn commit(mut self) -> std::io::Result<()> {
        self.finish()?;
        let _renaming = renaming();
        self.rename()
    }

    #[cfg(test)]
    fn temp(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Temp(tmp, _) => Some(tmp),
            _ => None,
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Sink::Temp(_, out) | Sink::Device(out) => out.write(buf),
            Sink::Stream(out) => out.write(buf),
            Sink::InPlace(bytes) => bytes.write(buf),
            Sink::Done => Err(std::io::Error::other("written after its commit")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Temp(_, out) | Sink::Device(out) => out.flush(),
            Sink::Stream(out) => out.flush(),
            _ => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Sink::Temp(tmp, out) = std::mem::replace(&mut self.sink, Sink::Done) {
            // (into_parts: no flush of what is left in the buffer)
            drop(out.into_parts());
            let _ = std::fs::remove_file(&tmp);
            live().retain(|p| p != &tmp);
        }
    }
}

/// Writes `bytes` to `dest` atomically. The error is the first that happened (the
/// destination is unchanged then).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(dest, bytes, Links::Replace)
}

/// [`write_atomic`] with the given treatment of a link at `dest`.
pub fn write_atomic_with(dest: &Path, bytes: &[u8], links: Links) -> std::io::Result<()> {
    let mut f = AtomicFile::create_with(dest, links)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Writes several files that belong together: each is written and fsynced under its
/// temporary name, and only when all of them are complete are they renamed into place, in
/// order. A failure while writing (a full disk) leaves every destination as it was; the error
/// names the file.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<(), (PathBuf, std::io::Error)> {
    let mut done = Vec::new();
    for (dest, bytes) in files {
        let write = || -> std::io::Result<AtomicFile> {
            let mut f = AtomicFile::create(dest)?;
            f.write_all(bytes)?;
            f.finish()?;
            Ok(f)
        };
        done.push(write().map_err(|e| (dest.to_path_buf(), e))?);
    }
    let _renaming = renaming();
    for f in done {
        let dest = f.dest.clone();
        f.rename().map_err(|e| (dest, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> TempFolder {
        TempFolder::new(&format!("files-{name}")).unwrap()
    }

    #[test]
    fn temp_folders_are_removed_when_dropped_and_kept_after_a_panic() {
        let (a, b) = (scratch("same"), scratch("same"));
        assert_ne!(a.path(), b.path());
        std::fs::create_dir_all(a.join("inner")).unwrap();
        std::fs::write(a.join("inner/file"), b"x").unwrap();
        let (pa, pb) = (a.to_path_buf(), b.to_path_buf());
        assert!(pa.starts_with(std::env::temp_dir()) && pa.is_dir() && pb.is_dir());
        drop(a);
        assert!(
            !pa.exists(),
            "a dropped folder and its contents are removed"
        );
        // kept on request
        let kept = b.keep();
        assert!(kept.is_dir());
        std::fs::remove_dir_all(&kept).unwrap();
        // kept when the thread that owns it panics (a failing test)
        let held = std::thread::spawn(|| {
            let c = scratch("panicking");
            let p = c.to_path_buf();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _c = c;
                panic!("a failing test");
            }))
            .unwrap_err();
            p
        })
        .join()
        .unwrap();
        assert!(held.is_dir());
        std::fs::remove_dir_all(&held).unwrap();
    }

    #[test]
    fn a_write_replaces_the_file_whole_or_not_at_all() {
        let d = scratch("whole");
        let p = d.join("out.txt");
        write_atomic(&p, b"old").unwrap();
        // an error before the commit (dropped): the old file stays, no temporary is left
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"half of the new").unwrap();
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        // the permissions of the file replaced are kept
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            write_atomic(&p, b"private").unwrap();
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // a folder where the file goes is refused, and left alone
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory);
        assert!(sub.is_dir());
        std::fs::remove_dir(&sub).unwrap();
        // a name close to the 255-byte limit still gets a temporary name
        let long = d.join(format!("{}.st", "é".repeat(125)));
        write_atomic(&long, b"x").unwrap();
        assert_eq!(std::fs::read(&long).unwrap(), b"x");
        // a folder that is not there: the error, and nothing written
        assert!(write_atomic(&d.join("no/such.txt"), b"x").is_err());
        #[cfg(unix)]
        {
            // Follow: through a link to a file, which is replaced; a link to nothing is
            // replaced by the file
            let (real, link, dangling) = (d.join("real"), d.join("link"), d.join("dangling"));
            std::fs::write(&real, b"old").unwrap();
            std::os::unix::fs::symlink(&real, &link).unwrap();
            std::os::unix::fs::symlink(d.join("gone/x"), &dangling).unwrap();
            write_atomic_with(&link, b"new", Links::Follow).unwrap();
            assert!(link.is_symlink());
            assert_eq!(std::fs::read(&real).unwrap(), b"new");
            write_atomic_with(&dangling, b"file", Links::Follow).unwrap();
            assert!(!dangling.is_symlink());
            assert_eq!(std::fs::read(&dangling).unwrap(), b"file");
            // Replace: the link becomes the file, what it pointed to is untouched
            write_atomic(&link, b"own").unwrap();
            assert!(!link.is_symlink());
            assert_eq!(std::fs::read(&link).unwrap(), b"own");
            assert_eq!(std::fs::read(&real).unwrap(), b"new");
            // a pipe (as a device or a terminal), also through a link, is written, never
            // replaced
            use std::os::unix::fs::FileTypeExt;
            let fifo = d.join("fifo");
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .is_ok_and(|s| s.success());
            if made {
                let pipe_link = d.join("to-fifo");
                std::os::unix::fs::symlink(&fifo, &pipe_link).unwrap();
                for (target, links) in [(&fifo, Links::Replace), (&pipe_link, Links::Follow)] {
                    let reader = {
                        let fifo = fifo.clone();
                        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
                    };
                    write_atomic_with(target, b"through the pipe", links).unwrap();
                    assert_eq!(reader.join().unwrap(), b"through the pipe");
                    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
                    assert!(kind.is_fifo());
                }
                assert!(pipe_link.is_symlink());
            }
        }

        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn files_written_together_change_only_when_all_are_complete() {
        let d = scratch("together");
        let (a, b) = (d.join("config.json"), d.join("model.bin"));
        write_all_atomic(&[(&a, b"{1}"), (&b, b"weights 1")]).unwrap();
        // the second cannot be written (its folder is missing): the first is unchanged too
        let missing = d.join("gone/model.bin");
        let e = write_all_atomic(&[(&a, b"{2}"), (&missing, b"weights 2")]).unwrap_err();
        assert_eq!(e.0, missing);
        assert_eq!(std::fs::read(&a).unwrap(), b"{1}");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            2,
            "temporaries removed"
        );
        write_all_atomic(&[(&a, b"{3}"), (&b, b"weights 3")]).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"{3}");
        assert_eq!(std::fs::read(&b).unwrap(), b"weights 3");
        // a folder in place of the last one: refused before any file is replaced
        let (c, folder) = (d.join("c"), d.join("tokenizer.json"));
        std::fs::create_dir(&folder).unwrap();
        write_all_atomic(&[(&a, b"{4}"), (&c, b"c"), (&folder, b"t")]).unwrap_err();
        assert_eq!(std::fs::read(&a).unwrap(), b"{3}");
        assert!(!c.exists() && folder.is_dir());
        std::fs::remove_dir(&folder).unwrap();
        // two destinations with the same first 200 bytes of name get their own temporaries
        let stem = "n".repeat(200);
        let (x, y) = (d.join(format!("{stem}x")), d.join(format!("{stem}y")));
        write_all_atomic(&[(&x, b"x"), (&y, b"y")]).unwrap();
        assert_eq!(
            (std::fs::read(&x).unwrap(), std::fs::read(&y).unwrap()),
            (b"x".to_vec(), b"y".to_vec())
        );
        // what a kill leaves is recognised by its name
        let left = AtomicFile::create(&x).unwrap();
        let tmp_name = left
            .temp()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(is_temp_name(&tmp_name), "{tmp_name}");
        drop(left);
        for name in [
            "config.json",
            ".lock",
            ".x.tmp-",
            "a.tmp-12-3",
            ".tmp",
            ".tmp-1-2",
            ".x.tmp--",
            ".notes.tmp-2024-05-01",
            ".x.tmp-12",
        ] {
            assert!(!is_temp_name(name), "{name}");
        }
        assert!(is_temp_name(".config.json.tmp-123-0"));
        assert_eq!(temp_name_pid(".config.json.tmp-123-0"), Some(123));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
