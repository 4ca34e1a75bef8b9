//! Reading `tessera.*` arguments from the kernel command line.
//!
//! The kernel splits its command line on spaces outside double quotes; a value may be quoted
//! (`tessera.hostname="a b"`). Unknown `tessera.*` keys are kept aside so that the caller can
//! warn about them without failing the boot.

use std::collections::BTreeMap;

/// The `tessera.*` keys this release understands, with what each one means.
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    ("hostname", "node hostname"),
    ("ca", "URL of the cluster CA"),
    ("ca_fp", "sha256 fingerprint of the CA certificate"),
    ("token", "one-time bootstrap token"),
    (
        "certmgr_token",
        "one-time token for the certificate manager",
    ),
    ("config", "URL of the user-data to fetch"),
    (
        "modules",
        "extra kernel modules to load at boot, comma-separated",
    ),
    ("imds", "IMDSv2 endpoint (http://host:port) or off"),
    ("certmgr_key", "the node key mode: kernel-rsa or ecdsa-p256"),
    (
        "certmgr_child_key",
        "the agents' key mode: ecdsa-p256 (default) or kernel-rsa",
    ),
];

/// The `tessera.*` part of a kernel command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelArgs {
    /// Known keys (without the `tessera.` prefix) and their values; a bare key has value "".
    pub values: BTreeMap<String, String>,
    /// `tessera.*` keys this release does not know, as written.
    pub unknown: Vec<String>,
}

impl KernelArgs {
    /// Parses a whole kernel command line.
    pub fn parse(cmdline: &str) -> Self {
        let mut args = KernelArgs::default();
        for word in split_words(cmdline) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, unquote(v)),
                None => (word.as_str(), String::new()),
            };
            let Some(name) = key.strip_prefix("tessera.") else {
                continue;
            };
            if KNOWN_KEYS.iter().any(|(k, _)| *k == name) {
                args.values.insert(name.to_string(), value);
            } else {
                args.unknown.push(key.to_string());
            }
        }
        args
    }

    /// Reads and parses `/proc/cmdline`.
    pub fn from_proc() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/cmdline")?))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Splits on ASCII whitespace, keeping double-quoted runs together (quotes are kept).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn unquote(value: &str) -> String {
    value.replace('"', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_kept_and_other_arguments_ignored() {
        let a = KernelArgs::parse(
            "console=ttyS0 quiet tessera.hostname=node1 tessera.modules=btrfs,nf_tables\n",
        );
        assert_eq!(a.get("hostname"), Some("node1"));
        assert_eq!(a.get("modules"), Some("btrfs,nf_tables"));
        assert!(a.unknown.is_empty());
        assert_eq!(a.values.len(), 2);
    }

    #[test]
    fn quoted_values_may_hold_spaces() {
        let a = KernelArgs::parse(r#"tessera.config="http://h/a b" x=1"#);
        assert_eq!(a.get("config"), Some("http://h/a b"));
    }

    #[test]
    fn unknown_tessera_keys_are_reported_not_fatal() {
        let a = KernelArgs::parse("tessera.hostnme=x tessera.hostname=y");
        assert_eq!(a.unknown, vec!["tessera.hostnme".to_string()]);
        assert_eq!(a.get("hostname"), Some("y"));
    }

    #[test]
    fn bare_key_has_empty_value() {
        let a = KernelArgs::parse("tessera.token");
        assert_eq!(a.get("token"), Some(""));
    }
}
