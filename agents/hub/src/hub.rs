//! The hub's core: sessions (components on the local channel, API requests), the directory,
//! routing of call and cast, correlation and expiry, attributes and monitors. Synchronous and
//! lock-protected; the channel, peer and cluster modules feed it and carry out what it asks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::codec::Frame;
use crate::defaults;
use crate::directory::{self, AttrTarget, ComponentInfo, Directory, HubView, Location, Stamped};
use crate::error::{Code, HubError};
use crate::id::{IdError, Layout, TargetId};
use crate::keys::{self, Publish};
use crate::monitor::{self, Snapshot};
use crate::pending::{Delivery, Pending, SessionId};
use crate::protocol::{
    replies, ClientMsg, Event, HubMsg, Member, Outcome, PeerMsg, Selector, Target, Watch,
};
use crate::ring::Ring;

/// How a hub is set up.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The hub's name in the cluster: its node's FQDN (from its certificate).
    pub id: String,
    pub vnodes: u32,
    pub replicas: usize,
    pub type_bits: u8,
}

impl HubConfig {
    pub fn new(id: impl Into<String>) -> Self {
        HubConfig {
            id: id.into(),
            vnodes: defaults::VIRTUAL_NODES,
            replicas: defaults::REPLICAS,
            type_bits: defaults::TYPE_BITS,
        }
    }
}

/// Where the hub sends frames for other hubs (the peer links).
pub type PeerSink = Arc<dyn Fn(&str, SocketAddr, Frame<PeerMsg>) + Send + Sync>;

struct Session {
    tx: mpsc::Sender<Frame<HubMsg>>,
    component: Option<TargetId>,
    label: String,
}

enum Route {
    /// A request held here.
    Origin(u64),
    /// A request held by another hub.
    Remote { hub: String, id: u64 },
}

struct Invocation {
    component: TargetId,
    session: SessionId,
    route: Route,
    deadline: Instant,
}

struct MonitorState {
    session: SessionId,
    watch: Watch,
    last: Snapshot,
}

enum Dest {
    Local(SessionId),
    Remote(String, SocketAddr),
}

#[derive(Default)]
struct Effects {
    publish: Vec<Publish>,
    peer: Vec<(String, SocketAddr, Frame<PeerMsg>)>,
}

struct Inner {
    next_session: SessionId,
    next_invocation: u64,
    next_monitor: u64,
    sessions: HashMap<SessionId, Session>,
    components: HashMap<TargetId, SessionId>,
    dir: Directory,
    ring: Ring,
    pending: Pending,
    invocations: HashMap<u64, Invocation>,
    invocation_deadlines: BTreeSet<(Instant, u64)>,
    monitors: BTreeMap<u64, MonitorState>,
}

/// Counters for logs and the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    pub late_replies: AtomicU64,
    pub dropped_frames: AtomicU64,
    pub expired: AtomicU64,
}

pub struct Hub {
    config: HubConfig,
    layout: Layout,
    inner: Mutex<Inner>,
    peers: OnceLock<PeerSink>,
    publisher: OnceLock<mpsc::UnboundedSender<Vec<Publish>>>,
    pub stats: Stats,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn reply(corr: u64, result: Outcome) -> Frame<HubMsg> {
    Frame::new(HubMsg::Reply {
        corr,
        from: None,
        result,
        remaining: 0,
    })
}

fn ok<T: serde::Serialize>(value: T) -> Outcome {
    Outcome::Ok(serde_json::to_value(value).unwrap_or(Value::Null))
}

impl Hub {
    pub fn new(config: HubConfig) -> Result<Arc<Hub>, IdError> {
        let layout = Layout::new(config.vnodes, config.type_bits)?;
        let ring = Ring::new(config.vnodes, config.replicas, [config.id.clone()])?;
        Ok(Arc::new(Hub {
            layout,
            inner: Mutex::new(Inner {
                next_session: 0,
                next_invocation: 0,
                next_monitor: 0,
                sessions: HashMap::new(),
                components: HashMap::new(),
                dir: Directory::default(),
                ring,
                pending: Pending::default(),
                invocations: HashMap::new(),
                invocation_deadlines: BTreeSet::new(),
                monitors: BTreeMap::new(),
            }),
            config,
            peers: OnceLock::new(),
            publisher: OnceLock::new(),
            stats: Stats::default(),
        }))
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects the hub to the peer links (the cluster does this once).
    pub fn attach_peers(&self, sink: PeerSink) {
        let _ = self.peers.set(sink);
    }

    /// Connects the hub to the gossip publisher (the cluster does this once).
    pub fn attach_publisher(&self, tx: mpsc::UnboundedSender<Vec<Publish>>) {
        let _ = self.publisher.set(tx);
    }

    /// Everything this hub publishes now, as gossip key-values (for a fresh chitchat).
    pub fn published_state(&self) -> Vec<(String, String)> {
        let inner = self.lock();
        let v = &inner.dir.local;
        let mut out = Vec::new();
        for (id, info) in &v.components {
            out.push((
                keys::component_key(id),
                serde_json::to_string(info).unwrap_or_default(),
            ));
        }
        for (g, members) in &v.groups {
            for m in members {
                out.push((keys::group_key(g, m), String::new()));
            }
        }
        for (t, attrs) in &v.attributes {
            for (name, s) in attrs {
                out.push((
                    keys::attr_key(t, name),
                    serde_json::to_string(s).unwrap_or_default(),
                ));
            }
        }
        out
    }

    fn apply(&self, effects: Effects) {
        if !effects.publish.is_empty() {
            if let Some(p) = self.publisher.get() {
                let _ = p.send(effects.publish);
            }
        }
        if let Some(sink) = self.peers.get() {
            for (hub, addr, frame) in effects.peer {
                sink(&hub, addr, frame);
            }
        }
    }

    fn send(&self, inner: &Inner, session: SessionId, frame: Frame<HubMsg>) -> bool {
        let Some(s) = inner.sessions.get(&session) else {
            return false;
        };
        match s.tx.try_send(frame) {
            Ok(()) => true,
            Err(_) => {
                self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session, "queue full or closed: frame dropped");
                false
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Sessions

    /// A new session whose frames go to `tx`; `label` names it as a caller until it says
    /// hello (`api:<subsystem>@<node>` for API clients).
    pub fn open_session(&self, tx: mpsc::Sender<Frame<HubMsg>>, label: String) -> SessionId {
        let mut inner = self.lock();
        inner.next_session += 1;
        let id = inner.next_session;
        inner.sessions.insert(
            id,
            Session {
                tx,
                component: None,
                label,
            },
        );
        id
    }

    /// Makes the session a component; its id is placed in a virtual node of its type that
    /// this hub is primary for, when there is one (thesis 4.7.4: the components of a node
    /// share its virtual nodes).
    pub fn hello(
        &self,
        session: SessionId,
        name: &str,
        component_type: &str,
    ) -> Result<TargetId, HubError> {
        directory::validate_name("component name", name)?;
        directory::validate_name("component type", component_type)?;
        let mut inner = self.lock();
        if inner
            .sessions
            .get(&session)
            .is_some_and(|s| s.component.is_some())
        {
            return Err(HubError::bad(
                "this connection already said hello; open another connection for another component",
            ));
        }
        let owned: Vec<u32> = {
            let mine: BTreeSet<u32> = inner.ring.owned_by(&self.config.id).into_iter().collect();
            self.layout
                .type_vnodes(component_type)
                .into_iter()
                .filter(|v| mine.contains(v))
                .collect()
        };
        let probe = TargetId::new_component(&self.layout, component_type, None)
            .map_err(|e| HubError::new(Code::Unreachable, e.to_string()))?;
        let id = if owned.is_empty() {
            probe
        } else {
            let pick = owned[probe.unique()[0] as usize % owned.len()];
            TargetId::new_component(&self.layout, component_type, Some(pick))
                .map_err(|e| HubError::new(Code::Unreachable, e.to_string()))?
        };
        let info = ComponentInfo {
            name: name.to_string(),
            component_type: component_type.to_string(),
        };
        if let Some(s) = inner.sessions.get_mut(&session) {
            s.component = Some(id);
            // Components are named by their id as callers.
            s.label = id.to_string();
        }
        inner.components.insert(id, session);
        inner.dir.local.components.insert(id, info.clone());
        let mut fx = Effects::default();
        fx.publish.push(Publish::Set(
            keys::component_key(&id),
            serde_json::to_string(&info).unwrap_or_default(),
        ));
        self.fire_monitors(&mut inner);
        drop(inner);
        self.apply(fx);
        tracing::info!(component = %id, name, component_type, "component connected");
        Ok(id)
    }

    /// The session ended: its component leaves its groups, its attributes go, requests it
    /// was serving fail, and monitors fire.
    pub fn close_session(&self, session: SessionId) {
        let mut fx = Effects::default();
        let mut inner = self.lock();
        let Some(s) = inner.sessions.remove(&session) else {
            return;
        };
        inner.pending.drop_session(session);
        inner.monitors.retain(|_, m| m.session != session);
        if let Some(c) = s.component {
            inner.components.remove(&c);
            inner.dir.local.components.remove(&c);
            fx.publish.push(Publish::Delete(keys::component_key(&c)));
            for (g, members) in inner.dir.local.groups.iter_mut() {
                if members.remove(&c) {
                    fx.publish.push(Publish::Delete(keys::group_key(g, &c)));
                }
            }
            inner.dir.local.groups.retain(|_, m| !m.is_empty());
            if let Some(attrs) = inner.dir.local.attributes.remove(&AttrTarget::Component(c)) {
                for name in attrs.keys() {
                    fx.publish.push(Publish::Delete(keys::attr_key(
                        &AttrTarget::Component(c),
                        name,
                    )));
                }
            }
            let serving: Vec<u64> = inner
                .invocations
                .iter()
                .filter(|(_, i)| i.session == session)
                .map(|(id, _)| *id)
                .collect();
            for inv in serving {
                if let Some(i) = inner.invocations.remove(&inv) {
                    inner.invocation_deadlines.remove(&(i.deadline, inv));
                    let err = Outcome::Error(HubError::new(
                        Code::Unreachable,
                        format!(
                            "component {c} disconnected before replying; retry with another member"
                        ),
                    ));
                    self.route_response(&mut inner, i.route, c, err, Vec::new(), &mut fx);
                }
            }
            tracing::info!(component = %c, "component disconnected");
        }
        self.fire_monitors(&mut inner);
        drop(inner);
        self.apply(fx);
    }

    // -----------------------------------------------------------------------------------
    // Requests from sessions

    /// Handles one frame from a session.
    pub fn handle_client(&self, session: SessionId, frame: Frame<ClientMsg>) {
        let Frame {
            header,
            attachments,
        } = frame;
        let mut fx = Effects::default();
        let mut inner = self.lock();
        match header {
            ClientMsg::Hello { .. } => {
                // Handled by the channel (it needs the welcome first); a second hello is an
                // error reply.
                self.send(
                    &inner,
                    session,
                    reply(
                        0,
                        Outcome::Error(HubError::bad("hello must be the first message")),
                    ),
                );
            }
            ClientMsg::Register { corr, groups } => {
                let r = self.register(&mut inner, session, &groups, true, &mut fx);
                self.send(&inner, session, reply(corr, r));
            }
            ClientMsg::Unregister { corr, groups } => {
                let r = self.register(&mut inner, session, &groups, false, &mut fx);
                self.send(&inner, session, reply(corr, r));
            }
            ClientMsg::Select {
                corr,
                group,
                selector,
            } => {
                let r = match directory::validate_name("group", &group) {
                    Ok(()) => {
                        let picked = inner.dir.select(&group, selector);
                        ok(replies::Members {
                            members: inner.dir.describe(&picked, &self.config.id),
                        })
                    }
                    Err(e) => Outcome::Error(e),
                };
                self.send(&inner, session, reply(corr, r));
            }
            ClientMsg::Call {
                corr,
                target,
                object,
                operation,
                inputs,
                selector,
                expiry_ms,
            } => {
                let req = Outgoing {
                    target,
                    object,
                    operation,
                    inputs,
                    selector,
                    expiry: expiry_of(expiry_ms),
                    attachments,
                };
                self.route_call(&mut inner, session, Some(corr), req, &mut fx);
            }
            ClientMsg::Cast {
                target,
                object,
                operation,
                inputs,
                selector,
            } => {
                let req = Outgoing {
                    target,
                    object,
                    operation,
                    inputs,
                    selector,
                    expiry: defaults::DEFAULT_EXPIRY,
                    attachments,
                };
                self.route_call(&mut inner, session, None, req, &mut fx);
            }
            ClientMsg::Reply { invocation, result } => {
                let mine = inner
                    .invocations
                    .get(&invocation)
                    .is_some_and(|i| i.session == session);
                if let Some(i) = mine
                    .then(|| inner.invocations.remove(&invocation))
                    .flatten()
                {
                    inner.invocation_deadlines.remove(&(i.deadline, invocation));
                    self.route_response(
                        &mut inner,
                        i.route,
                        i.component,
                        result,
                        attachments,
                        &mut fx,
                    );
                } else {
                    self.stats.late_replies.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(invocation, "late or unknown reply dropped");
                }
            }
            ClientMsg::UpdateAttributes {
                corr,
                group,
                values,
            } => {
                let r = self.update_attributes(&mut inner, session, group, values, &mut fx);
                self.send(&inner, session, reply(corr, r));
            }
            ClientMsg::SelectAttributes {
                corr,
                target,
                names,
            } => {
                let r = match validate_target(&target) {
                    Ok(()) => ok(replies::Attributes {
                        attributes: inner.dir.attributes(&AttrTarget::from(&target), &names),
                    }),
                    Err(e) => Outcome::Error(e),
                };
                self.send(&inner, session, reply(corr, r));
            }
            ClientMsg::Monitor { corr, watch } => {
                self.monitor(&mut inner, session, corr, watch);
            }
            ClientMsg::Unmonitor { corr, monitor } => {
                let r = match inner.monitors.get(&monitor) {
                    Some(m) if m.session == session => {
                        inner.monitors.remove(&monitor);
                        Outcome::Ok(Value::Null)
                    }
                    _ => Outcome::Error(HubError::bad(format!(
                        "monitor {monitor} is not one of this connection's"
                    ))),
                };
                self.send(&inner, session, reply(corr, r));
            }
        }
        drop(inner);
        self.apply(fx);
    }

    fn register(
        &self,
        inner: &mut Inner,
        session: SessionId,
        groups: &[String],
        join: bool,
        fx: &mut Effects,
    ) -> Outcome {
        let Some(c) = inner.sessions.get(&session).and_then(|s| s.component) else {
            return Outcome::Error(HubError::new(
                Code::NotComponent,
                "only components join groups: say hello first",
            ));
        };
        for g in groups {
            if let Err(e) = directory::validate_name("group", g) {
                return Outcome::Error(e);
            }
        }
        for g in groups {
            if join {
                if inner
                    .dir
                    .local
                    .groups
                    .entry(g.clone())
                    .or_default()
                    .insert(c)
                {
                    fx.publish
                        .push(Publish::Set(keys::group_key(g, &c), String::new()));
                }
            } else if let Some(m) = inner.dir.local.groups.get_mut(g) {
                if m.remove(&c) {
                    fx.publish.push(Publish::Delete(keys::group_key(g, &c)));
                }
            }
        }
        inner.dir.local.groups.retain(|_, m| !m.is_empty());
        let counts = groups
            .iter()
            .map(|g| (g.clone(), inner.dir.members(g).len()))
            .collect();
        tracing::info!(component = %c, groups = ?groups, join, "group membership changed");
        self.fire_monitors(inner);
        ok(replies::Counts { counts })
    }

    fn update_attributes(
        &self,
        inner: &mut Inner,
        session: SessionId,
        group: Option<String>,
        values: BTreeMap<String, Option<Value>>,
        fx: &mut Effects,
    ) -> Outcome {
        let Some(c) = inner.sessions.get(&session).and_then(|s| s.component) else {
            return Outcome::Error(HubError::new(
                Code::NotComponent,
                "only components have attributes: say hello first",
            ));
        };
        let target = match group {
            None => AttrTarget::Component(c),
            Some(g) => {
                if !inner
                    .dir
                    .local
                    .groups
                    .get(&g)
                    .is_some_and(|m| m.contains(&c))
                {
                    return Outcome::Error(HubError::new(
                        Code::Forbidden,
                        format!("component {c} is not a member of group {g:?}; register first"),
                    ));
                }
                AttrTarget::Group(g)
            }
        };
        for name in values.keys() {
            if let Err(e) = directory::validate_name("attribute", name) {
                return Outcome::Error(e);
            }
        }
        let t = now_ms();
        let n = values.len();
        for (name, value) in values {
            let key = keys::attr_key(&target, &name);
            match value {
                Some(value) => {
                    let s = Stamped { value, time_ms: t };
                    fx.publish.push(Publish::Set(
                        key,
                        serde_json::to_string(&s).unwrap_or_default(),
                    ));
                    inner
                        .dir
                        .local
                        .attributes
                        .entry(target.clone())
                        .or_default()
                        .insert(name, s);
                }
                None => {
                    if let Some(a) = inner.dir.local.attributes.get_mut(&target) {
                        if a.remove(&name).is_some() {
                            fx.publish.push(Publish::Delete(key));
                        }
                    }
                }
            }
        }
        inner.dir.local.attributes.retain(|_, a| !a.is_empty());
        self.fire_monitors(inner);
        Outcome::Ok(json!({ "updated": n }))
    }

    fn monitor(&self, inner: &mut Inner, session: SessionId, corr: u64, watch: Watch) {
        let valid = match &watch {
            Watch::Group(g) => directory::validate_name("group", g),
            Watch::Component(_) => Ok(()),
            Watch::Attributes { target, names } => validate_target(target).and_then(|_| {
                names
                    .iter()
                    .try_for_each(|n| directory::validate_name("attribute", n))
            }),
        };
        if let Err(e) = valid {
            self.send(inner, session, reply(corr, Outcome::Error(e)));
            return;
        }
        inner.next_monitor += 1;
        let id = inner.next_monitor;
        let last = monitor::snapshot(&watch, &inner.dir, &self.config.id);
        self.send(
            inner,
            session,
            reply(corr, ok(replies::MonitorSet { monitor: id })),
        );
        if let (Watch::Component(c), Snapshot::Present(None)) = (&watch, &last) {
            // Like an Erlang monitor on a process that is gone: fire at once.
            let ev = Event::Terminated {
                component: *c,
                reason: "unknown".into(),
            };
            self.send(
                inner,
                session,
                Frame::new(HubMsg::Event {
                    monitor: id,
                    event: ev,
                }),
            );
            return;
        }
        inner.monitors.insert(
            id,
            MonitorState {
                session,
                watch,
                last,
            },
        );
    }

    fn fire_monitors(&self, inner: &mut Inner) {
        if inner.monitors.is_empty() {
            return;
        }
        let mut sends = Vec::new();
        let mut done = Vec::new();
        for (id, m) in inner.monitors.iter_mut() {
            let now = monitor::snapshot(&m.watch, &inner.dir, &self.config.id);
            if now == m.last {
                continue;
            }
            let remote = &inner.dir.remote;
            let events = monitor::diff(&m.watch, &m.last, &now, &self.config.id, |h| {
                remote.contains_key(h)
            });
            if matches!(m.watch, Watch::Component(_)) && now == Snapshot::Present(None) {
                done.push(*id);
            }
            m.last = now;
            for event in events {
                sends.push((
                    m.session,
                    HubMsg::Event {
                        monitor: *id,
                        event,
                    },
                ));
            }
        }
        for id in done {
            inner.monitors.remove(&id);
        }
        for (session, msg) in sends {
            self.send(inner, session, Frame::new(msg));
        }
    }

    // -----------------------------------------------------------------------------------
    // Routing

    fn caller_label(&self, inner: &Inner, session: SessionId) -> String {
        inner
            .sessions
            .get(&session)
            .map(|s| s.label.clone())
            .unwrap_or_default()
    }

    fn resolve(
        &self,
        inner: &mut Inner,
        req: &Outgoing,
    ) -> Result<Vec<(TargetId, Dest)>, HubError> {
        let remote_dest = |inner: &Inner, hub: &str| -> Result<Dest, HubError> {
            inner
                .dir
                .remote
                .get(hub)
                .and_then(|v| v.peer_addr)
                .map(|a| Dest::Remote(hub.to_string(), a))
                .ok_or_else(|| {
                    HubError::new(
                        Code::Unreachable,
                        format!("hub {hub} has published no peer address yet; retry in a moment"),
                    )
                })
        };
        match &req.target {
            Target::Component(c) => match inner.dir.locate(c) {
                Some(Location::Here) => match inner.components.get(c) {
                    Some(s) => Ok(vec![(*c, Dest::Local(*s))]),
                    None => Err(no_component(c)),
                },
                Some(Location::Hub(h)) => Ok(vec![(*c, remote_dest(inner, &h)?)]),
                None => {
                    // Not seen over gossip yet: its primary hub (its id names its virtual
                    // node) most likely has it.
                    match inner.ring.for_target(c).first().map(|s| s.to_string()) {
                        Some(p) if p != self.config.id => Ok(vec![(*c, remote_dest(inner, &p)?)]),
                        _ => Err(no_component(c)),
                    }
                }
            },
            Target::Group(g) => {
                directory::validate_name("group", g)?;
                let picked = inner.dir.select(g, req.selector);
                if picked.is_empty() {
                    return Err(HubError::new(
                        Code::NoTarget,
                        format!("group {g:?} has no members; check `tessera hub groups`"),
                    ));
                }
                picked
                    .into_iter()
                    .map(|(id, loc)| match loc {
                        Location::Here => inner
                            .components
                            .get(&id)
                            .map(|s| (id, Dest::Local(*s)))
                            .ok_or_else(|| no_component(&id)),
                        Location::Hub(h) => Ok((id, remote_dest(inner, &h)?)),
                    })
                    .collect()
            }
        }
    }

    /// A call (`corr` given) or cast from a session.
    fn route_call(
        &self,
        inner: &mut Inner,
        session: SessionId,
        corr: Option<u64>,
        req: Outgoing,
        fx: &mut Effects,
    ) {
        if let Some(corr) = corr {
            if inner.pending.in_use(session, corr) {
                let e = HubError::new(
                    Code::CorrelationInUse,
                    format!("correlation id {corr} is used by a pending request of this connection; use a fresh one"),
                );
                self.send(inner, session, reply(corr, Outcome::Error(e)));
                return;
            }
        }
        let dests = match self.resolve(inner, &req) {
            Ok(d) => d,
            Err(e) => {
                if let Some(corr) = corr {
                    self.send(inner, session, reply(corr, Outcome::Error(e)));
                }
                return;
            }
        };
        let deadline = Instant::now() + req.expiry;
        let pid = match corr {
            Some(corr) => inner
                .pending
                .insert(session, corr, dests.len() as u32, deadline),
            None => Some(0),
        };
        let Some(pid) = pid else { return };
        let caller = self.caller_label(inner, session);
        let expiry_ms = req.expiry.as_millis() as u64;
        for (component, dest) in dests {
            match dest {
                Dest::Local(s) => {
                    self.invoke_local(
                        inner,
                        s,
                        component,
                        corr.map(|_| Route::Origin(pid)),
                        &caller,
                        &req,
                        deadline,
                        fx,
                    );
                }
                Dest::Remote(hub, addr) => {
                    fx.peer.push((
                        hub,
                        addr,
                        Frame::with(
                            PeerMsg::Forward {
                                id: pid,
                                origin: self.config.id.clone(),
                                component,
                                caller: caller.clone(),
                                object: req.object.clone(),
                                operation: req.operation.clone(),
                                inputs: req.inputs.clone(),
                                expiry_ms,
                                reply: corr.is_some(),
                                hops: 0,
                            },
                            req.attachments.clone(),
                        ),
                    ));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn invoke_local(
        &self,
        inner: &mut Inner,
        session: SessionId,
        component: TargetId,
        route: Option<Route>,
        caller: &str,
        req: &Outgoing,
        deadline: Instant,
        fx: &mut Effects,
    ) {
        let reply_wanted = route.is_some();
        inner.next_invocation += 1;
        let inv = inner.next_invocation;
        let frame = Frame::with(
            HubMsg::Invoke {
                invocation: inv,
                caller: caller.to_string(),
                object: req.object.clone(),
                operation: req.operation.clone(),
                inputs: req.inputs.clone(),
                expiry_ms: deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64,
                reply: reply_wanted,
            },
            req.attachments.clone(),
        );
        if !self.send(inner, session, frame) {
            if let Some(route) = route {
                let e = HubError::new(
                    Code::Unreachable,
                    format!("component {component} is not taking requests (queue full or closed); retry later"),
                );
                self.route_response(inner, route, component, Outcome::Error(e), Vec::new(), fx);
            }
            return;
        }
        if let Some(route) = route {
            inner.invocations.insert(
                inv,
                Invocation {
                    component,
                    session,
                    route,
                    deadline,
                },
            );
            inner.invocation_deadlines.insert((deadline, inv));
        }
    }

    fn route_response(
        &self,
        inner: &mut Inner,
        route: Route,
        from: TargetId,
        result: Outcome,
        attachments: Vec<Vec<u8>>,
        fx: &mut Effects,
    ) {
        match route {
            Route::Origin(pid) => self.deliver(inner, pid, from, result, attachments),
            Route::Remote { hub, id } => {
                match inner.dir.remote.get(&hub).and_then(|v| v.peer_addr) {
                    Some(addr) => fx.peer.push((
                        hub,
                        addr,
                        Frame::with(PeerMsg::Response { id, from, result }, attachments),
                    )),
                    None => tracing::debug!(hub, "response for a hub that left dropped"),
                }
            }
        }
    }

    fn deliver(
        &self,
        inner: &mut Inner,
        pid: u64,
        from: TargetId,
        result: Outcome,
        attachments: Vec<Vec<u8>>,
    ) {
        match inner.pending.reply(pid) {
            Delivery::Deliver {
                session,
                corr,
                remaining,
            } => {
                let frame = Frame::with(
                    HubMsg::Reply {
                        corr,
                        from: Some(from),
                        result,
                        remaining,
                    },
                    attachments,
                );
                self.send(inner, session, frame);
            }
            Delivery::Late => {
                self.stats.late_replies.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(request = pid, "late reply dropped");
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // From other hubs

    /// Handles one frame from the hub `from` (already authenticated by its certificate).
    pub fn handle_peer(&self, from: &str, frame: Frame<PeerMsg>) {
        let Frame {
            header,
            attachments,
        } = frame;
        let mut fx = Effects::default();
        let mut inner = self.lock();
        match header {
            PeerMsg::Hello { .. } => {}
            PeerMsg::Forward {
                id,
                origin,
                component,
                caller,
                object,
                operation,
                inputs,
                expiry_ms,
                reply,
                hops,
            } => {
                let expiry =
                    Duration::from_millis(expiry_ms.min(defaults::MAX_EXPIRY.as_millis() as u64));
                let deadline = Instant::now() + expiry;
                let req = Outgoing {
                    target: Target::Component(component),
                    object,
                    operation,
                    inputs,
                    selector: Selector::Any,
                    expiry,
                    attachments,
                };
                let route = || Route::Remote {
                    hub: origin.clone(),
                    id,
                };
                match (
                    inner.components.get(&component).copied(),
                    inner.dir.locate(&component),
                ) {
                    (Some(s), _) => {
                        self.invoke_local(
                            &mut inner,
                            s,
                            component,
                            reply.then(route),
                            &caller,
                            &req,
                            deadline,
                            &mut fx,
                        );
                    }
                    (None, Some(Location::Hub(h)))
                        if hops < defaults::MAX_HOPS && h != from && h != origin =>
                    {
                        if let Some(addr) = inner.dir.remote.get(&h).and_then(|v| v.peer_addr) {
                            fx.peer.push((
                                h,
                                addr,
                                Frame::with(
                                    PeerMsg::Forward {
                                        id,
                                        origin: origin.clone(),
                                        component,
                                        caller,
                                        object: req.object,
                                        operation: req.operation,
                                        inputs: req.inputs,
                                        expiry_ms,
                                        reply,
                                        hops: hops + 1,
                                    },
                                    req.attachments,
                                ),
                            ));
                        }
                    }
                    _ => {
                        if reply {
                            let e = HubError::new(
                                Code::NoTarget,
                                format!("component {component} is not connected to hub {}; it may have terminated", self.config.id),
                            );
                            self.route_response(
                                &mut inner,
                                route(),
                                component,
                                Outcome::Error(e),
                                Vec::new(),
                                &mut fx,
                            );
                        }
                    }
                }
            }
            PeerMsg::Response {
                id,
                from: c,
                result,
            } => {
                self.deliver(&mut inner, id, c, result, attachments);
            }
        }
        drop(inner);
        self.apply(fx);
    }

    /// Replaces what the hub knows of the other live hubs (from gossip); hubs absent from
    /// `views` are dead or partitioned away: their components leave, monitors fire.
    pub fn set_remote(&self, mut views: BTreeMap<String, HubView>) {
        views.remove(&self.config.id);
        let mut inner = self.lock();
        let members_changed = !views.keys().eq(inner.dir.remote.keys());
        if members_changed {
            let members = views
                .keys()
                .cloned()
                .chain(std::iter::once(self.config.id.clone()));
            match Ring::new(self.config.vnodes, self.config.replicas, members) {
                Ok(r) => inner.ring = r,
                Err(e) => tracing::error!(reason = %e, "ring not rebuilt"),
            }
            tracing::info!(hubs = ?inner.ring.members(), "cluster membership changed");
        }
        inner.dir.remote = views;
        self.fire_monitors(&mut inner);
    }

    /// Answers expired requests with an error and forgets expired invocations.
    pub fn expire(&self, now: Instant) {
        let mut inner = self.lock();
        for e in inner.pending.expire(now) {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            let missing = e.expected.saturating_sub(e.received);
            let err = HubError::new(
                Code::Expired,
                format!("{missing} of {} replies did not arrive before the request expired; the target may be slow or gone: retry, or give a longer expiry_ms", e.expected),
            );
            self.send(&inner, e.session, reply(e.corr, Outcome::Error(err)));
        }
        let due: Vec<(Instant, u64)> = inner
            .invocation_deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .copied()
            .collect();
        for key in due {
            inner.invocation_deadlines.remove(&key);
            inner.invocations.remove(&key.1);
        }
    }

    /// Runs [`Hub::expire`] every tick until the hub is dropped.
    pub fn spawn_expiry(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(defaults::EXPIRY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(hub) => hub.expire(Instant::now()),
                    None => return,
                }
            }
        })
    }

    // -----------------------------------------------------------------------------------
    // Queries (API, CLI, tests)

    pub fn select(&self, group: &str, selector: Selector) -> Result<Vec<Member>, HubError> {
        directory::validate_name("group", group)?;
        let mut inner = self.lock();
        let picked = inner.dir.select(group, selector);
        Ok(inner.dir.describe(&picked, &self.config.id))
    }

    pub fn group_counts(&self) -> BTreeMap<String, usize> {
        self.lock().dir.group_counts()
    }

    pub fn attributes(
        &self,
        target: &Target,
        names: &[String],
    ) -> Result<BTreeMap<String, Value>, HubError> {
        validate_target(target)?;
        Ok(self.lock().dir.attributes(&AttrTarget::from(target), names))
    }

    /// The live hubs (this one included), sorted.
    pub fn members(&self) -> Vec<String> {
        self.lock().ring.members().to_vec()
    }

    pub fn ring(&self) -> Ring {
        self.lock().ring.clone()
    }

    /// Pending requests and invocations (for tests and the benchmark).
    pub fn in_flight(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.pending.len(), inner.invocations.len())
    }
}

/// A call or cast on its way.
struct Outgoing {
    target: Target,
    object: String,
    operation: String,
    inputs: Value,
    selector: Selector,
    expiry: Duration,
    attachments: Vec<Vec<u8>>,
}

fn expiry_of(ms: Option<u64>) -> Duration {
    match ms {
        None | Some(0) => defaults::DEFAULT_EXPIRY,
        Some(ms) => Duration::from_millis(ms).min(defaults::MAX_EXPIRY),
    }
}

fn no_component(c: &TargetId) -> HubError {
    HubError::new(
        Code::NoTarget,
        format!("no live component {c}; it terminated or its hub is gone (`tessera hub select GROUP` lists members)"),
    )
}

fn validate_target(t: &Target) -> Result<(), HubError> {
    match t {
        Target::Group(g) => directory::validate_name("group", g),
        Target::Component(_) => Ok(()),
    }
}
