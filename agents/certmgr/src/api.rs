//! The socket server of the certmgr protocol on /run/tessera/certmgr.sock (mode 0600): who
//! asks is read from the socket (SO_PEERCRED), never from the request.
//!
//! | op | who may ask |
//! | --- | --- |
//! | `status` | root |
//! | `child-token` | PID 1; a process holding a certmgr-issued identity whose capabilities list the subsystem (and every capability it passes on); a root process with CAP_SYS_PTRACE — the operator's console, which could read certmgr's memory anyway |
//! | `redeem` | root (the request-key callout) |

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tessera_identity::profile::PeerIdentity;
use tessera_userdata::events::Events;

use crate::children;
use crate::defaults;
use crate::keygen::KeygenHelper;
use crate::node::Shared;
use crate::peers::Peers;
use crate::protocol::{self, ApiError, ChildRequest, Request};
use crate::secret::SecretBytes;
use crate::tokens::TokenStore;

/// Everything a request may need.
pub struct Context {
    pub shared: Arc<Shared>,
    pub tokens: Arc<TokenStore>,
    pub peers: Arc<Peers>,
    pub helper: Option<Arc<KeygenHelper>>,
    pub events: Arc<Events>,
    /// The supervisor: PID 1 on a node (a test's own pid on a host).
    pub parent_pid: u32,
    /// Whether root processes with CAP_SYS_PTRACE may ask for child tokens.
    pub allow_operator: bool,
    pub redeem_wait: Duration,
}

/// Who is on the other end of the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
}

/// Binds the socket (replacing a stale one) and serves it on a thread.
pub fn serve(path: &Path, ctx: Arc<Context>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = tessera_common::api_error::bind_private(path)?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("certmgr-api".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if active.load(Ordering::SeqCst) >= defaults::MAX_CONNECTIONS {
                    let _ = (&conn).write_all(
                        &ApiError::new("busy", "certmgr is serving too many requests; try again")
                            .line(),
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (ctx, done) = (ctx.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("certmgr-conn".into())
                    .spawn(move || {
                        serve_one(conn, &ctx);
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
}

fn serve_one(mut conn: UnixStream, ctx: &Context) {
    let caller = match peer_credentials(&conn) {
        Ok(c) => c,
        Err(e) => {
            let _ = conn.write_all(&ApiError::new("internal", format!("SO_PEERCRED: {e}")).line());
            return;
        }
    };
    let _ = conn.set_read_timeout(Some(defaults::SOCKET_READ_TIMEOUT));
    let mut line = SecretBytes::with_capacity(defaults::MAX_REQUEST_LINE);
    let reply = match read_line(&mut conn, &mut line) {
        Ok(()) => handle(line.as_slice(), caller, ctx),
        Err(e) => Reply::Plain(e.line()),
    };
    drop(line);
    let _ = match &reply {
        Reply::Plain(bytes) => conn.write_all(bytes),
        Reply::Secret(bytes) => conn.write_all(bytes.as_slice()),
    };
    let _ = conn.flush();
}

/// A reply line; secret ones are zeroized once written.
pub enum Reply {
    Plain(Vec<u8>),
    Secret(SecretBytes),
}

impl Reply {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Reply::Plain(b) => b,
            Reply::Secret(b) => b.as_slice(),
        }
    }
}

fn read_line(conn: &mut UnixStream, line: &mut SecretBytes) -> Result<(), ApiError> {
    loop {
        if line.as_slice().contains(&b'\n') {
            let end = line
                .as_slice()
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(0);
            // Keep only the line itself.
            let mut only = SecretBytes::with_capacity(end.max(1));
            only.push(&line.as_slice()[..end]);
            *line = only;
            return Ok(());
        }
        if line.spare_mut().is_empty() {
            return Err(ApiError::new(
                "bad_request",
                format!(
                    "the request line is longer than {} bytes",
                    defaults::MAX_REQUEST_LINE
                ),
            ));
        }
        match conn.read(line.spare_mut()) {
            Ok(0) => {
                if line.is_empty() {
                    return Err(ApiError::new("bad_request", "empty request"));
                }
                // A last line without its newline is accepted.
                return Ok(());
            }
            Ok(n) => line.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ApiError::new(
                    "bad_request",
                    format!(
                        "no complete request line within {} s: {e}",
                        defaults::SOCKET_READ_TIMEOUT.as_secs()
                    ),
                ))
            }
        }
    }
}

/// SO_PEERCRED of a connected unix socket.
pub fn peer_credentials(conn: &UnixStream) -> std::io::Result<Caller> {
    let cred = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(Caller {
        pid: u32::try_from(cred.pid()).unwrap_or(0),
        uid: cred.uid(),
    })
}

/// Answers one request line from `caller`.
pub fn handle(line: &[u8], caller: Caller, ctx: &Context) -> Reply {
    let request = match protocol::parse(line) {
        Ok(r) => r,
        Err(e) => return Reply::Plain(e.line()),
    };
    let result = match request {
        Request::Status => status(caller, ctx),
        Request::Trust => trust(ctx),
        Request::ChildToken(req) => child_token(caller, ctx, req),
        Request::Redeem { token, pid } => redeem(caller, ctx, token, pid),
    };
    match result {
        Ok(reply) => reply,
        Err(e) => {
            ctx.events.warn(
                "request refused",
                &[
                    ("caller_pid", caller.pid.into()),
                    ("caller_uid", caller.uid.into()),
                    ("error", e.code.into()),
                    ("reason", e.reason.clone().into()),
                ],
            );
            Reply::Plain(e.line())
        }
    }
}

fn require_root(caller: Caller, op: &str) -> Result<(), ApiError> {
    if caller.uid == 0 {
        Ok(())
    } else {
        Err(ApiError::new(
            "forbidden",
            format!(
                "{op} is for root; process {} runs as uid {}",
                caller.pid, caller.uid
            ),
        ))
    }
}

fn status(caller: Caller, ctx: &Context) -> Result<Reply, ApiError> {
    require_root(caller, "status")?;
    let mut v = ctx.shared.status_json();
    if let Value::Object(m) = &mut v {
        m.insert("child_tokens_live".into(), ctx.tokens.live().into());
    }
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    Ok(Reply::Plain(line))
}

/// Public material only, so any local caller may ask.
fn trust(ctx: &Context) -> Result<Reply, ApiError> {
    let v = ctx.shared.trust_json().ok_or_else(|| {
        ApiError::new(
            "not_ready",
            "the node has no identity yet, so there is no CA to trust; wait for certmgr to be ready (`tessera identity status` says why it waits)",
        )
    })?;
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    Ok(Reply::Plain(line))
}

/// Who may hand out identities of subsystem `req.subsystem`, and with which capabilities.
fn authorize_child(
    caller: Caller,
    ctx: &Context,
    req: &ChildRequest,
) -> Result<&'static str, ApiError> {
    if caller.pid == ctx.parent_pid && caller.uid == 0 {
        return Ok("supervisor");
    }
    if let Some(holder) = ctx.peers.identity_of(caller.pid) {
        return check_holder(&holder, req).map(|()| "identity holder");
    }
    // The operator's shell and the node's root agents (the container agent asks for its
    // containers' identities this way). Not a process in a container's PID namespace, even
    // one granted CAP_SYS_PTRACE: it cannot reach certmgr's memory, so it is no operator.
    if ctx.allow_operator
        && caller.uid == 0
        && has_capability(caller.pid, CAP_SYS_PTRACE)
        && same_pid_namespace(caller.pid)
    {
        return Ok("operator");
    }
    Err(ApiError::new(
        "forbidden",
        format!(
            "process {} (uid {}) holds no certmgr-issued identity whose capabilities list {:?}; child tokens are for PID 1 (a service file's `identity = {{…}}`), for agents whose certificate lists the subsystem, and for the operator's root shell",
            caller.pid, caller.uid, req.subsystem
        ),
    ))
}

/// An identity holder may request children of the subsystems its capabilities list, and a
/// successor of its own identity (same subsystem and agent id: the renewal of thesis 4.8's
/// subsequent hand-off), never with capabilities it does not hold.
fn check_holder(holder: &PeerIdentity, req: &ChildRequest) -> Result<(), ApiError> {
    let renewal = req.subsystem == holder.subsystem && req.agent_id == holder.agent_id;
    if !renewal && !holder.has_capability(&req.subsystem) {
        return Err(ApiError::new(
            "capability_missing",
            format!(
                "your identity ({}) may request certificates for [{}], not for {:?}",
                crate::ca_client::subject_text(holder),
                holder.capabilities.join(", "),
                req.subsystem
            ),
        ));
    }
    if let Some(c) = req.capabilities.iter().find(|c| !holder.has_capability(c)) {
        return Err(ApiError::new(
            "capability_missing",
            format!("you can pass on only capabilities you hold; yours do not include {c:?}"),
        ));
    }
    Ok(())
}

/// Whether `pid` is in certmgr's own PID namespace (not in a container's, nested below it):
/// the number of PID namespaces it has a pid in (`NSpid:` of /proc/<pid>/status, readable
/// without ptrace access, unlike /proc/<pid>/ns/pid) is certmgr's own.
fn same_pid_namespace(pid: u32) -> bool {
    let depth = |path: String| {
        std::fs::read_to_string(path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|v| v.split_whitespace().count())
        })
    };
    match (
        depth(format!("/proc/{pid}/status")),
        depth("/proc/self/status".into()),
    ) {
        (Some(theirs), Some(mine)) => theirs == mine,
        _ => false,
    }
}

/// capability.h: a process with it may read any other process's memory.
const CAP_SYS_PTRACE: u32 = 19;

/// Whether `pid`'s effective capability set has `cap` (/proc/<pid>/status, CapEff).
pub fn has_capability(pid: u32, cap: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|bits| cap < 64 && bits & (1u64 << cap) != 0)
}

fn child_token(caller: Caller, ctx: &Context, req: ChildRequest) -> Result<Reply, ApiError> {
    children::validate(&req).map_err(|e| ApiError::new("invalid_name", e))?;
    let who = authorize_child(caller, ctx, &req)?;
    let Some(node) = ctx.shared.identity() else {
        let reason = ctx.shared.read(|s| s.reason.clone());
        return Err(ApiError::new(
            "not_ready",
            format!("the node has no identity yet ({reason}); ask again once certmgr is ready"),
        ));
    };
    let mine = &node.issued.peer;
    if !mine.has_capability(&req.subsystem) {
        return Err(ApiError::new(
            "capability_missing",
            format!(
                "the node identity may request certificates for [{}], not for {:?}; issue the node's token with `tessera ca token --capabilities …,{}`",
                mine.capabilities.join(", "),
                req.subsystem,
                req.subsystem
            ),
        ));
    }
    let (token, id) = ctx
        .tokens
        .create()
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    ctx.events.info(
        "child token issued",
        &[
            ("subsystem", req.subsystem.clone().into()),
            ("agent_id", req.agent_id.clone().into()),
            ("requested_by", caller.pid.into()),
            ("as", who.into()),
        ],
    );
    let key_mode = ctx.shared.read(|s| s.child_key_mode);
    let tokens = ctx.tokens.clone();
    let helper = ctx.helper.clone();
    let events = ctx.events.clone();
    // The identity is made while the token travels to the child.
    let spawned = std::thread::Builder::new()
        .name("certmgr-child".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let outcome = children::make(&node, key_mode, helper.as_deref(), &req);
            match &outcome {
                Ok(id) => events.info(
                    "child identity ready",
                    &[
                        ("subject", crate::ca_client::subject_text(&id.peer).into()),
                        ("serial", id.peer.serial.clone().into()),
                        ("key_mode", key_mode.name().into()),
                        ("ms", (started.elapsed().as_millis() as u64).into()),
                    ],
                ),
                Err(e) => events.error(
                    "child identity failed",
                    &[
                        ("subsystem", req.subsystem.clone().into()),
                        ("reason", e.clone().into()),
                    ],
                ),
            }
            tokens.complete(&id, outcome);
        });
    if let Err(e) = spawned {
        ctx.tokens
            .complete(&id, Err(format!("cannot start a thread: {e}")));
    }
    Ok(Reply::Secret(protocol::token_reply(
        &token,
        ctx.tokens.ttl().as_secs(),
    )))
}

fn redeem(caller: Caller, ctx: &Context, token: &str, pid: Option<u32>) -> Result<Reply, ApiError> {
    require_root(caller, "redeem")?;
    let identity = ctx
        .tokens
        .redeem(token, ctx.redeem_wait)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    // The callout names the requester (the kernel told it); a direct redeemer holds it itself.
    let holder = pid.unwrap_or(caller.pid);
    ctx.peers.record(holder, identity.peer.clone());
    ctx.events.info(
        "child identity handed over",
        &[
            (
                "subject",
                crate::ca_client::subject_text(&identity.peer).into(),
            ),
            ("serial", identity.peer.serial.clone().into()),
            ("pid", holder.into()),
            ("redeemed_by", caller.pid.into()),
        ],
    );
    Ok(Reply::Secret(protocol::redeem_reply(&identity)))
}

#[cfg(test)]
mod holder_tests {
    use super::*;

    fn holder(subsystem: &str, agent_id: &str, caps: &[&str]) -> PeerIdentity {
        PeerIdentity {
            cluster: "c".into(),
            subsystem: subsystem.into(),
            node: "n1.example".into(),
            agent_id: agent_id.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            serial: "01".into(),
            not_after: std::time::SystemTime::now(),
        }
    }

    fn req(subsystem: &str, agent_id: &str, caps: &[&str]) -> ChildRequest {
        ChildRequest {
            subsystem: subsystem.into(),
            agent_id: agent_id.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            uris: Vec::new(),
        }
    }

    #[test]
    fn a_holder_may_renew_itself_but_not_become_another_agent() {
        let hub = holder("hub", "hub", &[]);
        assert_eq!(check_holder(&hub, &req("hub", "hub", &[])), Ok(()));
        let other = check_holder(&hub, &req("hub", "hub2", &[])).unwrap_err();
        assert_eq!(other.code, "capability_missing");
        let node = check_holder(&hub, &req("node", "node", &[])).unwrap_err();
        assert_eq!(node.code, "capability_missing");
    }

    #[test]
    fn a_renewal_cannot_add_capabilities() {
        let agent = holder("container", "c1", &["web"]);
        assert_eq!(
            check_holder(&agent, &req("container", "c1", &["web"])),
            Ok(())
        );
        let more = check_holder(&agent, &req("container", "c1", &["web", "node"])).unwrap_err();
        assert!(more.reason.contains("\"node\""), "{}", more.reason);
    }

    #[test]
    fn only_processes_of_certmgrs_pid_namespace_can_be_operators() {
        assert!(super::same_pid_namespace(std::process::id()));
        assert!(
            !super::same_pid_namespace(u32::MAX),
            "an unknown process is no operator"
        );
    }
}
