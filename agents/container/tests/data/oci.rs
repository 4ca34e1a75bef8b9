//! Test fixtures for OCI image layouts (included by tests/image.rs with `#[path]`): blobs,
//! descriptors, manifests and the layout tar around them, built by hand so tests can break
//! any part of them.
#![allow(dead_code)]

use serde_json::{json, Value};

use super::fixtures::{gzip, sha256, zstd, Tb};

pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub fn desc(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// One image: its blobs (layers, config, manifest) and the manifest's descriptor.
pub struct Image {
    pub blobs: Vec<Vec<u8>>,
    pub manifest: Value,
}

/// `layers` are (media type, uncompressed tar); `config` gets its rootfs.diff_ids filled in.
pub fn image(layers: Vec<(&str, Vec<u8>)>, mut config: Value) -> Image {
    let mut blobs = Vec::new();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (media_type, tar) in layers {
        diff_ids.push(sha256(&tar));
        let blob = match media_type {
            LAYER_GZIP => gzip(&tar),
            LAYER_ZSTD => zstd(&tar),
            _ => tar,
        };
        layer_descs.push(desc(media_type, &blob));
        blobs.push(blob);
    }
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": desc(CONFIG, &config),
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_desc = desc(MANIFEST, &manifest);
    blobs.push(config);
    blobs.push(manifest);
    Image {
        blobs,
        manifest: manifest_desc,
    }
}

/// The image layout as a tar: oci-layout, index.json listing `manifests`, blobs/sha256/….
pub fn layout(manifests: Vec<Value>, blobs: &[Vec<u8>]) -> Vec<u8> {
    let named: Vec<(String, Vec<u8>)> = blobs.iter().map(|b| (sha256(b), b.clone())).collect();
    layout_named(manifests, &named)
}

/// Same, with each blob stored under the digest given (which may not be its own).
pub fn layout_named(manifests: Vec<Value>, blobs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tb = Tb::new();
    tb.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
    tb.file("index.json", 0o644, &index)
        .dir("blobs/", 0o755)
        .dir("blobs/sha256/", 0o755);
    for (digest, blob) in blobs {
        let name = format!("blobs/sha256/{}", &digest["sha256:".len()..]);
        tb.file(&name, 0o644, blob);
    }
    tb.finish()
}

pub fn single(img: &Image) -> Vec<u8> {
    layout(vec![img.manifest.clone()], &img.blobs)
}
