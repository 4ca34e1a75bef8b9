//! `tessera image lock` against the host's apt (reads the local package lists; no download).

use tessera_image::lock::{self, LockFile, LockOutcome, Role};
use tessera_image::programs::ProgramList;
use tessera_image::ImageError;

#[test]
fn lock_is_created_then_up_to_date_then_stale_until_updated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("packages.lock");
    let programs =
        ProgramList::parse("[[program]]\npath = \"/usr/sbin/nft\"\npackage = \"nftables\"\n")
            .unwrap();

    let LockOutcome::Created(created) = lock::lock(&path, &programs, false).unwrap() else {
        panic!("a missing lock file is created");
    };
    let kernel = created.get(Role::Kernel);
    assert!(
        kernel.name.starts_with("linux-image-") && kernel.name.ends_with("-cloud-amd64"),
        "{kernel:?}"
    );
    assert_ne!(
        kernel.name,
        lock::KERNEL_METAPACKAGE,
        "the metapackage is resolved to the concrete package"
    );
    assert_eq!(created.get(Role::Busybox).name, "busybox-static");
    assert_eq!(created.get(Role::EfiStub).name, "systemd-boot-efi");
    assert_eq!(created.runtime("nftables").unwrap().role, Role::Program);
    for lib in ["libc6", "libnftables1", "libnftnl11", "libmnl0"] {
        let p = created
            .runtime(lib)
            .unwrap_or_else(|| panic!("{lib} in the library closure of nftables"));
        assert_eq!(p.role, Role::Library);
    }
    assert_eq!(LockFile::load(&path).unwrap(), created);

    assert!(matches!(
        lock::lock(&path, &programs, false).unwrap(),
        LockOutcome::UpToDate(_)
    ));

    // Pretend Debian moved on: the old pin is reported, and only --update rewrites it.
    let mut old = created.clone();
    old.packages
        .iter_mut()
        .find(|p| p.role == Role::Busybox)
        .unwrap()
        .version = "1:1.30.0-1".into();
    std::fs::write(&path, old.render()).unwrap();
    let err = lock::lock(&path, &programs, false).unwrap_err();
    assert!(matches!(err, ImageError::LockStale { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("busybox: busybox-static 1:1.30.0-1 ->"),
        "{err}"
    );
    assert_eq!(
        LockFile::load(&path).unwrap(),
        old,
        "without --update the file is left alone"
    );

    let LockOutcome::Updated(updated, changes) = lock::lock(&path, &programs, true).unwrap() else {
        panic!("--update rewrites a stale lock");
    };
    assert_eq!(updated, created);
    assert_eq!(changes.len(), 1);
    assert_eq!(LockFile::load(&path).unwrap(), created);
}
