//! Importing OCI image layouts: layers applied in order with whiteouts, the image config
//! turned into the process spec, every blob checked, hostile layers refused with the
//! destination left empty; and an image built by the real `umoci`.

#[path = "data/fixtures.rs"]
mod fixtures;
#[path = "data/oci.rs"]
mod oci;

use std::fs;
use std::path::Path;
use std::process::Command;

use fixtures::{busybox, busybox_rootfs, leftovers, sha256, Tb};
use oci::{
    desc, image, layout, layout_named, single, Image, CONFIG, INDEX, LAYER_GZIP, LAYER_TAR,
    LAYER_ZSTD, MANIFEST,
};
use serde_json::{json, Value};
use tessera_container::archive::{self, ImportError, Imported, Kind, Limits};
use tessera_container::spec::{self, DEFAULT_PATH};

fn app_config() -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "Env": ["FOO=bar"],
            "WorkingDir": "/opt",
            "User": "app"
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    })
}

/// Layer 1: busybox, /etc/motd, /opt/data/{a,b,sub/deep}, /opt/keep.
fn base_layer() -> Vec<u8> {
    let mut tb = Tb::new();
    busybox_rootfs(&mut tb, "");
    tb.file("etc/motd", 0o644, b"welcome\n")
        .dir("opt/", 0o755)
        .file("opt/keep", 0o644, b"k")
        .dir("opt/data/", 0o755)
        .file("opt/data/a", 0o644, b"a")
        .file("opt/data/b", 0o644, b"b")
        .dir("opt/data/sub/", 0o755)
        .file("opt/data/sub/deep", 0o644, b"d");
    tb.finish()
}

/// Layer 2: deletes /etc/motd, makes /opt/data opaque (after adding c, before sub/new).
fn whiteout_layer() -> Vec<u8> {
    let mut tb = Tb::new();
    tb.dir("etc/", 0o755)
        .file("etc/.wh.motd", 0o644, b"")
        .dir("opt/data/", 0o755)
        .file("opt/data/c", 0o644, b"c")
        .file("opt/data/.wh..wh..opq", 0o644, b"")
        .dir("opt/data/sub/", 0o755)
        .file("opt/data/sub/new", 0o644, b"n")
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o755)
        .file("usr/bin/hello", 0o755, b"#!/bin/sh\necho hello\n");
    tb.finish()
}

fn import(bytes: &[u8], dest: &Path) -> Result<Imported, ImportError> {
    archive::import(bytes, dest, &Limits::default(), None, &mut |_| {})
}

fn refused(bytes: &[u8], code: &str) -> ImportError {
    let tmp = tempfile::tempdir().unwrap();
    let err = import(bytes, tmp.path()).expect_err("the import must be refused");
    assert_eq!(err.code(), code, "wrong refusal: {err}");
    assert_eq!(
        leftovers(tmp.path()),
        Vec::<String>::new(),
        "the import left files behind ({err})"
    );
    err
}

#[test]
fn two_layers_with_whiteouts_and_an_opaque_directory() {
    let img = image(
        vec![(LAYER_GZIP, base_layer()), (LAYER_ZSTD, whiteout_layer())],
        app_config(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let imported = import(&single(&img), tmp.path()).unwrap();
    assert_eq!(imported.kind, Kind::ImageLayout);
    let mut names = leftovers(tmp.path());
    names.sort();
    assert_eq!(
        names,
        ["config.json", "rootfs"],
        "the staging blobs are gone"
    );

    let r = tmp.path().join("rootfs");
    assert_eq!(fs::read(r.join("bin/busybox")).unwrap(), busybox());
    assert_eq!(
        fs::read_link(r.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(r.join("etc/passwd").exists());
    assert!(!r.join("etc/motd").exists(), ".wh.motd deleted etc/motd");
    assert!(
        !r.join("etc/.wh.motd").exists(),
        "whiteouts are not created"
    );
    assert!(
        !r.join("opt/data/a").exists() && !r.join("opt/data/b").exists(),
        "opaque dir emptied"
    );
    assert!(
        !r.join("opt/data/sub/deep").exists(),
        "opaque hides the lower subtree too"
    );
    assert_eq!(
        fs::read(r.join("opt/data/c")).unwrap(),
        b"c",
        "the layer's own entries stay"
    );
    assert_eq!(fs::read(r.join("opt/data/sub/new")).unwrap(), b"n");
    assert!(!r.join("opt/data/.wh..wh..opq").exists());
    assert!(
        r.join("opt/keep").exists(),
        "the opaque dir's siblings stay"
    );
    assert!(r.join("usr/bin/hello").exists());

    let process = imported.spec.process().as_ref().unwrap();
    assert_eq!(
        process.args().clone().unwrap(),
        ["/bin/sh", "-c", "echo hi"]
    );
    assert_eq!(process.env().clone().unwrap(), [DEFAULT_PATH, "FOO=bar"]);
    assert_eq!(process.cwd(), Path::new("/opt"));
    assert_eq!((process.user().uid(), process.user().gid()), (1000, 1000));
    assert_eq!(
        process.user().additional_gids().clone().unwrap(),
        [10],
        "app is in wheel"
    );
    let written = spec::load(tmp.path()).unwrap();
    assert_eq!(written, imported.spec, "config.json is the spec returned");
}

fn rootfs_with(passwd: &[u8], group: &[u8]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("etc")).unwrap();
    fs::write(tmp.path().join("etc/passwd"), passwd).unwrap();
    fs::write(tmp.path().join("etc/group"), group).unwrap();
    tmp
}

fn spec_for(config: Value, rootfs: &Path) -> Result<oci_spec::runtime::Spec, spec::SpecError> {
    let cfg: oci_spec::image::ImageConfiguration = serde_json::from_value(config).unwrap();
    spec::from_image_config(&cfg, rootfs)
}

fn ids(user: &str, rootfs: &Path) -> (u32, u32, Vec<u32>) {
    let s = spec_for(
        json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["x"], "User": user},
        "rootfs": {"type": "layers", "diff_ids": []}}),
        rootfs,
    )
    .unwrap_or_else(|e| panic!("{user}: {e}"));
    let u = s.process().as_ref().unwrap().user().clone();
    (
        u.uid(),
        u.gid(),
        u.additional_gids().clone().unwrap_or_default(),
    )
}

#[test]
fn image_config_becomes_the_process_spec() {
    let root = rootfs_with(fixtures::PASSWD, fixtures::GROUP);
    let base = |c: Value| {
        json!({"architecture": "amd64", "os": "linux", "config": c,
        "rootfs": {"type": "layers", "diff_ids": []}})
    };
    let args = |c: Value| {
        let s = spec_for(base(c), root.path()).unwrap();
        s.process().as_ref().unwrap().args().clone().unwrap()
    };
    assert_eq!(args(json!({"Cmd": ["/bin/sh"]})), ["/bin/sh"]);
    assert_eq!(
        args(json!({"Entrypoint": ["/bin/busybox", "httpd"]})),
        ["/bin/busybox", "httpd"]
    );
    assert_eq!(
        args(json!({"Entrypoint": ["/e"], "Cmd": ["a", "b"]})),
        ["/e", "a", "b"]
    );

    let s = spec_for(
        base(json!({"Cmd": ["x"], "Env": ["PATH=/bin", "A=1"]})),
        root.path(),
    )
    .unwrap();
    let p = s.process().as_ref().unwrap();
    assert_eq!(
        p.env().clone().unwrap(),
        ["PATH=/bin", "A=1"],
        "the image's PATH is kept"
    );
    assert_eq!(p.cwd(), Path::new("/"), "WorkingDir defaults to /");
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(s.hostname(), &None);
    assert_eq!(p.terminal(), Some(false));

    assert_eq!(
        ids("1000", root.path()),
        (1000, 1000, vec![10]),
        "a bare uid takes its passwd group"
    );
    assert_eq!(
        ids("4242", root.path()),
        (4242, 0, vec![]),
        "an unknown uid gets gid 0"
    );
    assert_eq!(ids("1000:5", root.path()), (1000, 5, vec![10]));
    assert_eq!(ids("app", root.path()), (1000, 1000, vec![10]));
    assert_eq!(ids("app:wheel", root.path()), (1000, 10, vec![]));
    assert_eq!(ids("root:app", root.path()), (0, 1000, vec![]));

    let err = spec_for(base(json!({"Cmd": ["x"], "User": "bob"})), root.path()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("image config: User \"bob\": no such user in /etc/passwd"),
        "{err}"
    );
    let err = spec_for(
        base(json!({"Cmd": ["x"], "User": "app:staff"})),
        root.path(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("User \"app:staff\": no such group in /etc/group"),
        "{err}"
    );
    let err = spec_for(base(json!({"Env": ["A=1"]})), root.path()).unwrap_err();
    assert!(err.to_string().contains("Entrypoint/Cmd"), "{err}");
}

#[test]
fn passwd_is_read_inside_the_rootfs_never_the_hosts() {
    // /etc/passwd -> ../../../../../../usr/lib/passwd: climbing stops at the image's root.
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::create_dir_all(root.path().join("usr/lib")).unwrap();
    fs::write(
        root.path().join("usr/lib/passwd"),
        b"inside:x:4242:4343::/:/bin/sh\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../usr/lib/passwd",
        root.path().join("etc/passwd"),
    )
    .unwrap();
    assert_eq!(ids("inside", root.path()), (4242, 4343, vec![]));
    let base = json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["x"], "User": "root"},
        "rootfs": {"type": "layers", "diff_ids": []}});
    let err = spec_for(base.clone(), root.path()).unwrap_err();
    assert!(
        err.to_string().contains("no such user"),
        "the host's root must not be found: {err}"
    );

    // An absolute link to the host's file resolves inside the rootfs, where there is none.
    fs::remove_file(root.path().join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow-of-host", root.path().join("etc/passwd")).unwrap();
    let err = spec_for(base, root.path()).unwrap_err();
    assert!(err.to_string().contains("no /etc/passwd"), "{err}");
}

#[test]
fn a_layer_whose_digest_does_not_match_is_refused() {
    let img = image(vec![(LAYER_TAR, base_layer())], app_config());
    let mut named: Vec<(String, Vec<u8>)> =
        img.blobs.iter().map(|b| (sha256(b), b.clone())).collect();
    // Flip one byte inside /etc/motd's data: the tar still parses, the digest does not match.
    let layer = &mut named[0].1;
    let at = layer.windows(8).position(|w| w == b"welcome\n").unwrap();
    layer[at] = b'W';
    let e = refused(
        &layout_named(vec![img.manifest.clone()], &named),
        "digest_mismatch",
    );
    assert!(e.to_string().contains("layer sha256:"), "{e}");
}

#[test]
fn size_mismatch_missing_blob_and_diff_id_mismatch_are_refused() {
    let img = image(vec![(LAYER_GZIP, base_layer())], app_config());
    let mut manifest = img.manifest.clone();
    manifest["size"] = json!(manifest["size"].as_u64().unwrap() + 1);
    refused(&layout(vec![manifest], &img.blobs), "size_mismatch");

    let without_layer = &img.blobs[1..];
    refused(
        &layout(vec![img.manifest.clone()], without_layer),
        "missing_blob",
    );

    let mut config = app_config();
    config["os"] = json!("linux");
    let mut img = image(vec![(LAYER_GZIP, base_layer())], config);
    // Rewrite the config with a wrong diff_id, and the manifest to match the new config.
    let mut cfg: Value = serde_json::from_slice(&img.blobs[1]).unwrap();
    cfg["rootfs"]["diff_ids"] = json!([sha256(b"not the layer")]);
    let cfg = serde_json::to_vec(&cfg).unwrap();
    let mut m: Value = serde_json::from_slice(&img.blobs[2]).unwrap();
    m["config"] = desc(CONFIG, &cfg);
    let m = serde_json::to_vec(&m).unwrap();
    img.manifest = desc(MANIFEST, &m);
    img.blobs[1] = cfg;
    img.blobs[2] = m;
    let e = refused(&single(&img), "digest_mismatch");
    assert!(e.to_string().contains("diff_ids"), "{e}");
}

#[test]
fn hostile_layers_are_refused() {
    let mut tb = Tb::new();
    tb.file("../escaped", 0o644, b"x");
    refused(
        &single(&image(vec![(LAYER_TAR, tb.finish())], app_config())),
        "path_escapes",
    );

    let mut tb = Tb::new();
    tb.special("dev/null", tar::EntryType::Char);
    refused(
        &single(&image(vec![(LAYER_TAR, tb.finish())], app_config())),
        "device_node",
    );

    let mut tb = Tb::new();
    tb.symlink("etc", "/etc")
        .file("etc/passwd", 0o644, b"evil\n");
    refused(
        &single(&image(vec![(LAYER_TAR, tb.finish())], app_config())),
        "through_symlink",
    );
}

#[test]
fn a_whiteout_below_a_symlink_deletes_nothing_outside() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("victim"), b"keep me").unwrap();
    let mut l1 = Tb::new();
    busybox_rootfs(&mut l1, "");
    l1.symlink("out", outside.path().to_str().unwrap());
    let mut l2 = Tb::new();
    l2.file("out/.wh.victim", 0o644, b"");
    let img = image(
        vec![(LAYER_TAR, l1.finish()), (LAYER_TAR, l2.finish())],
        app_config(),
    );
    refused(&single(&img), "through_symlink");
    assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"keep me");

    let mut l1 = Tb::new();
    l1.symlink("out", outside.path().to_str().unwrap());
    let mut l2 = Tb::new();
    l2.file("out/.wh..wh..opq", 0o644, b"");
    let img = image(
        vec![(LAYER_TAR, l1.finish()), (LAYER_TAR, l2.finish())],
        app_config(),
    );
    refused(&single(&img), "through_symlink");
    assert!(outside.path().join("victim").exists());
}

fn arch_image(arch: &str) -> Image {
    let mut tb = Tb::new();
    busybox_rootfs(&mut tb, "");
    tb.file("arch", 0o644, arch.as_bytes());
    let mut config = app_config();
    config["architecture"] = json!(arch);
    image(vec![(LAYER_GZIP, tb.finish())], config)
}

#[test]
fn a_nested_index_picks_linux_amd64() {
    let (arm, amd) = (arch_image("arm64"), arch_image("amd64"));
    let with_platform = |img: &Image, arch: &str| {
        let mut d = img.manifest.clone();
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    };
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [with_platform(&arm, "arm64"), with_platform(&amd, "amd64")],
    }))
    .unwrap();
    let mut blobs: Vec<Vec<u8>> = arm.blobs.iter().chain(&amd.blobs).cloned().collect();
    blobs.push(nested.clone());
    let tmp = tempfile::tempdir().unwrap();
    import(&layout(vec![desc(INDEX, &nested)], &blobs), tmp.path()).unwrap();
    assert_eq!(fs::read(tmp.path().join("rootfs/arch")).unwrap(), b"amd64");

    let e = refused(
        &layout(vec![with_platform(&arm, "arm64")], &arm.blobs),
        "no_matching_manifest",
    );
    assert!(
        e.to_string().contains("linux/amd64") && e.to_string().contains("linux/arm64"),
        "{e}"
    );
}

fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{tool} not found: this test needs Debian's {package} (apt-get install -y {package}; scripts/install-deps.sh)"
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_image_built_by_umoci_imports() {
    need("umoci", "umoci");
    let work = tempfile::tempdir().unwrap();
    let (oci, bundle) = (work.path().join("oci"), work.path().join("bundle"));
    let image = format!("{}:latest", oci.display());
    run(Command::new("umoci").arg("init").arg("--layout").arg(&oci));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for dir in ["bin", "etc", "tmp"] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    fs::write(rootfs.join("bin/busybox"), busybox()).unwrap();
    fs::set_permissions(
        rootfs.join("bin/busybox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    fs::write(rootfs.join("etc/passwd"), fixtures::PASSWD).unwrap();
    fs::write(rootfs.join("etc/group"), fixtures::GROUP).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        "echo from umoci",
        "--config.env",
        "GREETING=hi",
        "--config.workingdir",
        "/tmp",
        "--config.user",
        "app",
    ]));

    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", &oci).unwrap();
    let bytes = builder.into_inner().unwrap();

    let dest = tempfile::tempdir().unwrap();
    let imported = import(&bytes, dest.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(imported.kind, Kind::ImageLayout);
    let r = dest.path().join("rootfs");
    assert_eq!(fs::read(r.join("bin/busybox")).unwrap(), busybox());
    assert_eq!(
        fs::read_link(r.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let p = imported.spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().clone().unwrap(),
        ["/bin/sh", "-c", "echo from umoci"]
    );
    assert!(p
        .env()
        .clone()
        .unwrap()
        .contains(&"GREETING=hi".to_string()));
    assert_eq!(p.cwd(), Path::new("/tmp"));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
    let out = Command::new(r.join("bin/busybox"))
        .args(["sh", "-c", "echo ok"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n", "the imported busybox runs");
}
