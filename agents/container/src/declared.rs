//! Containers declared in user-data (`[[containers]]`): at every start of the agent each is
//! brought to what the document says, with no operator action. Its image is fetched (http://,
//! or a path on the node) unless a template of its sha256 exists, then imported; its
//! container is created, or made anew when the declaration changed; it is started if it has
//! not run in this boot; from then on the supervision loop keeps it running by its restart
//! policy. Declared containers that left the document are stopped and deleted. A declaration
//! that cannot be met yet (the network is not up, the server is down) is retried with backoff;
//! the others go ahead.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tessera_common::api_error::ApiError;
use tessera_common::log::print_event as log;
use tessera_common::restart::Backoff;
use tessera_userdata::http::{self, HttpError, HttpUrl};
use tessera_userdata::schema::{Container, ImageSource};

use crate::archive::Limits;
use crate::identity::IdentitySpec;
use crate::instances::{self, InstanceError, New, Overrides, Record, RestartPolicy};
use crate::runtime;
use crate::service::{lock, Agent, DEFAULT_GRACE};
use crate::templates::{self, Template, TemplateError};

/// Retries of declarations not met yet.
pub const RETRY: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
};
/// A download's whole exchange (a large image over a slow link).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Virtual size of a download's thin volume (LVM; Btrfs volumes have no size).
const DOWNLOAD_VOLUME_SIZE: u64 = 8 << 30;
/// A progress event every this many bytes downloaded.
const PROGRESS_EVERY: u64 = 16 << 20;

/// The declared containers of the node's user-data (none when it has none).
pub fn load(path: &Path) -> Result<Vec<Container>, String> {
    match tessera_userdata::load(path) {
        Ok(Some(config)) => Ok(config.containers),
        Ok(None) => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// What a declaration asks of the container's record.
fn overrides(c: &Container) -> Overrides {
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Overrides {
        args: c.args.clone(),
        env: c.env.clone(),
        memory_max: c.memory_max.map(signed),
        pids_max: c.pids_max.map(signed),
        cpu_percent: c.cpu_percent,
        hub: c.hub,
        identity: c.identity.as_ref().map(|i| IdentitySpec {
            subsystem: i.subsystem.clone(),
            capabilities: i.capabilities.clone(),
        }),
    }
}

fn policy(c: &Container) -> RestartPolicy {
    RestartPolicy::parse(c.restart.as_str()).unwrap_or(RestartPolicy::Always)
}

/// Whether the record is what the declaration says.
fn matches(record: &Record, c: &Container) -> bool {
    record.declared
        && record.template == c.sha256
        && record.overrides == overrides(c)
        && record.restart == policy(c)
        && record.net == c.net.as_str()
        && record.ports == c.ports
}

impl Agent {
    /// One pass over the declarations; returns those not met yet, each with its reason.
    pub fn reconcile_declared(&self, declared: &[Container]) -> Vec<(String, ApiError)> {
        let mut pending = Vec::new();
        for c in declared {
            if let Err(e) = self.reconcile_one(c) {
                log(
                    "warn",
                    "declared container not ready yet",
                    json!({"container": c.name, "code": e.code, "reason": e.reason}),
                );
                pending.push((c.name.clone(), e));
            }
        }
        if let Err(e) = self.remove_undeclared(declared) {
            pending.push(("(removal)".into(), e));
        }
        pending
    }

    fn reconcile_one(&self, c: &Container) -> Result<(), ApiError> {
        let template = match templates::find(&self.storage, &c.sha256)? {
            Some(t) => t,
            None => self.fetch(c)?,
        };
        let record = {
            let _g = lock(&self.changes);
            match instances::find(&self.storage, &c.name) {
                // A declared container whose address left a changed subnet is made anew.
                Ok(r) if matches(&r, c) && self.address_fits(&r) => r,
                Ok(r) if !r.declared => {
                    return Err(ApiError::new("exists", format!("a container named {} was made by an operator; delete it (`tessera container rm {}`) or rename the declaration", c.name, c.name)));
                }
                Ok(old) => {
                    log(
                        "info",
                        "declared container changed; making it anew",
                        json!({"container": c.name}),
                    );
                    self.remove(&old)?;
                    self.create_declared(c, &template)?
                }
                Err(InstanceError::NotFound(_)) => self.create_declared(c, &template)?,
                Err(e) => return Err(e.into()),
            }
        };
        lock(&self.records).insert(record.name.clone(), record.clone());
        // Started once per boot here (its state lives under /run); later exits are the
        // supervision loop's, by the restart policy.
        if !self.state_dir(&record.name).exists() {
            self.launch(&record)?;
            self.release(&record.name);
            log(
                "info",
                "declared container started",
                json!({"container": record.name, "template": record.template}),
            );
        }
        Ok(())
    }

    fn create_declared(&self, c: &Container, template: &Template) -> Result<Record, ApiError> {
        let record = instances::create(
            &self.storage,
            New {
                name: &c.name,
                template,
                overrides: overrides(c),
                restart: policy(c),
                net: c.net.as_str(),
                address: self.address_for(c.net.as_str())?,
                ports: c.ports.clone(),
                declared: true,
            },
        )?;
        log(
            "info",
            "declared container created",
            json!({"container": c.name, "template": template.digest}),
        );
        Ok(record)
    }

    /// Stops (gracefully, if running) and deletes a container and its instance.
    fn remove(&self, record: &Record) -> Result<(), ApiError> {
        self.hold(&record.name);
        let dir = self.state_dir(&record.name);
        if runtime::state(&dir).is_ok_and(|s| s.status.is_live()) {
            let _ = runtime::stop(&dir, DEFAULT_GRACE);
        }
        self.discard(record)
    }

    /// Declared containers no longer in the document are stopped and deleted.
    fn remove_undeclared(&self, declared: &[Container]) -> Result<(), ApiError> {
        let _g = lock(&self.changes);
        for record in instances::list(&self.storage)? {
            if record.declared && !declared.iter().any(|c| c.name == record.name) {
                self.remove(&record)?;
                log(
                    "info",
                    "declared container removed: no longer in user-data",
                    json!({"container": record.name}),
                );
            }
        }
        Ok(())
    }

    /// The declaration's image, fetched and imported as a template.
    fn fetch(&self, c: &Container) -> Result<Template, ApiError> {
        let limits = Limits::default();
        let mut progress = |_| {};
        let imported = match c.source() {
            ImageSource::File(path) => templates::import_file(
                &self.storage,
                &path,
                Some(&c.sha256),
                &limits,
                &mut progress,
            )?,
            ImageSource::Http(url) => self.download_and_import(c, &url, &limits)?,
        };
        log(
            "info",
            "template imported",
            json!({"digest": imported.template.digest, "source": c.image, "container": c.name, "fresh": imported.fresh}),
        );
        Ok(imported.template)
    }

    /// Downloads into a volume of the data disk (never memory: images may be large), imports
    /// from there with the digest checked, and deletes the download whatever happened.
    fn download_and_import(
        &self,
        c: &Container,
        url: &HttpUrl,
        limits: &Limits,
    ) -> Result<templates::Imported, ApiError> {
        let hex = c.sha256.trim_start_matches("sha256:");
        let name = format!("dl-{}", &hex[..hex.len().min(48)]);
        if self
            .storage
            .find(&name)
            .map_err(TemplateError::from)?
            .is_some()
        {
            self.storage.delete(&name).map_err(TemplateError::from)?; // left by a crash
        }
        let volume = self
            .storage
            .create(&name, DOWNLOAD_VOLUME_SIZE)
            .map_err(TemplateError::from)?;
        let result = (|| {
            let _ = std::fs::remove_dir(volume.path.join("lost+found"));
            let file = volume.path.join("image.archive");
            log(
                "info",
                "downloading image",
                json!({"container": c.name, "url": url.to_string()}),
            );
            download(url, &file, limits.max_bytes, &c.name)?;
            templates::import_file(&self.storage, &file, Some(&c.sha256), limits, &mut |_| {})
                .map_err(ApiError::from)
        })();
        if let Err(e) = self.storage.delete(&name) {
            log(
                "warn",
                "download volume left behind",
                json!({"volume": name, "error": e.to_string()}),
            );
        }
        result
    }
}

/// GETs `url` into `file`, with progress events; a status other than 200 is an error.
fn download(url: &HttpUrl, file: &Path, max: u64, container: &str) -> Result<u64, ApiError> {
    struct Progress<W: Write> {
        out: W,
        n: u64,
        next: u64,
        container: String,
    }
    impl<W: Write> Write for Progress<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let k = self.out.write(b)?;
            self.n += k as u64;
            if self.n >= self.next {
                self.next += PROGRESS_EVERY;
                log(
                    "info",
                    "downloading image",
                    json!({"container": self.container, "bytes": self.n}),
                );
            }
            Ok(k)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }
    let out = std::fs::File::create(file)
        .map_err(|e| ApiError::new("internal", format!("create {}: {e}", file.display())))?;
    let mut sink = Progress {
        out: std::io::BufWriter::new(out),
        n: 0,
        next: PROGRESS_EVERY,
        container: container.to_string(),
    };
    let limits = http::Limits {
        connect_timeout: Duration::from_secs(5),
        timeout: DOWNLOAD_TIMEOUT,
        max_body: usize::try_from(max).unwrap_or(usize::MAX),
    };
    let got = http::download(url, &mut sink, limits).map_err(|e| fetch_error(url, e))?;
    sink.flush().map_err(|e| {
        fetch_error(
            url,
            HttpError::Sink {
                url: url.to_string(),
                source: e,
            },
        )
    })?;
    if got.status != 200 {
        return Err(ApiError::new(
            "fetch_failed",
            format!(
                "{url} answered {} {}; check the URL in [[containers]] and that the server offers the file",
                got.status, got.reason
            ),
        ));
    }
    log(
        "info",
        "image downloaded",
        json!({"container": container, "bytes": got.bytes}),
    );
    Ok(got.bytes)
}

fn fetch_error(url: &HttpUrl, e: HttpError) -> ApiError {
    match &e {
        HttpError::Sink { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
            ApiError::new(
                "no_space",
                format!("no space left on the data disk for the download of {url}; free space (`tessera volume list`) or use a larger disk"),
            )
        }
        _ => ApiError::new(
            "fetch_failed",
            format!("{e}; it is tried again (is the network up and the server reachable from the node?)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_userdata::schema::{Net, Restart};

    fn declared() -> Container {
        Container {
            name: "web".into(),
            image: "/x.tar".into(),
            sha256: format!("sha256:{}", "ab".repeat(32)),
            args: Some(vec!["/bin/true".into()]),
            env: vec!["A=1".into()],
            memory_max: Some(64 << 20),
            pids_max: Some(10),
            cpu_percent: None,
            restart: Restart::OnFailure,
            net: Net::None,
            ports: Vec::new(),
            hub: false,
            identity: None,
        }
    }

    fn record_of(c: &Container) -> Record {
        Record {
            name: c.name.clone(),
            template: c.sha256.clone(),
            template_volume: templates::volume_name(&c.sha256),
            volume: instances::volume_name(&c.name),
            bundle: "/tmp/x".into(),
            restart: policy(c),
            net: c.net.as_str().into(),
            address: None,
            ports: c.ports.clone(),
            overrides: overrides(c),
            declared: true,
            created: String::new(),
        }
    }

    #[test]
    fn a_record_matches_its_declaration_and_any_change_is_seen() {
        let c = declared();
        let r = record_of(&c);
        assert!(matches(&r, &c));
        let mut changed = c.clone();
        changed.env.push("B=2".into());
        assert!(!matches(&r, &changed));
        let mut changed = c.clone();
        changed.restart = Restart::Always;
        assert!(!matches(&r, &changed));
        let mut changed = c.clone();
        changed.sha256 = format!("sha256:{}", "cd".repeat(32));
        assert!(!matches(&r, &changed));
        let mut changed = c.clone();
        changed.identity = Some(tessera_userdata::schema::ContainerIdentity {
            subsystem: "web".into(),
            capabilities: vec![],
        });
        assert!(
            !matches(&r, &changed),
            "a new identity makes the container anew"
        );
        let mut by_hand = r.clone();
        by_hand.declared = false;
        assert!(
            !matches(&by_hand, &c),
            "an operator's container is never taken over"
        );
    }

    #[test]
    fn a_full_disk_during_a_download_says_so() {
        let url = HttpUrl::parse("http://10.0.2.2:8000/a.tar").unwrap();
        let e = fetch_error(
            &url,
            HttpError::Sink {
                url: url.to_string(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            },
        );
        assert_eq!(e.code, "no_space");
        let e = fetch_error(
            &url,
            HttpError::Timeout {
                url: url.to_string(),
                after: Duration::from_secs(1),
            },
        );
        assert_eq!(e.code, "fetch_failed");
        assert!(e.reason.contains("tried again"), "{}", e.reason);
    }
}
