//! The Btrfs ioctls the btrfs backend uses (linux/btrfs.h): subvolume create, snapshot
//! (optionally read-only), destroy, and the read-only flag. Arguments are built as data by
//! plain functions (tested on the host); only the calls themselves are `unsafe`.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

pub const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// `BTRFS_SUBVOL_RDONLY`: the snapshot is read-only.
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOL_ROOT_INO: u64 = 256;
/// `BTRFS_SUBVOL_NAME_MAX` + 1: the name field of `btrfs_ioctl_vol_args_v2`.
pub const NAME_LEN_V2: usize = 4040;

/// `struct btrfs_ioctl_vol_args_v2` (4096 bytes): fd, transid, flags, the size/qgroup union
/// (unused here), then the name.
#[repr(C)]
pub struct VolArgsV2 {
    pub fd: i64,
    pub transid: u64,
    pub flags: u64,
    pub unused: [u64; 4],
    pub name: [u8; NAME_LEN_V2],
}

nix::ioctl_write_ptr!(snap_create_v2, BTRFS_IOCTL_MAGIC, 23, VolArgsV2);
nix::ioctl_write_ptr!(subvol_create_v2, BTRFS_IOCTL_MAGIC, 24, VolArgsV2);
nix::ioctl_read!(subvol_getflags, BTRFS_IOCTL_MAGIC, 25, u64);
nix::ioctl_write_ptr!(snap_destroy_v2, BTRFS_IOCTL_MAGIC, 63, VolArgsV2);

/// The arguments naming `name` (in the directory the ioctl is called on), with `fd` the
/// source subvolume of a snapshot (0 otherwise) and `flags`.
pub fn vol_args(name: &str, fd: i64, flags: u64) -> Result<Box<VolArgsV2>, Errno> {
    let bytes = name.as_bytes();
    // The kernel wants a NUL-terminated component.
    if bytes.is_empty() || bytes.len() >= NAME_LEN_V2 || bytes.contains(&0) || bytes.contains(&b'/')
    {
        return Err(Errno::EINVAL);
    }
    let mut args = Box::new(VolArgsV2 {
        fd,
        transid: 0,
        flags,
        unused: [0; 4],
        name: [0; NAME_LEN_V2],
    });
    args.name[..bytes.len()].copy_from_slice(bytes);
    Ok(args)
}

/// Creates subvolume `name` in the directory `dir`.
pub fn create_subvolume(dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let args = vol_args(name, 0, 0)?;
    // SAFETY: `dir` is an open fd; `args` is a valid, fully initialised VolArgsV2 that
    // outlives the call.
    unsafe { subvol_create_v2(dir.as_raw_fd(), &*args) }.map(drop)
}

/// Snapshots the subvolume open as `source` into `dir/name`.
pub fn snapshot(
    source: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &str,
    readonly: bool,
) -> Result<(), Errno> {
    let flags = if readonly { SUBVOL_RDONLY } else { 0 };
    let args = vol_args(name, source.as_raw_fd().into(), flags)?;
    // SAFETY: both fds are open; `args` is valid for the call.
    unsafe { snap_create_v2(dir.as_raw_fd(), &*args) }.map(drop)
}

/// Deletes subvolume `dir/name` (a snapshot or a volume).
pub fn destroy(dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let args = vol_args(name, 0, 0)?;
    // SAFETY: `dir` is open; `args` is valid for the call.
    unsafe { snap_destroy_v2(dir.as_raw_fd(), &*args) }.map(drop)
}

/// Whether the subvolume open as `subvol` is read-only.
pub fn is_readonly(subvol: BorrowedFd<'_>) -> Result<bool, Errno> {
    let mut flags: u64 = 0;
    // SAFETY: `subvol` is open; the kernel writes one u64 into `flags`.
    unsafe { subvol_getflags(subvol.as_raw_fd(), &mut flags) }?;
    Ok(flags & SUBVOL_RDONLY != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_struct_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::offset_of!(VolArgsV2, flags), 16);
        assert_eq!(std::mem::offset_of!(VolArgsV2, name), 56);
    }

    #[test]
    fn request_numbers_match_linux_btrfs_h() {
        // Values from linux/btrfs.h as compiled for x86_64.
        let w = |nr| nix::request_code_write!(BTRFS_IOCTL_MAGIC, nr, 4096);
        assert_eq!(w(23), 0x5000_9417); // BTRFS_IOC_SNAP_CREATE_V2
        assert_eq!(w(24), 0x5000_9418); // BTRFS_IOC_SUBVOL_CREATE_V2
        assert_eq!(w(63), 0x5000_943f); // BTRFS_IOC_SNAP_DESTROY_V2
        assert_eq!(
            nix::request_code_read!(BTRFS_IOCTL_MAGIC, 25, 8),
            0x8008_9419 // BTRFS_IOC_SUBVOL_GETFLAGS
        );
    }

    #[test]
    fn args_carry_name_source_and_flags() {
        let a = vol_args("snap-1", 7, SUBVOL_RDONLY).unwrap();
        assert_eq!(&a.name[..7], b"snap-1\0");
        assert_eq!(a.fd, 7);
        assert_eq!(a.flags, 2);
        assert_eq!(a.transid, 0);
        assert_eq!(vol_args("", 0, 0).err(), Some(Errno::EINVAL));
        assert_eq!(vol_args("a/b", 0, 0).err(), Some(Errno::EINVAL));
        assert_eq!(
            vol_args(&"x".repeat(NAME_LEN_V2), 0, 0).err(),
            Some(Errno::EINVAL)
        );
    }
}
