//! The local channel against a real hub on a unix socket in a temporary directory: real
//! components (the client library) and raw frames for what the library never sends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tessera_hub::client::{Client, Request};
use tessera_hub::codec::{self, Frame};
use tessera_hub::protocol::{ClientMsg, HubMsg, Outcome};
use tessera_hub::{local, Code, Event, Hub, HubConfig, Selector, Target, Watch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const WAIT: Duration = Duration::from_secs(20);

struct Node {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    hub: Arc<Hub>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self._tasks {
            t.abort();
        }
    }
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hub.sock");
    let hub = Hub::new(HubConfig::new("n1.example")).unwrap();
    let listener = local::bind(&socket).unwrap();
    let tasks = vec![
        hub.spawn_expiry(),
        tokio::spawn(local::serve(hub.clone(), listener)),
    ];
    Node {
        _dir: dir,
        socket,
        hub,
        _tasks: tasks,
    }
}

/// A component that answers `echo` with its inputs and its name, and `fail` with an error.
async fn echo(node: &Node, name: &str) -> Client {
    let c = Client::connect(&node.socket, name, "web").await.unwrap();
    let me = name.to_string();
    c.on_call(move |inv, r| match inv.operation.as_str() {
        "echo" => r.reply_with(
            Ok(json!({"inputs": inv.inputs, "by": me, "object": inv.object})),
            inv.attachments,
        ),
        "fail" => r.reply(Err("no such thing".into())),
        _ => drop(r), // never answers
    });
    c
}

#[tokio::test]
async fn register_replies_with_the_member_count_and_select_finds_members() {
    let n = node().await;
    let a = echo(&n, "a").await;
    let b = echo(&n, "b").await;
    assert_eq!(a.register(&["web"]).await.unwrap()["web"], 1);
    let counts = b.register(&["web", "api"]).await.unwrap();
    assert_eq!(counts["web"], 2);
    assert_eq!(counts["api"], 1);
    let all = a.select("web", Selector::All).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .all(|m| m.hub == "n1.example" && m.component_type == "web"));
    assert_eq!(a.select("web", Selector::Any).await.unwrap().len(), 1);
    assert_eq!(b.unregister(&["web"]).await.unwrap()["web"], 1);
    assert_eq!(
        n.hub.group_counts(),
        BTreeMap::from([("api".into(), 1), ("web".into(), 1)])
    );
}

#[tokio::test]
async fn a_call_reaches_a_member_and_returns_its_outputs_and_attachments() {
    let n = node().await;
    let a = echo(&n, "a").await;
    a.register(&["web"]).await.unwrap();
    let caller = Client::connect_anonymous(&n.socket).await.unwrap();
    let r = caller
        .request(
            Request::new(Target::Group("web".into()), "echo")
                .object("cache")
                .inputs(json!({"x": 1}))
                .attachments(vec![vec![0, 1, 2, 255]]),
        )
        .await;
    assert_eq!(r.from, a.id());
    assert_eq!(
        r.result.unwrap(),
        json!({"inputs": {"x": 1}, "by": "a", "object": "cache"})
    );
    assert_eq!(r.attachments, vec![vec![0, 1, 2, 255]]);
    // By component id too.
    let v = caller
        .call(Target::Component(a.id().unwrap()), "echo", json!(2))
        .await
        .unwrap();
    assert_eq!(v["inputs"], 2);
    // A component's own error comes back as code `component`.
    let e = caller
        .call(Target::Group("web".into()), "fail", Value::Null)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Component);
    assert_eq!(e.reason, "no such thing");
}

#[tokio::test]
async fn a_call_to_nobody_fails_at_once_with_no_target() {
    let n = node().await;
    let caller = Client::connect_anonymous(&n.socket).await.unwrap();
    let e = caller
        .call(Target::Group("empty".into()), "echo", Value::Null)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::NoTarget);
    assert!(e.reason.contains("no members"), "{}", e.reason);
}

#[tokio::test]
async fn call_all_gets_one_reply_per_member_and_cast_reaches_all() {
    let n = node().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        let c = echo(&n, name).await;
        let tx = tx.clone();
        let me = name.to_string();
        c.on_call(move |inv, r| {
            if inv.operation == "ping" {
                let _ = tx.send(me.clone());
                assert!(!inv.wants_reply);
            } else {
                r.reply(Ok(json!(me)));
            }
        });
        c.register(&["web"]).await.unwrap();
        members.push(c);
    }
    let caller = Client::connect_anonymous(&n.socket).await.unwrap();
    let replies = caller
        .call_all(Request::new(Target::Group("web".into()), "who"))
        .await
        .unwrap();
    let mut who: Vec<String> = replies
        .iter()
        .map(|r| r.result.clone().unwrap().as_str().unwrap().to_string())
        .collect();
    who.sort();
    assert_eq!(who, vec!["a", "b", "c"]);
    caller
        .cast(Request::new(Target::Group("web".into()), "ping").selector(Selector::All))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got.sort();
    assert_eq!(got, vec!["a", "b", "c"]);
}

#[tokio::test]
async fn an_unanswered_call_expires_with_an_error_and_the_late_reply_is_dropped() {
    let n = node().await;
    let slow = Client::connect(&n.socket, "slow", "web").await.unwrap();
    let (keep_tx, mut keep_rx) = tokio::sync::mpsc::unbounded_channel();
    slow.on_call(move |_, r| {
        let _ = keep_tx.send(r);
    });
    slow.register(&["slow"]).await.unwrap();
    let caller = Client::connect_anonymous(&n.socket).await.unwrap();
    let r = caller
        .request(Request::new(Target::Group("slow".into()), "x").expiry(Duration::from_millis(200)))
        .await;
    let e = r.result.unwrap_err();
    assert_eq!(e.code, Code::Expired, "{e:?}");
    assert!(e.reason.contains("expired"), "{}", e.reason);
    // The component answers after all: the hub drops it.
    let responder = tokio::time::timeout(WAIT, keep_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(n.hub.in_flight().0 == 0, "nothing pending after expiry");
    responder.reply(Ok(json!("too late")));
    let mut dropped = false;
    for _ in 0..500 {
        if n.hub
            .stats
            .late_replies
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
        {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dropped, "the hub counted the late reply as dropped");
    // The next call still works and gets its own reply, not the late one.
    let quick = echo(&n, "quick").await;
    quick.register(&["quick"]).await.unwrap();
    let v = caller
        .call(Target::Group("quick".into()), "echo", json!(7))
        .await
        .unwrap();
    assert_eq!(v["inputs"], 7);
}

async fn raw_frame(s: &mut UnixStream, msg: &ClientMsg) {
    let bytes = codec::to_bytes(&Frame::new(msg.clone())).unwrap();
    s.write_all(&bytes).await.unwrap();
}

async fn raw_read(s: &mut UnixStream) -> Option<HubMsg> {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, codec::read_frame::<_, HubMsg>(s, 1 << 20, &mut buf))
        .await
        .unwrap()
        .unwrap()
        .map(|f| f.header)
}

#[tokio::test]
async fn a_correlation_id_cannot_be_reused_while_its_request_is_pending() {
    let n = node().await;
    let silent = Client::connect(&n.socket, "silent", "web").await.unwrap();
    silent.on_call(|_, r| drop(r));
    silent.register(&["silent"]).await.unwrap();
    let mut s = UnixStream::connect(&n.socket).await.unwrap();
    let call = ClientMsg::Call {
        corr: 99,
        target: Target::Group("silent".into()),
        object: String::new(),
        operation: "x".into(),
        inputs: Value::Null,
        selector: Selector::Any,
        expiry_ms: Some(2_000),
    };
    raw_frame(&mut s, &call).await;
    raw_frame(&mut s, &call).await;
    match raw_read(&mut s).await {
        Some(HubMsg::Reply {
            corr: 99,
            result: Outcome::Error(e),
            ..
        }) => assert_eq!(e.code, Code::CorrelationInUse),
        other => panic!("expected correlation_in_use, got {other:?}"),
    }
    // After the first one expires, the id is free again.
    match raw_read(&mut s).await {
        Some(HubMsg::Reply {
            corr: 99,
            result: Outcome::Error(e),
            ..
        }) => assert_eq!(e.code, Code::Expired),
        other => panic!("expected expired, got {other:?}"),
    }
    raw_frame(&mut s, &call).await;
    match raw_read(&mut s).await {
        Some(HubMsg::Reply {
            corr: 99,
            result: Outcome::Error(e),
            ..
        }) => assert_eq!(e.code, Code::Expired, "reused id accepted, then expired"),
        other => panic!("expected expired, got {other:?}"),
    }
}

async fn expect_closed_with_error(mut s: UnixStream, what: &str) {
    match raw_read(&mut s).await {
        Some(HubMsg::Reply {
            corr: 0,
            result: Outcome::Error(e),
            ..
        }) => assert_eq!(e.code, Code::BadRequest, "{what}"),
        other => panic!("{what}: expected an error reply, got {other:?}"),
    }
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "{what}: the connection is closed after the error");
}

#[tokio::test]
async fn bad_frames_close_that_connection_only() {
    let n = node().await;
    let a = echo(&n, "a").await;
    a.register(&["web"]).await.unwrap();
    let bystander = Client::connect_anonymous(&n.socket).await.unwrap();

    // Malformed: a header that is not a message.
    let mut s = UnixStream::connect(&n.socket).await.unwrap();
    s.write_all(&[0, 0, 0, 7, 0, 0, 0, 3, b'a', b'b', b'c'])
        .await
        .unwrap();
    expect_closed_with_error(s, "malformed").await;

    // Oversized: a length beyond the limit.
    let mut s = UnixStream::connect(&n.socket).await.unwrap();
    s.write_all(&[0x7f, 0xff, 0xff, 0xff]).await.unwrap();
    expect_closed_with_error(s, "oversized").await;

    // Truncated: the peer half-closes inside a frame.
    let mut s = UnixStream::connect(&n.socket).await.unwrap();
    s.write_all(&[0, 0, 0, 100, 0, 0]).await.unwrap();
    s.shutdown().await.unwrap();
    expect_closed_with_error(s, "truncated").await;

    // The others never noticed.
    let v = bystander
        .call(Target::Group("web".into()), "echo", json!("still here"))
        .await
        .unwrap();
    assert_eq!(v["inputs"], "still here");
    assert_eq!(a.select("web", Selector::All).await.unwrap().len(), 1);
}

#[tokio::test]
async fn attributes_are_updated_selected_and_monitored() {
    let n = node().await;
    let a = echo(&n, "a").await;
    a.register(&["web"]).await.unwrap();
    let watcher = Client::connect_anonymous(&n.socket).await.unwrap();
    let me = Target::Component(a.id().unwrap());
    let mut m = watcher
        .monitor(Watch::Attributes {
            target: me.clone(),
            names: vec![],
        })
        .await
        .unwrap();
    a.update_attributes(None, BTreeMap::from([("load".into(), Some(json!(0.5)))]))
        .await
        .unwrap();
    assert_eq!(
        m.next(WAIT).await,
        Some(Event::Attribute {
            name: "load".into(),
            value: Some(json!(0.5))
        })
    );
    assert_eq!(
        watcher.select_attributes(me.clone(), &[]).await.unwrap()["load"],
        json!(0.5)
    );
    a.update_attributes(None, BTreeMap::from([("load".into(), None)]))
        .await
        .unwrap();
    assert_eq!(
        m.next(WAIT).await,
        Some(Event::Attribute {
            name: "load".into(),
            value: None
        })
    );
    // Group attributes need membership.
    a.update_attributes(
        Some("web"),
        BTreeMap::from([("leader".into(), Some(json!("a")))]),
    )
    .await
    .unwrap();
    assert_eq!(
        watcher
            .select_attributes(Target::Group("web".into()), &["leader"])
            .await
            .unwrap()["leader"],
        json!("a")
    );
    let e = a
        .update_attributes(Some("db"), BTreeMap::from([("x".into(), Some(json!(1)))]))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Forbidden);
}

#[tokio::test]
async fn group_and_component_monitors_fire_when_a_component_leaves() {
    let n = node().await;
    let watcher = Client::connect_anonymous(&n.socket).await.unwrap();
    let mut group = watcher.monitor(Watch::Group("web".into())).await.unwrap();
    let a = echo(&n, "a").await;
    let id = a.id().unwrap();
    let mut comp = watcher.monitor(Watch::Component(id)).await.unwrap();
    a.register(&["web"]).await.unwrap();
    assert_eq!(
        group.next(WAIT).await,
        Some(Event::Joined {
            group: "web".into(),
            member: id
        })
    );
    a.close().await;
    let mut seen = vec![group.next(WAIT).await, comp.next(WAIT).await];
    seen.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        seen,
        vec![
            Some(Event::Left {
                group: "web".into(),
                member: id
            }),
            Some(Event::Terminated {
                component: id,
                reason: "disconnected".into()
            }),
        ]
    );
    assert!(n.hub.select("web", Selector::All).unwrap().is_empty());
    // A monitor on a component that is gone fires at once.
    let mut late = watcher.monitor(Watch::Component(id)).await.unwrap();
    assert!(
        matches!(late.next(WAIT).await, Some(Event::Terminated { reason, .. }) if reason == "unknown")
    );
}

#[tokio::test]
async fn a_call_pending_on_a_component_that_disconnects_fails_at_once() {
    let n = node().await;
    let silent = Client::connect(&n.socket, "silent", "web").await.unwrap();
    silent.on_call(|_, r| std::mem::forget(r));
    silent.register(&["silent"]).await.unwrap();
    let caller = Arc::new(Client::connect_anonymous(&n.socket).await.unwrap());
    let c2 = caller.clone();
    let call = tokio::spawn(async move {
        c2.request(
            Request::new(Target::Group("silent".into()), "x").expiry(Duration::from_secs(60)),
        )
        .await
    });
    // Wait until the hub has delivered it.
    for _ in 0..200 {
        if n.hub.in_flight().1 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    silent.close().await;
    let r = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(r.result.unwrap_err().code, Code::Unreachable);
}
