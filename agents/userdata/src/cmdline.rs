//! Source 1: the kernel command line (PXE / iPXE).
//!
//! | kernel argument | becomes |
//! | --- | --- |
//! | `tessera.ca=https://host:port` | `ca.url` |
//! | `tessera.ca_fp=sha256:<hex>` | `ca.fingerprint` |
//! | `tessera.certmgr_token=…` (or `tessera.token=…`) | `ca.token` |
//! | `tessera.hostname=…` | `node.hostname` |
//! | `tessera.config=http://…` | a v1 document fetched from the URL |
//!
//! The command line carries user-data when it has any of `tessera.ca`, `tessera.ca_fp`,
//! `tessera.token`, `tessera.certmgr_token` or `tessera.config`. `tessera.hostname` alone is
//! not user-data (PID 1 uses it for the host name at boot), so a NoCloud volume or IMDS may
//! still configure such a node.
//!
//! Merge rule with `tessera.config=`: the fetched document is read first, then every value
//! given on the command line replaces the document's value for that key (the command line is
//! the more specific of the two: one document shared by many nodes, the host name and token
//! per node). Required keys are checked after the merge, so the document may leave out what
//! the command line gives. A document that cannot be fetched within the pass's budget fails
//! the pass (it is not replaced by another source) and is retried by later passes.

use crate::events::Events;
use crate::http::{self, HttpUrl};
use crate::retry::{retry, RetryPolicy, Step};
use crate::schema::{self, Config, ConfigError, Document, Overlay};
use crate::source::{Fetched, Source, SourceError};
use crate::values::MAX_DOCUMENT;
use tessera_common::cmdline::KernelArgs;

/// Kernel arguments that make the command line a user-data source.
pub const USERDATA_KEYS: &[&str] = &["ca", "ca_fp", "token", "certmgr_token", "config"];

/// Kernel argument → schema key.
const MAPPING: &[(&str, &str)] = &[
    ("hostname", "node.hostname"),
    ("ca", "ca.url"),
    ("ca_fp", "ca.fingerprint"),
    ("certmgr_token", "ca.token"),
    ("token", "ca.token"),
];

/// Whether the command line carries user-data at all.
pub fn has_userdata(args: &KernelArgs) -> bool {
    USERDATA_KEYS.iter().any(|k| args.get(k).is_some())
}

/// The command-line values, each validated (errors name the kernel argument).
pub fn overlay(args: &KernelArgs) -> Result<Overlay, ConfigError> {
    if let (Some(a), Some(b)) = (args.get("token"), args.get("certmgr_token")) {
        if a != b {
            return Err(ConfigError {
                key: "ca.token".into(),
                message: "two different tokens given; keep only tessera.certmgr_token".into(),
                line: None,
                origin: Some("kernel arguments tessera.token and tessera.certmgr_token".into()),
            });
        }
    }
    let mut overlay = Overlay::default();
    for (arg, key) in MAPPING {
        if let Some(value) = args.get(arg) {
            overlay.set(key, value, &format!("kernel argument tessera.{arg}"))?;
        }
    }
    Ok(overlay)
}

/// `tessera.config=`, parsed, when given.
pub fn config_url(args: &KernelArgs) -> Option<Result<HttpUrl, ConfigError>> {
    args.get("config").map(|u| {
        HttpUrl::parse(u).map_err(|message| ConfigError {
            key: String::new(),
            message,
            line: None,
            origin: Some("kernel argument tessera.config".into()),
        })
    })
}

/// The configuration the command line gives on its own (no `tessera.config=`), if any.
pub fn config_from_args(args: &KernelArgs) -> Result<Option<Config>, ConfigError> {
    if !has_userdata(args) {
        return Ok(None);
    }
    schema::finish(Document::empty(), &overlay(args)?).map(Some)
}

/// A fetched document merged with the command line: the command line wins, key by key.
pub fn merge(document: &[u8], args: &KernelArgs) -> Result<Config, ConfigError> {
    let overlay = overlay(args)?;
    if schema::is_blank(document) {
        return Err(ConfigError {
            key: String::new(),
            message: "the document is empty; it must start with `version = 1`".into(),
            line: None,
            origin: None,
        });
    }
    schema::finish(schema::parse_document(document)?, &overlay)
}

pub struct CmdlineSource {
    pub args: KernelArgs,
    /// How long to keep trying `tessera.config=` within one pass.
    pub retry: RetryPolicy,
}

impl Source for CmdlineSource {
    fn name(&self) -> &str {
        "cmdline"
    }

    fn fetch(&self, events: &Events) -> Result<Option<Fetched>, SourceError> {
        let invalid = |document: &str, error| SourceError::Invalid {
            document: document.to_string(),
            error,
        };
        if !has_userdata(&self.args) {
            return Ok(None);
        }
        // Bad values on the command line are reported before anything is fetched.
        overlay(&self.args).map_err(|e| invalid("kernel command line", e))?;
        let Some(url) = config_url(&self.args) else {
            // Alone, or over a NoCloud document (the pass decides).
            let over = overlay(&self.args).map_err(|e| invalid("kernel command line", e))?;
            return config_from_args(&self.args)
                .map(|c| {
                    c.map(|config| Fetched {
                        config,
                        detail: "kernel command line".into(),
                        overlay: Some(over),
                    })
                })
                .map_err(|e| invalid("kernel command line", e));
        };
        let url = url.map_err(|e| invalid("kernel command line", e))?;
        events.info(
            "fetching user-data",
            &[
                ("source", "cmdline".into()),
                ("url", url.to_string().into()),
            ],
        );
        let body = fetch_document(&url, &self.retry, events)?;
        let document = format!("{url} (tessera.config) merged with the kernel command line");
        let config = merge(&body, &self.args).map_err(|e| invalid(&document, e))?;
        Ok(Some(Fetched {
            config,
            detail: format!("{url} + kernel command line"),
            overlay: None,
        }))
    }
}

/// GET with retries within the budget; any failure after the budget fails the pass.
fn fetch_document(
    url: &HttpUrl,
    policy: &RetryPolicy,
    events: &Events,
) -> Result<Vec<u8>, SourceError> {
    let limits = |left| http::Limits {
        connect_timeout: policy.connect_timeout.min(left),
        timeout: policy.io_timeout.min(left),
        max_body: MAX_DOCUMENT,
    };
    retry(
        policy,
        |reason: &String, delay, attempt| {
            events.debug(
                "fetch failed; retrying",
                &[
                    ("source", "cmdline".into()),
                    ("reason", reason.clone().into()),
                    ("attempt", attempt.into()),
                    ("delay_ms", (delay.as_millis() as u64).into()),
                ],
            )
        },
        |left| match http::request("GET", url, &[], limits(left)) {
            Ok(r) if r.status == 200 => Step::Done(r.body),
            Ok(r) => Step::Retry(format!("{url}: HTTP {} {}", r.status, r.reason)),
            Err(http::HttpError::TooLarge { .. }) => Step::GiveUp(format!(
                "{url}: the document is larger than {MAX_DOCUMENT} bytes"
            )),
            Err(e) => Step::Retry(e.to_string()),
        },
    )
    .map_err(|reason| SourceError::Failed(format!("cannot fetch tessera.config: {reason}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn args(s: &str) -> KernelArgs {
        KernelArgs::parse(s)
    }

    #[test]
    fn hostname_alone_is_not_userdata() {
        assert_eq!(
            config_from_args(&args("tessera.hostname=n1 quiet")),
            Ok(None)
        );
    }

    #[test]
    fn identity_arguments_make_a_config() {
        let c = config_from_args(&args(&format!(
            "console=ttyS0 tessera.hostname=N1.example tessera.ca=https://10.0.2.2:8443 tessera.ca_fp={FP} tessera.certmgr_token=abc"
        )))
        .unwrap()
        .unwrap();
        assert_eq!(c.node.hostname.as_deref(), Some("n1.example"));
        assert_eq!(c.node.cluster, "tessera");
        let ca = c.ca.unwrap();
        assert_eq!(ca.url, "https://10.0.2.2:8443");
        assert_eq!(ca.fingerprint, FP);
        assert_eq!(ca.token.expose(), "abc");
    }

    #[test]
    fn token_is_an_alias_of_certmgr_token() {
        let base = format!("tessera.ca=https://ca tessera.ca_fp={FP}");
        let c = config_from_args(&args(&format!("{base} tessera.token=t1")))
            .unwrap()
            .unwrap();
        assert_eq!(c.ca.unwrap().token.expose(), "t1");
        assert!(config_from_args(&args(&format!(
            "{base} tessera.token=t1 tessera.certmgr_token=t1"
        )))
        .is_ok());
        let e = config_from_args(&args(&format!(
            "{base} tessera.token=t1 tessera.certmgr_token=t2"
        )))
        .unwrap_err();
        assert!(e.to_string().contains("two different tokens"), "{e}");
    }

    #[test]
    fn bad_argument_names_the_key_and_the_argument() {
        let e = config_from_args(&args(
            "tessera.ca=https://ca tessera.ca_fp=sha256:00 tessera.token=t",
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ca.fingerprint: expected \"sha256:\" followed by 64 hex digits, got 2 hex digits (`tessera ca fingerprint` prints it) (kernel argument tessera.ca_fp)"
        );
    }

    #[test]
    fn missing_identity_argument_says_which_to_add() {
        let e = config_from_args(&args("tessera.ca=https://ca tessera.token=t")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ca.fingerprint: missing; add tessera.ca_fp=sha256:<64 hex digits> to the kernel command line"
        );
        let e = config_from_args(&args(&format!("tessera.ca=https://ca tessera.ca_fp={FP}")))
            .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("ca.token: missing; add tessera.certmgr_token="));
    }

    #[test]
    fn command_line_wins_over_the_fetched_document_key_by_key() {
        let doc = format!(
            "version = 1\n[node]\nhostname = \"shared.example\"\ncluster = \"prod\"\n[ca]\nurl = \"https://ca.example:8443\"\nfingerprint = \"{FP}\"\n[hub]\nseeds = [\"n2.example\"]\n"
        );
        let c = merge(
            doc.as_bytes(),
            &args(
                "tessera.config=http://x/ tessera.hostname=n7.example tessera.certmgr_token=tok7",
            ),
        )
        .unwrap();
        assert_eq!(c.node.hostname.as_deref(), Some("n7.example"));
        assert_eq!(c.node.cluster, "prod");
        let ca = c.ca.unwrap();
        assert_eq!(ca.url, "https://ca.example:8443");
        assert_eq!(ca.token.expose(), "tok7");
        assert_eq!(c.hub.unwrap().seeds, vec!["n2.example"]);
        let c = merge(
            doc.as_bytes(),
            &args("tessera.ca=https://other:1 tessera.token=t"),
        )
        .unwrap();
        assert_eq!(c.ca.unwrap().url, "https://other:1");
    }

    #[test]
    fn merged_document_still_needs_what_neither_gives() {
        let doc = "version = 1\n[ca]\nurl = \"https://ca.example\"\n";
        let e = merge(doc.as_bytes(), &args("tessera.token=t")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ca.fingerprint: missing in [ca] (line 2, column 1)"
        );
        let e = merge(b"  \n# nothing\n", &args("tessera.token=t")).unwrap_err();
        assert!(e.to_string().contains("empty"));
    }

    #[test]
    fn https_config_url_is_refused_with_the_reason() {
        let e = config_url(&args("tessera.config=https://h/x"))
            .unwrap()
            .unwrap_err();
        assert!(
            e.to_string().contains("https is not supported here yet"),
            "{e}"
        );
    }
}
