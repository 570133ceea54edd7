//! The raw `bpf(2)` system call, and errno names for error messages.
//!
//! Everything that aya does not cover (map access by raw bytes, `BPF_PROG_TEST_RUN`, probing)
//! goes through [`bpf`]. Attribute structs are `#[repr(C)]` prefixes of the kernel's
//! `union bpf_attr` (include/uapi/linux/bpf.h); passing a prefix is allowed: the kernel
//! zero-fills the fields it knows beyond `size`. Every struct must be free of implicit padding
//! (padding bytes are not zeroed, and the kernel refuses non-zero bytes it does not know):
//! each module asserts its structs' sizes.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

// `enum bpf_cmd`.
pub(crate) const BPF_MAP_CREATE: u32 = 0;
pub(crate) const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub(crate) const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub(crate) const BPF_MAP_DELETE_ELEM: u32 = 3;
pub(crate) const BPF_MAP_GET_NEXT_KEY: u32 = 4;
pub(crate) const BPF_PROG_LOAD: u32 = 5;
pub(crate) const BPF_OBJ_GET: u32 = 7;
pub(crate) const BPF_PROG_TEST_RUN: u32 = 10;
pub(crate) const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;

/// Calls `bpf(cmd, attr, sizeof(*attr))`, retrying on `EINTR`.
///
/// # Safety
/// `attr` must be a valid attribute struct for `cmd`; every pointer it holds must point to
/// memory that is valid for the sizes it declares, for reads and (where the kernel writes) writes.
pub(crate) unsafe fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    loop {
        // SAFETY: the caller upholds the contract on `attr`; the size passed is its real size.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                attr as *mut T as *mut libc::c_void,
                std::mem::size_of::<T>() as libc::c_long,
            )
        };
        if ret >= 0 {
            return Ok(ret as i64);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(err);
    }
}

/// Like [`bpf`], for commands that return a new file descriptor.
///
/// # Safety
/// As for [`bpf`].
pub(crate) unsafe fn bpf_fd<T>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: forwarded contract.
    let fd = unsafe { bpf(cmd, attr) }?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other(format!("bpf() returned an impossible fd {fd}")))?;
    // SAFETY: the kernel just created this descriptor and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pointer as the kernel's `__aligned_u64`.
pub(crate) fn ptr_u64<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// The symbolic name of an errno value, for messages (`EACCES`), where known.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        // Kernel-internal, but bpf() does return it to user space.
        524 => "ENOTSUPP",
        _ => return None,
    })
}

/// `EACCES (Permission denied)`: the errno's name and the C library's text.
pub fn errno_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => {
            let text = if errno == 524 {
                "Operation is not supported".to_string()
            } else {
                // io::Error's Display is "Permission denied (os error 13)"; keep the words.
                let s = io::Error::from_raw_os_error(errno).to_string();
                match s.rfind(" (os error") {
                    Some(i) => s[..i].to_string(),
                    None => s,
                }
            };
            match errno_name(errno) {
                Some(name) => format!("{name} ({text})"),
                None => format!("errno {errno} ({text})"),
            }
        }
        None => err.to_string(),
    }
}

/// The object bytes copied into 8-byte-aligned memory: ELF parsers may require natural
/// alignment of the headers they cast, and callers hand us arbitrary slices.
pub(crate) struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    pub(crate) fn new(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` has at least `bytes.len()` bytes; u64 has no invalid bit patterns.
        let dst = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) };
        dst[..bytes.len()].copy_from_slice(bytes);
        Aligned {
            words,
            len: bytes.len(),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialized bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_names_the_errno() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(errno_text(&e), "EACCES (Permission denied)");
        let e = io::Error::from_raw_os_error(524);
        assert_eq!(errno_text(&e), "ENOTSUPP (Operation is not supported)");
    }

    #[test]
    fn aligned_copy_keeps_bytes() {
        let data: Vec<u8> = (0..13).collect();
        let a = Aligned::new(&data[1..]);
        assert_eq!(a.bytes(), &data[1..]);
        assert_eq!(a.bytes().as_ptr() as usize % 8, 0);
        assert!(Aligned::new(&[]).bytes().is_empty());
    }
}
