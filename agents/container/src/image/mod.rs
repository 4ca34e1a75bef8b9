//! An OCI image layout (what `skopeo copy … oci-archive:` and `umoci` produce) turned into a
//! runtime bundle: index.json → manifest (nested indexes followed, this node's platform
//! chosen) → config → layers applied in order into `dest/rootfs` with their whiteouts, and the
//! image config turned into `dest/config.json` (`spec::from_image_config`).
//!
//! Every blob is checked against its descriptor, sha256 and size; a layer is hashed while it
//! is applied (its diff_id, the sha256 of the uncompressed tar, is checked too) and any
//! mismatch fails the whole import, which then empties the destination. Layers go through the
//! same extractor, and the same refusals, as the outer archive.

pub(crate) mod layout;
pub(crate) mod user;
pub(crate) mod whiteout;

use std::path::Path;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType, Os};
use oci_spec::runtime::Spec;

use crate::archive::extract::{Budget, Extractor, Scope};
use crate::archive::reader::{Hashing, Stream};
use crate::archive::{fsat, mkdir, ImportError, Limits, Ticker};
use layout::Layout;

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYERS: [&str; 3] = [
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

fn is_layer(m: &MediaType) -> bool {
    use MediaType::*;
    matches!(
        m,
        ImageLayer
            | ImageLayerGzip
            | ImageLayerZstd
            | ImageLayerNonDistributable
            | ImageLayerNonDistributableGzip
            | ImageLayerNonDistributableZstd
    ) || DOCKER_LAYERS.contains(&m.to_string().as_str())
}

/// Builds `dest/rootfs` and `dest/config.json` from the layout extracted in `staging`.
/// Returns the spec and the (entries, bytes) written into rootfs.
pub(crate) fn build(
    dest: &Path,
    staging: &Path,
    limits: &Limits,
    ticker: &mut Ticker<'_>,
) -> Result<(Spec, u64, u64), ImportError> {
    let layout = Layout::open(staging)?;
    let manifest_desc = layout.choose_manifest(&layout.index()?)?;
    let manifest: ImageManifest = layout.json(&manifest_desc, "manifest")?;
    let config_desc = manifest.config();
    let config_type = config_desc.media_type();
    if *config_type != MediaType::ImageConfig && config_type.to_string() != DOCKER_CONFIG {
        let (what, media_type) = ("the image config".to_string(), config_type.to_string());
        return Err(ImportError::UnsupportedMediaType { what, media_type });
    }
    let config: ImageConfiguration = layout.json(config_desc, "image config")?;
    check_platform(&config)?;
    let diff_ids = config.rootfs().diff_ids();
    if !diff_ids.is_empty() && diff_ids.len() != manifest.layers().len() {
        return Err(ImportError::BadImage {
            file: format!("image config {}", config_desc.digest()),
            detail: format!(
                "rootfs.diff_ids lists {} layers, the manifest {}",
                diff_ids.len(),
                manifest.layers().len()
            ),
        });
    }

    let rootfs = dest.join("rootfs");
    mkdir(&rootfs, 0o755)?;
    let rootfs_fd = fsat::open_dir(&rootfs).map_err(|e| ImportError::fs(rootfs.clone(), e))?;
    let mut budget = Budget::default();
    let (mut files, mut bytes) = (0, 0);
    for (i, desc) in manifest.layers().iter().enumerate() {
        let root = rootfs_fd
            .try_clone()
            .map_err(|e| ImportError::fs(rootfs.clone(), e))?;
        let (f, b) = apply_layer(
            &layout,
            desc,
            diff_ids.get(i),
            root,
            &rootfs,
            limits,
            &mut budget,
            ticker,
        )?;
        files += f;
        bytes += b;
    }

    let spec =
        crate::spec::from_image_config(&config, &rootfs).map_err(ImportError::ImageConfig)?;
    let path = dest.join("config.json");
    let json = serde_json::to_vec_pretty(&spec)
        .map_err(|e| ImportError::fs(path.clone(), std::io::Error::other(e)))?;
    std::fs::write(&path, json).map_err(|e| ImportError::fs(path, e))?;
    Ok((spec, files, bytes))
}

fn check_platform(config: &ImageConfiguration) -> Result<(), ImportError> {
    let arch = config.architecture().to_string();
    if *config.os() != Os::Linux || arch != layout::host_arch() {
        return Err(ImportError::NoMatchingManifest {
            wanted: format!("linux/{}", layout::host_arch()),
            found: format!("an image config for {}/{arch}", config.os()),
        });
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn apply_layer(
    layout: &Layout,
    desc: &Descriptor,
    diff_id: Option<&String>,
    root: std::os::fd::OwnedFd,
    rootfs: &Path,
    limits: &Limits,
    budget: &mut Budget,
    ticker: &mut Ticker<'_>,
) -> Result<(u64, u64), ImportError> {
    let what = format!("layer {}", desc.digest());
    if !is_layer(desc.media_type()) {
        let media_type = desc.media_type().to_string();
        return Err(ImportError::UnsupportedMediaType { what, media_type });
    }
    let file = layout.open_blob(desc, "layer")?;
    let mut raw = Hashing::new(
        std::io::BufReader::with_capacity(1 << 20, file),
        ticker.counter(),
    );
    let (counts, diff) = {
        let mut stream = Stream::open(&mut raw, &what)?;
        let classifier = stream.classifier();
        let mut ex = Extractor::new(
            root,
            rootfs,
            Scope::Layer,
            limits,
            budget,
            ticker,
            classifier,
        );
        stream.for_each(|entry| ex.entry(entry))?;
        let counts = ex.finish()?;
        (counts, stream.finish()?)
    };
    let (digest, len) = raw.finish()?;
    layout::verify(desc, &what, &digest, len)?;
    if let Some(expected) = diff_id {
        if diff != expected.to_ascii_lowercase() {
            return Err(ImportError::DigestMismatch {
                what: format!("{what}: uncompressed (rootfs.diff_ids)"),
                expected: expected.clone(),
                actual: diff,
            });
        }
    }
    Ok(counts)
}
