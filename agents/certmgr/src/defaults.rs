//! Every path, key description, kernel argument and timing of the certificate manager.

use std::time::Duration;

/// The socket of the certmgr protocol (agents/README.md, "certmgr socket protocol").
pub const SOCKET_PATH: &str = "/run/tessera/certmgr.sock";
/// Points the CLI and the callout at another socket (host tests).
pub const SOCKET_ENV: &str = "TESSERA_CERTMGR_SOCKET";

/// The validated user-data the `userdata` service writes.
pub const USERDATA_FILE: &str = tessera_userdata::defaults::USERDATA_FILE;

/// The `user` key in root's user keyring that carries the bootstrap token from the `userdata`
/// service to certmgr; certmgr invalidates it once the token is redeemed or refused.
pub const BOOTSTRAP_TOKEN_DESC: &str = tessera_userdata::service::token_handoff::TOKEN_DESC;
/// What `ca.token` says in /run/tessera/userdata.toml when the token is in the keyring.
pub const TOKEN_IN_KEYRING: &str = tessera_userdata::service::token_handoff::TOKEN_IN_KEYRING;

/// The `user` key (in root's user keyring) holding the node's certificate chain, PEM.
pub const NODE_CERT_DESC: &str = "tessera:node:cert";

/// `request_key("user", "tessera:identity:<token>", …)`: what a child asks for.
pub const IDENTITY_DESC_PREFIX: &str = "tessera:identity:";
/// The child's private key in its process keyring: `tessera:identity-key:<serial>`.
pub const IDENTITY_KEY_DESC_PREFIX: &str = "tessera:identity-key:";
/// The callout info a requester passes to request_key(2) (any non-empty string starts the
/// upcall; the token is in the description).
pub const CALLOUT_INFO: &str = "tessera";
/// The number of the inherited pipe that holds a child's token (never the token itself).
pub const IDENTITY_FD_ENV: &str = "TESSERA_IDENTITY_FD";

/// `tessera.certmgr_key=kernel-rsa|ecdsa-p256`: force the node's key mode (benchmarks, or a
/// kernel whose PKCS#8 support should not be used). Default: detected.
pub const KEY_MODE_ARG: &str = "certmgr_key";
/// The same for runs outside a node (`TESSERA_CERTMGR_KEY_MODE`).
pub const KEY_MODE_ENV: &str = "TESSERA_CERTMGR_KEY_MODE";
/// `tessera.certmgr_child_key=kernel-rsa|ecdsa-p256`: the key mode of agents' (child)
/// identities. Default: ecdsa-p256.
pub const CHILD_KEY_MODE_ARG: &str = "certmgr_child_key";
/// The same for runs outside a node.
pub const CHILD_KEY_MODE_ENV: &str = "TESSERA_CERTMGR_CHILD_KEY_MODE";

/// One-time child tokens expire after this.
pub const CHILD_TOKEN_TTL: Duration = Duration::from_secs(300);
/// At most this many child identities wait to be redeemed.
pub const MAX_PENDING_TOKENS: usize = 64;
/// How long a `redeem` waits for a child identity still being made.
pub const REDEEM_WAIT: Duration = Duration::from_secs(60);
/// The subsystem the node's own token is bound to.
pub const NODE_SUBSYSTEM: &str = tessera_identity::profile::CERTMGR_SUBSYSTEM;
/// What the standalone node identity may request certificates for.
pub const STANDALONE_CAPABILITIES: &[&str] = &["node", "container", "hub"];
/// Lifetime of the node-local CA's certificate (it dies with certmgr anyway).
pub const STANDALONE_CA_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start this much in the past, for clocks a little behind.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// Waiting for the CA: delays double from the first to the last, with jitter.
pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// While the node has no route yet, try again soon: the network comes up within the second.
pub const NO_ROUTE_RETRY: Duration = Duration::from_millis(100);
/// Renewal failures: first delay and the longest.
pub const RENEW_RETRY_INITIAL: Duration = Duration::from_secs(5);
pub const RENEW_RETRY_MAX: Duration = Duration::from_secs(300);
/// Renew at this fraction of the lifetime ...
pub const RENEW_FRACTION: f64 = 2.0 / 3.0;
/// ... plus or minus this fraction of the lifetime, drawn at random.
pub const RENEW_JITTER: f64 = 0.05;
/// How often user-data is read again while waiting for a usable configuration.
pub const CONFIG_POLL: Duration = Duration::from_secs(2);

/// TCP connect and TLS/HTTP exchange timeouts towards the CA.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest reply accepted from the CA.
pub const MAX_REPLY: usize = 256 * 1024;

/// Longest request line on the socket, and how long a client may take to send it.
pub const MAX_REQUEST_LINE: usize = 16 * 1024;
pub const SOCKET_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply line a socket client accepts (a chain and a key).
pub const MAX_REPLY_LINE: usize = 64 * 1024;
/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a negated key stays negative, so that a retry runs the callout again soon.
pub const NEGATIVE_KEY_TIMEOUT_S: u32 = 5;
