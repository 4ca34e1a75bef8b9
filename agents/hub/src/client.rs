//! The library components and agents use to talk to the hub of their node over the local
//! channel: `connect`, `register`, `select`, `call`, `cast`, `on_call`, attributes and
//! monitors.
//!
//! Correlation ids are a random 32-bit prefix chosen per connection and a counter; when the
//! counter wraps a new prefix is drawn, and an id still pending is skipped, so no id is reused
//! while a request with it waits. Every call also has a deadline here (its expiry plus a
//! margin) in case the hub itself goes away.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, Frame};
use crate::defaults;
use crate::error::{Code, HubError};
use crate::id::TargetId;
use crate::protocol::{
    replies, ClientMsg, Event, HubMsg, Member, Outcome, Selector, Target, Watch,
};

/// One reply to a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The component that answered (absent when the hub answers, e.g. `expired`).
    pub from: Option<TargetId>,
    pub result: Result<Value, HubError>,
    pub attachments: Vec<Vec<u8>>,
}

/// A call or cast to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub target: Target,
    pub object: String,
    pub operation: String,
    pub inputs: Value,
    pub attachments: Vec<Vec<u8>>,
    pub selector: Selector,
    pub expiry: Option<Duration>,
}

impl Request {
    pub fn new(target: Target, operation: &str) -> Self {
        Request {
            target,
            object: String::new(),
            operation: operation.to_string(),
            inputs: Value::Null,
            attachments: Vec::new(),
            selector: Selector::Any,
            expiry: None,
        }
    }

    pub fn object(mut self, object: &str) -> Self {
        self.object = object.to_string();
        self
    }

    pub fn inputs(mut self, inputs: Value) -> Self {
        self.inputs = inputs;
        self
    }

    pub fn attachments(mut self, attachments: Vec<Vec<u8>>) -> Self {
        self.attachments = attachments;
        self
    }

    pub fn selector(mut self, selector: Selector) -> Self {
        self.selector = selector;
        self
    }

    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = Some(expiry);
        self
    }
}

/// A call or cast delivered to this component.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub caller: String,
    pub object: String,
    pub operation: String,
    pub inputs: Value,
    pub attachments: Vec<Vec<u8>>,
    /// Time left before the caller gives up: a hint whether the work is still worth doing.
    pub expiry: Duration,
    /// `false` for casts.
    pub wants_reply: bool,
}

/// Answers one invocation (once). Dropping it without answering lets the request expire.
pub struct Responder {
    tx: mpsc::Sender<Frame<ClientMsg>>,
    invocation: u64,
    wanted: bool,
}

impl Responder {
    /// Replies with outputs, or an error the caller sees as code `component`.
    pub fn reply(self, result: Result<Value, String>) {
        self.reply_with(result, Vec::new())
    }

    pub fn reply_with(self, result: Result<Value, String>, attachments: Vec<Vec<u8>>) {
        if !self.wanted {
            return;
        }
        let result = match result {
            Ok(v) => Outcome::Ok(v),
            Err(reason) => Outcome::Error(HubError::new(Code::Component, reason)),
        };
        let frame = Frame::with(
            ClientMsg::Reply {
                invocation: self.invocation,
                result,
            },
            attachments,
        );
        if self.tx.try_send(frame).is_err() {
            tracing::debug!("reply not sent: the connection to the hub is gone or full");
        }
    }
}

type Handler = Arc<dyn Fn(Invocation, Responder) + Send + Sync>;

enum Waiter {
    One(oneshot::Sender<Response>),
    Many(mpsc::UnboundedSender<(Response, u32)>),
    Monitor(oneshot::Sender<Response>, mpsc::UnboundedSender<Event>),
}

struct CorrGen {
    prefix: u32,
    counter: u32,
}

struct Shared {
    tx: mpsc::Sender<Frame<ClientMsg>>,
    corr: Mutex<CorrGen>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    monitors: Mutex<HashMap<u64, mpsc::UnboundedSender<Event>>>,
    handler: Mutex<Option<Handler>>,
}

/// A monitor's events; dropping it does not remove the monitor (see [`Client::unmonitor`]).
pub struct Monitor {
    pub id: u64,
    pub events: mpsc::UnboundedReceiver<Event>,
}

impl Monitor {
    /// The next event, or `None` after `wait` or when the connection closed.
    pub async fn next(&mut self, wait: Duration) -> Option<Event> {
        tokio::time::timeout(wait, self.events.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A connection to the hub.
pub struct Client {
    shared: Arc<Shared>,
    component: Option<TargetId>,
    hub: String,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

fn gone() -> HubError {
    HubError::new(
        Code::Unreachable,
        "the connection to the hub is closed; reconnect (is `tessera agent hub` running?)",
    )
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // A failing system RNG only costs the prefix its randomness.
    let _ = SystemRandom::new().fill(&mut b);
    u32::from_be_bytes(b)
}

/// The socket path: `$TESSERA_HUB_SOCKET` or the node's.
pub fn default_socket() -> std::path::PathBuf {
    match std::env::var_os(defaults::SOCKET_ENV) {
        Some(p) if !p.is_empty() => p.into(),
        _ => defaults::SOCKET_PATH.into(),
    }
}

impl Client {
    /// Connects as component `name` of `component_type`; the hub assigns its id.
    pub async fn connect(
        path: &Path,
        name: &str,
        component_type: &str,
    ) -> Result<Client, HubError> {
        Self::open(path, Some((name, component_type))).await
    }

    /// Connects as a plain caller (select, call, cast, monitor; no groups or attributes).
    pub async fn connect_anonymous(path: &Path) -> Result<Client, HubError> {
        Self::open(path, None).await
    }

    async fn open(path: &Path, hello: Option<(&str, &str)>) -> Result<Client, HubError> {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            HubError::new(
                Code::Unreachable,
                format!("cannot connect to the hub at {}: {e}; is `tessera agent hub` running? (set {} for another socket)", path.display(), defaults::SOCKET_ENV),
            )
        })?;
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        let mut component = None;
        let mut hub = String::new();
        if let Some((name, component_type)) = hello {
            use tokio::io::AsyncWriteExt;
            let hello = codec::to_bytes(&Frame::new(ClientMsg::Hello {
                name: name.to_string(),
                component_type: component_type.to_string(),
            }))
            .map_err(|e| HubError::bad(e.to_string()))?;
            wr.write_all(&hello).await.map_err(|_| gone())?;
            let mut buf = Vec::new();
            let first = tokio::time::timeout(
                Duration::from_secs(10),
                codec::read_frame::<_, HubMsg>(&mut rd, defaults::MAX_FRAME, &mut buf),
            )
            .await
            .map_err(|_| {
                HubError::new(
                    Code::Unreachable,
                    "the hub did not answer hello within 10 s",
                )
            })?
            .map_err(|e| HubError::new(Code::Unreachable, e.to_string()))?;
            match first.map(|f| f.header) {
                Some(HubMsg::Welcome {
                    component: c,
                    hub: h,
                }) => {
                    component = Some(c);
                    hub = h;
                }
                Some(HubMsg::Reply {
                    result: Outcome::Error(e),
                    ..
                }) => return Err(e),
                _ => {
                    return Err(HubError::new(
                        Code::Unreachable,
                        "the hub did not welcome the component",
                    ))
                }
            }
        }
        let (tx, rx) = mpsc::channel(defaults::CONNECTION_QUEUE);
        let shared = Arc::new(Shared {
            tx,
            corr: Mutex::new(CorrGen {
                prefix: random_u32(),
                counter: 0,
            }),
            waiters: Mutex::new(HashMap::new()),
            monitors: Mutex::new(HashMap::new()),
            handler: Mutex::new(None),
        });
        let writer = tokio::spawn(codec::write_frames(wr, rx));
        let reader = tokio::spawn(read_loop(shared.clone(), rd));
        Ok(Client {
            shared,
            component,
            hub,
            reader,
            writer,
        })
    }

    /// This component's id (`None` for anonymous connections).
    pub fn id(&self) -> Option<TargetId> {
        self.component
    }

    /// The hub's name (empty for anonymous connections).
    pub fn hub(&self) -> &str {
        &self.hub
    }

    fn next_corr(&self) -> u64 {
        let waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut g = self.shared.corr.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            g.counter = g.counter.wrapping_add(1);
            if g.counter == 0 {
                g.prefix = random_u32();
            }
            let corr = ((g.prefix as u64) << 32) | g.counter as u64;
            if corr != 0 && !waiters.contains_key(&corr) {
                return corr;
            }
        }
    }

    async fn send(&self, frame: Frame<ClientMsg>) -> Result<(), HubError> {
        self.shared.tx.send(frame).await.map_err(|_| gone())
    }

    async fn wait(&self, corr: u64, rx: oneshot::Receiver<Response>, limit: Duration) -> Response {
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Response {
                from: None,
                result: Err(gone()),
                attachments: Vec::new(),
            },
            Err(_) => {
                self.shared
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&corr);
                Response {
                    from: None,
                    result: Err(HubError::new(
                        Code::Expired,
                        "the hub did not answer in time; it may be overloaded or gone",
                    )),
                    attachments: Vec::new(),
                }
            }
        }
    }

    /// Sends a request that gets one reply and waits for it.
    async fn request_one(
        &self,
        build: impl FnOnce(u64) -> Frame<ClientMsg>,
        limit: Duration,
    ) -> Response {
        let corr = self.next_corr();
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(corr, Waiter::One(tx));
        if let Err(e) = self.send(build(corr)).await {
            self.shared
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&corr);
            return Response {
                from: None,
                result: Err(e),
                attachments: Vec::new(),
            };
        }
        self.wait(corr, rx, limit).await
    }

    async fn simple<T: serde::de::DeserializeOwned>(
        &self,
        build: impl FnOnce(u64) -> ClientMsg,
    ) -> Result<T, HubError> {
        let r = self
            .request_one(|c| Frame::new(build(c)), Duration::from_secs(30))
            .await;
        let v = r.result?;
        serde_json::from_value(v)
            .map_err(|e| HubError::bad(format!("unexpected reply from the hub: {e}")))
    }

    /// Joins groups; the reply has each group's member count at that moment.
    pub async fn register(&self, groups: &[&str]) -> Result<BTreeMap<String, usize>, HubError> {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        let r: replies::Counts = self
            .simple(|corr| ClientMsg::Register { corr, groups })
            .await?;
        Ok(r.counts)
    }

    pub async fn unregister(&self, groups: &[&str]) -> Result<BTreeMap<String, usize>, HubError> {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        let r: replies::Counts = self
            .simple(|corr| ClientMsg::Unregister { corr, groups })
            .await?;
        Ok(r.counts)
    }

    pub async fn select(&self, group: &str, selector: Selector) -> Result<Vec<Member>, HubError> {
        let group = group.to_string();
        let r: replies::Members = self
            .simple(|corr| ClientMsg::Select {
                corr,
                group,
                selector,
            })
            .await?;
        Ok(r.members)
    }

    fn call_msg(corr: u64, req: &Request) -> Frame<ClientMsg> {
        Frame::with(
            ClientMsg::Call {
                corr,
                target: req.target.clone(),
                object: req.object.clone(),
                operation: req.operation.clone(),
                inputs: req.inputs.clone(),
                selector: req.selector,
                expiry_ms: req.expiry.map(|d| d.as_millis().max(1) as u64),
            },
            req.attachments.clone(),
        )
    }

    fn limit(req: &Request) -> Duration {
        req.expiry.unwrap_or(defaults::DEFAULT_EXPIRY) + Duration::from_secs(2)
    }

    /// Calls `operation` on a target (one member for a group) and returns its outputs.
    pub async fn call(
        &self,
        target: Target,
        operation: &str,
        inputs: Value,
    ) -> Result<Value, HubError> {
        self.request(Request::new(target, operation).inputs(inputs))
            .await
            .result
    }

    /// Sends a call and returns the (first) reply.
    pub async fn request(&self, req: Request) -> Response {
        let limit = Self::limit(&req);
        self.request_one(|corr| Self::call_msg(corr, &req), limit)
            .await
    }

    /// Sends a call with selector `all` and collects one reply per member (an `expired`
    /// error stands for the members that did not answer in time).
    pub async fn call_all(&self, req: Request) -> Result<Vec<Response>, HubError> {
        let req = req.selector(Selector::All);
        let limit = Self::limit(&req);
        let corr = self.next_corr();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(corr, Waiter::Many(tx));
        self.send(Self::call_msg(corr, &req)).await?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((r, remaining))) => {
                    out.push(r);
                    if remaining == 0 {
                        return Ok(out);
                    }
                }
                Ok(None) => return if out.is_empty() { Err(gone()) } else { Ok(out) },
                Err(_) => {
                    self.shared
                        .waiters
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&corr);
                    return Ok(out);
                }
            }
        }
    }

    /// Fire and forget; errors only if the hub connection is gone.
    pub async fn cast(&self, req: Request) -> Result<(), HubError> {
        self.send(Frame::with(
            ClientMsg::Cast {
                target: req.target,
                object: req.object,
                operation: req.operation,
                inputs: req.inputs,
                selector: req.selector,
            },
            req.attachments,
        ))
        .await
    }

    /// Serves calls and casts addressed to this component. The handler runs on the
    /// connection's reader: answer quickly, or move the responder to a task of its own.
    pub fn on_call(&self, handler: impl Fn(Invocation, Responder) + Send + Sync + 'static) {
        *self
            .shared
            .handler
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    /// Sets (Some) or removes (None) attributes of this component, or of a group it is a
    /// member of.
    pub async fn update_attributes(
        &self,
        group: Option<&str>,
        values: BTreeMap<String, Option<Value>>,
    ) -> Result<(), HubError> {
        let group = group.map(str::to_string);
        let _: Value = self
            .simple(|corr| ClientMsg::UpdateAttributes {
                corr,
                group,
                values,
            })
            .await?;
        Ok(())
    }

    pub async fn select_attributes(
        &self,
        target: Target,
        names: &[&str],
    ) -> Result<BTreeMap<String, Value>, HubError> {
        let names = names.iter().map(|n| n.to_string()).collect();
        let r: replies::Attributes = self
            .simple(|corr| ClientMsg::SelectAttributes {
                corr,
                target,
                names,
            })
            .await?;
        Ok(r.attributes)
    }

    /// Starts a monitor; its events arrive on the returned receiver.
    pub async fn monitor(&self, watch: Watch) -> Result<Monitor, HubError> {
        let corr = self.next_corr();
        let (tx, rx) = oneshot::channel();
        let (etx, erx) = mpsc::unbounded_channel();
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(corr, Waiter::Monitor(tx, etx));
        self.send(Frame::new(ClientMsg::Monitor { corr, watch }))
            .await?;
        let r = self.wait(corr, rx, Duration::from_secs(30)).await;
        let set: replies::MonitorSet = serde_json::from_value(r.result?)
            .map_err(|e| HubError::bad(format!("unexpected reply from the hub: {e}")))?;
        Ok(Monitor {
            id: set.monitor,
            events: erx,
        })
    }

    pub async fn unmonitor(&self, monitor: u64) -> Result<(), HubError> {
        self.shared
            .monitors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&monitor);
        let _: Value = self
            .simple(|corr| ClientMsg::Unmonitor { corr, monitor })
            .await?;
        Ok(())
    }

    /// Closes the connection: the hub drops this component from its groups and fires the
    /// monitors watching it.
    pub async fn close(self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

async fn read_loop(shared: Arc<Shared>, mut rd: BufReader<tokio::net::unix::OwnedReadHalf>) {
    let mut buf = Vec::new();
    loop {
        let frame =
            match codec::read_frame::<_, HubMsg>(&mut rd, defaults::MAX_FRAME, &mut buf).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(reason = %e, "connection to the hub broken");
                    break;
                }
            };
        let Frame {
            header,
            attachments,
        } = frame;
        match header {
            HubMsg::Reply {
                corr,
                from,
                result,
                remaining,
            } => {
                let response = Response {
                    from,
                    result: match result {
                        Outcome::Ok(v) => Ok(v),
                        Outcome::Error(e) => Err(e),
                    },
                    attachments,
                };
                if corr == 0 {
                    if let Err(e) = &response.result {
                        tracing::warn!(reason = %e.reason, "the hub reports an error on this connection");
                    }
                    continue;
                }
                let mut waiters = shared.waiters.lock().unwrap_or_else(|p| p.into_inner());
                match waiters.remove(&corr) {
                    Some(Waiter::One(tx)) => {
                        let _ = tx.send(response);
                    }
                    Some(Waiter::Many(tx)) => {
                        let _ = tx.send((response, remaining));
                        if remaining > 0 {
                            waiters.insert(corr, Waiter::Many(tx));
                        }
                    }
                    Some(Waiter::Monitor(tx, events)) => {
                        if let Ok(v) = &response.result {
                            if let Ok(set) =
                                serde_json::from_value::<replies::MonitorSet>(v.clone())
                            {
                                shared
                                    .monitors
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(set.monitor, events);
                            }
                        }
                        let _ = tx.send(response);
                    }
                    None => tracing::debug!(corr, "reply after the caller gave up"),
                }
            }
            HubMsg::Event { monitor, event } => {
                let monitors = shared.monitors.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(tx) = monitors.get(&monitor) {
                    let _ = tx.send(event);
                }
            }
            HubMsg::Invoke {
                invocation,
                caller,
                object,
                operation,
                inputs,
                expiry_ms,
                reply,
            } => {
                let handler = shared
                    .handler
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let responder = Responder {
                    tx: shared.tx.clone(),
                    invocation,
                    wanted: reply,
                };
                match handler {
                    Some(h) => h(
                        Invocation {
                            caller,
                            object,
                            operation,
                            inputs,
                            attachments,
                            expiry: Duration::from_millis(expiry_ms),
                            wants_reply: reply,
                        },
                        responder,
                    ),
                    None => responder.reply(Err(format!(
                        "component serves no operations (no on_call handler); {operation:?} refused"
                    ))),
                }
            }
            HubMsg::Welcome { .. } => {}
        }
    }
    // The hub is gone: wake every waiter with an error, end every monitor.
    let waiters: Vec<Waiter> = shared
        .waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .map(|(_, w)| w)
        .collect();
    for w in waiters {
        let r = Response {
            from: None,
            result: Err(gone()),
            attachments: Vec::new(),
        };
        match w {
            Waiter::One(tx) | Waiter::Monitor(tx, _) => {
                let _ = tx.send(r);
            }
            Waiter::Many(tx) => {
                let _ = tx.send((r, 0));
            }
        }
    }
    shared
        .monitors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
}
