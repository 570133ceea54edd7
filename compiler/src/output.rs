//! Writing an output file (an object, a skeleton): a complete new file put in the old one's
//! place.
//!
//! Why not `std::fs::write`: opening an existing file with `O_TRUNC` frees its blocks on the
//! spot, and on a file system mounted with `discard` (ext4 on many VMs and SSDs) that waits
//! for the device, about 4 ms here: more than compiling a program takes. A new file written
//! beside it and then given its name never waits for that, and a reader (a loader, `make`)
//! never sees a half-written object. clang and rustc write their outputs the same way.
//!
//! On Linux the naming is an exchange of the two names (`renameat2(RENAME_EXCHANGE)`), then
//! the old file, now under the temporary name, is removed. A plain rename over an existing
//! file makes ext4 start writing the new file's data out before the rename returns (its
//! `auto_da_alloc` guard against empty files after a crash): 0.1 to 3 ms here, a tenth of a
//! compile; the exchange and the removal take about 40 us. A reader still sees the old or the
//! new object, never neither.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path`. An existing regular file with one link is replaced by a new one
/// (same permissions); anything else (no file yet, a symlink, a device such as /dev/null, a
/// file with other hard links, a directory we cannot create files in) is written in place.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let old = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && links(&m) == 1 => m,
        _ => return std::fs::write(path, bytes),
    };
    let tmp = temporary_path(path);
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
        Ok(f) => f,
        Err(_) => return std::fs::write(path, bytes),
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.set_permissions(old.permissions()))
        .and_then(|()| replace(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Puts `tmp` in `path`'s place (see the module's comment).
fn replace(tmp: &Path, path: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if exchange(tmp, path).is_ok() {
        return std::fs::remove_file(tmp);
    }
    std::fs::rename(tmp, path)
}

/// Swaps the names of two existing files, atomically; fails where the file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput);
    let (a, b) = (c(a)?, c(b)?);
    // The system call rather than the C library's wrapper, which musl (the installed
    // command's C library, scripts/dist-target) does not have.
    // SAFETY: two valid NUL-terminated paths; renameat2 reads them and nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(unix)]
fn links(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(m)
}

#[cfg(not(unix))]
fn links(_: &std::fs::Metadata) -> u64 {
    1
}

/// `dir/.name.luabpf-PID.tmp`: in the same directory (a rename cannot cross file systems),
/// hidden, and distinct for concurrent compiles of the same output.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.luabpf-{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("luabpf-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_file_is_created_and_an_old_one_replaced_with_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("replace");
        let out = dir.join("prog.o");
        write_file(&out, b"first version, longer").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_file(&out, b"second").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"second");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("prog.o")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_and_a_hard_linked_file_are_written_through() {
        let dir = scratch("links");
        let target = dir.join("target.o");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.join("link.o");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_file(&link, b"via symlink").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"via symlink");
        let hard = dir.join("hard.o");
        std::fs::hard_link(&target, &hard).unwrap();
        write_file(&hard, b"via hard link").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"via hard link");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
