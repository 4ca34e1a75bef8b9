//! An extracted OCI image layout: its JSON files and blobs, each blob checked against its
//! descriptor (sha256 and size), and the choice of the one manifest to import from index.json
//! (nested indexes followed, the platform this node runs preferred).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, MediaType, OciLayout};
use sha2::{Digest, Sha256};

use crate::archive::{check_digest, ImportError};

/// index.json, manifests and configs are small; a bigger "JSON" blob is refused unread.
const MAX_JSON: u64 = 16 << 20;
/// Indexes may point at indexes; this deep and no further.
const MAX_NESTING: usize = 4;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub(crate) struct Layout {
    dir: PathBuf,
}

fn bad(file: &str, detail: impl Into<String>) -> ImportError {
    ImportError::BadImage {
        file: file.to_string(),
        detail: detail.into(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &str) -> Result<T, ImportError> {
    crate::spec::parse_json(bytes)
        .map_err(|(field, message)| bad(file, format!("{field}: {message}")))
}

/// The GOARCH name of this machine's architecture, as image platforms spell it.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn is_manifest(m: &MediaType) -> bool {
    *m == MediaType::ImageManifest || m.to_string() == DOCKER_MANIFEST
}

fn is_index(m: &MediaType) -> bool {
    *m == MediaType::ImageIndex || m.to_string() == DOCKER_LIST
}

impl Layout {
    /// Checks `oci-layout` in the extracted layout at `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, ImportError> {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        let header: OciLayout = parse(&layout.read_file("oci-layout", MAX_JSON)?, "oci-layout")?;
        let version = header.image_layout_version();
        if !version.starts_with("1.") {
            return Err(bad(
                "oci-layout",
                format!("imageLayoutVersion {version:?} is not 1.x"),
            ));
        }
        Ok(layout)
    }

    fn read_file(&self, name: &str, cap: u64) -> Result<Vec<u8>, ImportError> {
        let path = self.dir.join(name);
        let file = File::open(&path).map_err(|e| ImportError::fs(path.clone(), e))?;
        let mut bytes = Vec::new();
        file.take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ImportError::fs(path, e))?;
        if bytes.len() as u64 > cap {
            return Err(bad(name, format!("bigger than {cap} bytes")));
        }
        Ok(bytes)
    }

    /// index.json.
    pub(crate) fn index(&self) -> Result<ImageIndex, ImportError> {
        parse(&self.read_file("index.json", MAX_JSON)?, "index.json")
    }

    /// Opens the blob `desc` names, checking that it is a plain file of the descriptor's size.
    /// Its sha256 is the caller's to check while reading (see [`Self::json`]).
    pub(crate) fn open_blob(&self, desc: &Descriptor, what: &str) -> Result<File, ImportError> {
        let digest = desc.digest().to_string();
        check_digest(what, &digest)?;
        let hex = &digest["sha256:".len()..];
        let path = self.dir.join("blobs/sha256").join(hex.to_ascii_lowercase());
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(bad(&format!("blobs/sha256/{hex}"), "not a plain file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImportError::MissingBlob { digest })
            }
            Err(e) => return Err(ImportError::fs(path, e)),
        };
        if meta.len() != desc.size() {
            return Err(ImportError::SizeMismatch {
                what: format!("{what} {digest}"),
                expected: desc.size(),
                actual: meta.len(),
            });
        }
        File::open(&path).map_err(|e| ImportError::fs(path, e))
    }

    /// Reads a JSON blob, checks its sha256 and parses it.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &str,
    ) -> Result<T, ImportError> {
        let label = format!("{what} {}", desc.digest());
        if desc.size() > MAX_JSON {
            return Err(bad(
                &label,
                format!("{} bytes, more than {MAX_JSON}", desc.size()),
            ));
        }
        let mut bytes = Vec::new();
        let file = self.open_blob(desc, what)?;
        file.take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(&label, e.to_string()))?;
        verify(desc, &label, &sha256(&bytes), bytes.len() as u64)?;
        parse(&bytes, &label)
    }

    /// The manifest to import: the one for this node's platform, or the only one there is.
    pub(crate) fn choose_manifest(&self, index: &ImageIndex) -> Result<Descriptor, ImportError> {
        let mut index = index.clone();
        let mut file = "index.json".to_string();
        for _ in 0..=MAX_NESTING {
            let chosen = choose(&index, &file)?;
            if is_manifest(chosen.media_type()) {
                return Ok(chosen);
            }
            file = format!("index {}", chosen.digest());
            index = self.json(&chosen, "index")?;
        }
        Err(bad(
            "index.json",
            format!("indexes nested more than {MAX_NESTING} deep"),
        ))
    }
}

/// One descriptor of `index`: platform linux/<this arch> first, else the only one without a
/// platform; several without one are ambiguous.
fn choose(index: &ImageIndex, file: &str) -> Result<Descriptor, ImportError> {
    let wanted = format!("linux/{}", host_arch());
    let usable: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| is_manifest(d.media_type()) || is_index(d.media_type()))
        .collect();
    let platform = |d: &Descriptor| {
        d.platform()
            .as_ref()
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
    };
    if let Some(d) = usable
        .iter()
        .find(|d| platform(d).as_deref() == Some(wanted.as_str()))
    {
        return Ok((*d).clone());
    }
    let unplatformed: Vec<&&Descriptor> =
        usable.iter().filter(|d| d.platform().is_none()).collect();
    match unplatformed.as_slice() {
        [only] => Ok((**only).clone()),
        [] => {
            let found: Vec<String> = usable.iter().filter_map(|d| platform(d)).collect();
            let found = if found.is_empty() {
                format!("no image manifest in {file}")
            } else {
                found.join(", ")
            };
            Err(ImportError::NoMatchingManifest { wanted, found })
        }
        several => {
            let refs: Vec<String> = several
                .iter()
                .map(|d| {
                    let name = d
                        .annotations()
                        .as_ref()
                        .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                        .cloned();
                    name.unwrap_or_else(|| d.digest().to_string())
                })
                .collect();
            Err(bad(
                file,
                format!(
                    "{} images without a platform ({}): cannot tell which to import; export one image",
                    several.len(),
                    refs.join(", ")
                ),
            ))
        }
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks a blob's digest and length against its descriptor.
pub(crate) fn verify(
    desc: &Descriptor,
    what: &str,
    digest: &str,
    len: u64,
) -> Result<(), ImportError> {
    if len != desc.size() {
        return Err(ImportError::SizeMismatch {
            what: what.to_string(),
            expected: desc.size(),
            actual: len,
        });
    }
    let expected = desc.digest().to_string().to_ascii_lowercase();
    if digest != expected {
        return Err(ImportError::DigestMismatch {
            what: what.to_string(),
            expected,
            actual: digest.to_string(),
        });
    }
    Ok(())
}
