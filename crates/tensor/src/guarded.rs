//! Test buffers next to an unreadable page: a kernel that reads or writes past the end (or
//! before the start) of its slice faults at once, instead of passing unseen with whatever
//! the neighbouring memory held.

use std::ptr::NonNull;

/// `n` floats placed against a page that cannot be read or written: after the last float or
/// before the first ([`Guarded::new`]). Unmapped on drop.
pub(crate) struct Guarded {
    map: NonNull<libc::c_void>,
    map_len: usize,
    data: *mut f32,
    n: usize,
}

impl Guarded {
    /// `values`, ending where the guard page begins (`guard_after`), or starting where it ends.
    pub(crate) fn new(values: &[f32], guard_after: bool) -> Guarded {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = std::mem::size_of_val(values);
        let data_pages = bytes.div_ceil(page).max(1);
        let map_len = (data_pages + 1) * page;
        // SAFETY: a fresh private anonymous mapping; the guard page lies inside it.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(map != libc::MAP_FAILED, "mmap of {map_len} bytes failed");
            let base = map.cast::<u8>();
            let (guard, data) = if guard_after {
                let guard = base.add(data_pages * page);
                (guard, guard.sub(bytes))
            } else {
                (base, base.add(page))
            };
            assert_eq!(libc::mprotect(guard.cast(), page, libc::PROT_NONE), 0);
            let data = data.cast::<f32>();
            std::ptr::copy_nonoverlapping(values.as_ptr(), data, values.len());
            Guarded {
                map: NonNull::new(map).expect("mmap returned null"),
                map_len,
                data,
                n: values.len(),
            }
        }
    }

    /// The floats.
    pub(crate) fn slice(&self) -> &[f32] {
        // SAFETY: `n` floats written in `new`, mapped until drop.
        unsafe { std::slice::from_raw_parts(self.data, self.n) }
    }

    /// The first float, writable.
    pub(crate) fn ptr(&mut self) -> *mut f32 {
        self.data
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.map.as_ptr(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard is there: a child process that reads one float past the end (or before the
    /// start) is killed by the fault, not by a failed assertion or anything else.
    #[test]
    fn reading_past_either_end_faults() {
        if std::env::var("FERROLAB_GUARD_CHILD").is_ok() {
            // no core file for the deliberate fault
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit reads the struct it is given.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
            let end = std::env::var("FERROLAB_GUARD_CHILD").unwrap() == "end";
            let v = [1.0f32, 2.0, 3.0];
            let mut g = Guarded::new(&v, end);
            assert_eq!(g.slice(), &v);
            // SAFETY: deliberately not: this read must fault
            let x = unsafe {
                std::ptr::read_volatile(if end { g.ptr().add(3) } else { g.ptr().sub(1) })
            };
            println!("read {x} past the guard");
            return;
        }
        for side in ["end", "start"] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["guarded::tests::reading_past_either_end_faults", "--exact"])
                .env("FERROLAB_GUARD_CHILD", side)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            use std::os::unix::process::ExitStatusExt;
            assert!(
                matches!(out.status.signal(), Some(libc::SIGSEGV | libc::SIGBUS)),
                "{side}: {:?}\n{stdout}",
                out.status
            );
        }
    }
}
