//! The seam between the service and where configuration comes from: one trait, several
//! sources, tried in order.
//!
//! A pass asks each source in turn. The first source that has a document decides the pass:
//! a valid one configures the node; an invalid one, or one that could not be fetched although
//! the node was told where it is (`tessera.config=`, a CIDATA volume that will not mount), is
//! reported and lower sources are *not* tried — a broken configuration must not be silently
//! replaced by another source's. A source that cannot tell whether it has anything (no answer
//! from the metadata service) does not decide: the pass goes on, and a later pass asks again.
//!
//! One exception: the kernel command line without `tessera.config=` (a token and a CA from
//! PXE) goes *over* the document of a local source below it (NoCloud), key by key, when there
//! is one: per-node secrets on the command line, the rest of the configuration on a volume.

use crate::events::Events;
use crate::schema::{self, Config, ConfigError, Overlay};
use serde_json::Value;
use tessera_common::log::Level;

/// A configuration found by a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub config: Config,
    /// Where exactly it came from (`/dev/sr0 (iso9660)`, `http://…/latest/user-data`).
    pub detail: String,
    /// Values that go over the document of a local source below, if one has a document
    /// (the kernel command line's without `tessera.config=`).
    pub overlay: Option<Overlay>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A document was found and does not validate. Decides the pass.
    #[error("invalid configuration in {document}: {error}")]
    Invalid {
        /// What was read: `user-data on /dev/sr0`, `kernel command line`.
        document: String,
        error: ConfigError,
    },
    /// This source holds the node's configuration but could not deliver it now. Decides the
    /// pass; a later pass tries again.
    #[error("{0}")]
    Failed(String),
    /// Could not tell whether this source has configuration. Does not decide the pass; a later
    /// pass tries again.
    #[error("{0}")]
    NoAnswer(String),
}

/// A place configuration may come from.
pub trait Source {
    /// Short name for events and status: `cmdline`, `nocloud`, `imds`.
    fn name(&self) -> &str;
    /// `Ok(None)`: this source has nothing for this node; the next one is asked.
    fn fetch(&self, events: &Events) -> Result<Option<Fetched>, SourceError>;
    /// On the node itself (a volume), so quick to ask: a command-line overlay looks at it.
    fn is_local(&self) -> bool {
        false
    }
}

/// A command-line overlay put over the first local source below it that has a document.
fn with_lower(
    name: String,
    top: Fetched,
    overlay: &Overlay,
    lower: &[Box<dyn Source + '_>],
    events: &Events,
) -> Outcome {
    for source in lower.iter().filter(|s| s.is_local()) {
        let lower_name = source.name().to_string();
        match source.fetch(events) {
            Ok(Some(found)) => {
                let document = found.config.to_toml();
                let merged = schema::parse_document(document.as_bytes())
                    .and_then(|doc| schema::finish(doc, overlay));
                return match merged {
                    Ok(config) => Outcome::Configured {
                        source: format!("{name}+{lower_name}"),
                        fetched: Box::new(Fetched {
                            config,
                            detail: format!("{} over {lower_name} {}", top.detail, found.detail),
                            overlay: None,
                        }),
                    },
                    Err(error) => Outcome::Broken {
                        source: format!("{name}+{lower_name}"),
                        error: SourceError::Invalid {
                            document: format!(
                                "the kernel command line over {lower_name} {}",
                                found.detail
                            ),
                            error,
                        },
                    },
                };
            }
            Ok(None) | Err(SourceError::NoAnswer(_)) => {}
            Err(error) => {
                return Outcome::Broken {
                    source: lower_name,
                    error,
                }
            }
        }
    }
    Outcome::Configured {
        source: name,
        fetched: Box::new(top),
    }
}

/// How one pass over the sources ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Configured {
        source: String,
        fetched: Box<Fetched>,
    },
    /// The deciding source's document is invalid, or it could not be fetched.
    Broken { source: String, error: SourceError },
    /// No source has configuration. `unanswered` lists the sources that could not tell
    /// (worth asking again later); empty means every source said no.
    Standalone { unanswered: Vec<(String, String)> },
}

impl Outcome {
    /// Whether a later pass could end differently.
    pub fn worth_retrying(&self) -> bool {
        match self {
            Outcome::Configured { .. } => false,
            Outcome::Broken { .. } => true,
            Outcome::Standalone { unanswered } => !unanswered.is_empty(),
        }
    }

    /// The `STATUS=` text for the supervisor (one line).
    pub fn status(&self) -> String {
        let text = match self {
            Outcome::Configured { source, .. } => format!("config from {source}"),
            Outcome::Broken {
                source,
                error: SourceError::Invalid { error, .. },
            } => format!("bad config from {source}: {error}; retrying"),
            Outcome::Broken { source, error } => {
                format!("no config yet from {source}: {error}; retrying")
            }
            Outcome::Standalone { unanswered } if unanswered.is_empty() => {
                "standalone (no user-data)".to_string()
            }
            Outcome::Standalone { unanswered } => {
                let names: Vec<&str> = unanswered.iter().map(|(s, _)| s.as_str()).collect();
                format!(
                    "standalone (no user-data); {} did not answer, retrying",
                    names.join(", ")
                )
            }
        };
        text.replace(['\n', '\r'], " ")
    }
}

/// Asks the sources in order; see the module documentation for who decides. `quiet` (for
/// passes after the first) logs what each source said at debug level only.
pub fn run_pass(sources: &[Box<dyn Source + '_>], events: &Events, quiet: bool) -> Outcome {
    let warn = if quiet { Level::Debug } else { Level::Warn };
    let mut unanswered = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let name = source.name().to_string();
        events.debug("asking source", &[("source", name.clone().into())]);
        match source.fetch(events) {
            Ok(Some(mut fetched)) => {
                if let Some(overlay) = fetched.overlay.take() {
                    return with_lower(name, fetched, &overlay, &sources[i + 1..], events);
                }
                return Outcome::Configured {
                    source: name,
                    fetched: Box::new(fetched),
                };
            }
            Ok(None) => events.debug("no user-data here", &[("source", name.into())]),
            Err(SourceError::NoAnswer(reason)) => {
                events.emit(
                    warn,
                    "source did not answer",
                    &[
                        ("source", name.clone().into()),
                        ("reason", reason.clone().into()),
                    ],
                );
                unanswered.push((name, reason));
            }
            Err(error) => {
                return Outcome::Broken {
                    source: name,
                    error,
                }
            }
        }
    }
    Outcome::Standalone { unanswered }
}

/// Event fields describing a source error (the key, line and column of a validation error).
pub fn error_fields(source: &str, error: &SourceError) -> Vec<(&'static str, Value)> {
    let mut f: Vec<(&'static str, Value)> = vec![("source", source.into())];
    match error {
        SourceError::Invalid { document, error } => {
            f.push(("document", document.clone().into()));
            if !error.key.is_empty() {
                f.push(("key", error.key.clone().into()));
            }
            if let Some((l, c)) = error.line {
                f.push(("line", l.into()));
                f.push(("column", c.into()));
            }
            if let Some(o) = &error.origin {
                f.push(("origin", o.clone().into()));
            }
            f.push(("reason", error.to_string().into()));
        }
        SourceError::Failed(r) | SourceError::NoAnswer(r) => f.push(("reason", r.clone().into())),
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, fn() -> Result<Option<Fetched>, SourceError>);
    impl Source for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn fetch(&self, _: &Events) -> Result<Option<Fetched>, SourceError> {
            (self.1)()
        }
    }

    fn found() -> Result<Option<Fetched>, SourceError> {
        Ok(Some(Fetched {
            config: Config::standalone(),
            detail: "here".into(),
            overlay: None,
        }))
    }
    fn nothing() -> Result<Option<Fetched>, SourceError> {
        Ok(None)
    }
    fn silent() -> Result<Option<Fetched>, SourceError> {
        Err(SourceError::NoAnswer("timed out".into()))
    }
    fn invalid() -> Result<Option<Fetched>, SourceError> {
        Err(SourceError::Invalid {
            document: "user-data".into(),
            error: crate::schema::parse(b"version = 2").unwrap_err(),
        })
    }

    /// A source on the node (NoCloud-like).
    struct Local(&'static str, fn() -> Result<Option<Fetched>, SourceError>);
    impl Source for Local {
        fn name(&self) -> &str {
            self.0
        }
        fn fetch(&self, _: &Events) -> Result<Option<Fetched>, SourceError> {
            (self.1)()
        }
        fn is_local(&self) -> bool {
            true
        }
    }

    const FP: &str = "sha256:2b318f01675311f8c277886ba374ff2a250f1bbda0bfd7061b91f006a4082432";

    /// The command line's CA and token as an overlay (what `tessera.token=` … gives).
    fn cmdline() -> Result<Option<Fetched>, SourceError> {
        let mut overlay = Overlay::default();
        overlay
            .set(
                "ca.url",
                "https://192.168.77.1:8443",
                "kernel argument tessera.ca",
            )
            .unwrap();
        overlay
            .set("ca.fingerprint", FP, "kernel argument tessera.ca_fp")
            .unwrap();
        overlay
            .set(
                "ca.token",
                "tok-from-cmdline",
                "kernel argument tessera.token",
            )
            .unwrap();
        let config = schema::finish(schema::Document::empty(), &overlay).unwrap();
        Ok(Some(Fetched {
            config,
            detail: "kernel command line".into(),
            overlay: Some(overlay),
        }))
    }
    fn volume() -> Result<Option<Fetched>, SourceError> {
        let text = format!("version = 1\n[node]\nhostname = \"n1\"\n[ca]\nurl = \"https://10.0.0.1:1\"\nfingerprint = \"{FP}\"\ntoken = \"tok-from-volume\"\n[storage]\nbackend = \"btrfs\"\ndevice = \"/dev/vdb\"\n");
        Ok(Some(Fetched {
            config: schema::parse(text.as_bytes()).unwrap(),
            detail: "/dev/vda (vfat)".into(),
            overlay: None,
        }))
    }

    #[test]
    fn the_command_line_goes_over_a_local_document_key_by_key() {
        let o = pass(vec![
            Box::new(Fixed("cmdline", cmdline)),
            Box::new(Fixed("remote", || {
                panic!("a remote source is not asked for an overlay")
            })),
            Box::new(Local("nocloud", volume)),
        ]);
        let Outcome::Configured { source, fetched } = &o else {
            panic!("{o:?}")
        };
        assert_eq!(source, "cmdline+nocloud");
        let c = &fetched.config;
        let ca = c.ca.as_ref().unwrap();
        assert_eq!(ca.url, "https://192.168.77.1:8443", "the command line wins");
        assert_eq!(ca.token.expose(), "tok-from-cmdline");
        assert_eq!(
            c.node.hostname.as_deref(),
            Some("n1"),
            "the volume's other keys stay"
        );
        assert!(c.storage.is_some());
        assert!(
            fetched.detail.contains("over nocloud /dev/vda"),
            "{}",
            fetched.detail
        );
    }

    #[test]
    fn the_command_line_alone_configures_when_no_local_source_has_a_document() {
        let o = pass(vec![
            Box::new(Fixed("cmdline", cmdline)),
            Box::new(Local("nocloud", nothing)),
        ]);
        assert!(
            matches!(&o, Outcome::Configured { source, fetched } if source == "cmdline" && fetched.config.storage.is_none())
        );
        // A broken volume under the command line is reported, not skipped.
        let o = pass(vec![
            Box::new(Fixed("cmdline", cmdline)),
            Box::new(Local("nocloud", invalid)),
        ]);
        assert!(
            matches!(&o, Outcome::Broken { source, .. } if source == "nocloud"),
            "{o:?}"
        );
    }

    fn pass(sources: Vec<Box<dyn Source>>) -> Outcome {
        run_pass(&sources, &Events::capture().0, false)
    }

    #[test]
    fn first_source_with_config_wins() {
        let o = pass(vec![
            Box::new(Fixed("a", nothing)),
            Box::new(Fixed("b", found)),
            Box::new(Fixed("c", || panic!("not asked"))),
        ]);
        assert!(matches!(&o, Outcome::Configured { source, .. } if source == "b"));
        assert_eq!(o.status(), "config from b");
        assert!(!o.worth_retrying());
    }

    #[test]
    fn invalid_config_decides_and_lower_sources_are_not_asked() {
        let o = pass(vec![
            Box::new(Fixed("a", invalid)),
            Box::new(Fixed("b", || panic!("not asked"))),
        ]);
        assert!(matches!(&o, Outcome::Broken { source, .. } if source == "a"));
        assert!(o
            .status()
            .starts_with("bad config from a: version: unsupported schema version 2"));
        assert!(o.worth_retrying());
    }

    #[test]
    fn silent_source_does_not_decide_but_is_retried() {
        let o = pass(vec![
            Box::new(Fixed("imds", silent)),
            Box::new(Fixed("z", found)),
        ]);
        assert!(matches!(o, Outcome::Configured { .. }));
        let o = pass(vec![
            Box::new(Fixed("a", nothing)),
            Box::new(Fixed("imds", silent)),
        ]);
        assert_eq!(
            o.status(),
            "standalone (no user-data); imds did not answer, retrying"
        );
        assert!(o.worth_retrying());
        let o = pass(vec![Box::new(Fixed("a", nothing))]);
        assert_eq!(o.status(), "standalone (no user-data)");
        assert!(!o.worth_retrying());
    }
}
