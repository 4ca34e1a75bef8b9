//! In-process clusters of 3–10 real hubs (mTLS links, chitchat gossip over its in-memory
//! transport with short intervals): discovery, routing across hubs, fan-out, attribute
//! monitors, node death, partition and heal. No timing assertions: only generous limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use tessera_hub::client::{Client, Request};
use tessera_hub::testbed::{hub_name, Testbed};
use tessera_hub::{Event, Selector, Target, Watch};

const GOSSIP: Duration = Duration::from_millis(50);
const LIMIT: Duration = Duration::from_secs(30);

async fn component(t: &Testbed, hub: usize, name: &str) -> Client {
    let c = Client::connect(&t.socket(hub), name, "web").await.unwrap();
    let me = name.to_string();
    c.on_call(move |inv, r| r.reply(Ok(json!({"by": me, "inputs": inv.inputs}))));
    c
}

async fn converged(t: &Testbed) {
    assert!(
        t.wait_for(LIMIT, |t| t.converged()).await.is_some(),
        "hubs did not agree on the membership"
    );
}

fn members_seen(t: &Testbed, hub: usize, group: &str) -> usize {
    t.node(hub)
        .hub
        .select(group, Selector::All)
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_registered_on_one_hub_is_selected_and_called_from_another() {
    let t = Testbed::start(3, GOSSIP).await.unwrap();
    converged(&t).await;
    let a = component(&t, 0, "a").await;
    a.register(&["web"]).await.unwrap();
    assert!(t
        .wait_for(LIMIT, |t| members_seen(t, 2, "web") == 1)
        .await
        .is_some());
    let caller = Client::connect_anonymous(&t.socket(2)).await.unwrap();
    let members = caller.select("web", Selector::All).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].hub, hub_name(0));
    assert_eq!(Some(members[0].component), a.id());
    let r = caller
        .request(
            Request::new(Target::Group("web".into()), "get")
                .inputs(json!(42))
                .attachments(vec![vec![9; 1000]]),
        )
        .await;
    assert_eq!(r.from, a.id());
    assert_eq!(r.result.unwrap(), json!({"by": "a", "inputs": 42}));
    // By id, through the same link.
    let v = caller
        .call(Target::Component(a.id().unwrap()), "get", json!(1))
        .await
        .unwrap();
    assert_eq!(v["by"], "a");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_all_and_cast_fan_out_to_members_on_every_hub() {
    let t = Testbed::start(4, GOSSIP).await.unwrap();
    converged(&t).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut members = Vec::new();
    for hub in 0..3 {
        let c = component(&t, hub, &format!("m{hub}")).await;
        let tx = tx.clone();
        let me = format!("m{hub}");
        c.on_call(move |inv, r| {
            if inv.wants_reply {
                r.reply(Ok(json!(me)));
            } else {
                let _ = tx.send(me.clone());
            }
        });
        c.register(&["workers"]).await.unwrap();
        members.push(c);
    }
    assert!(t
        .wait_for(LIMIT, |t| members_seen(t, 3, "workers") == 3)
        .await
        .is_some());
    let caller = Client::connect_anonymous(&t.socket(3)).await.unwrap();
    let replies = caller
        .call_all(Request::new(Target::Group("workers".into()), "who"))
        .await
        .unwrap();
    let who: BTreeSet<String> = replies
        .iter()
        .map(|r| r.result.clone().unwrap().as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        who,
        ["m0", "m1", "m2"].iter().map(|s| s.to_string()).collect()
    );
    caller
        .cast(Request::new(Target::Group("workers".into()), "tick").selector(Selector::All))
        .await
        .unwrap();
    let mut got = BTreeSet::new();
    while got.len() < 3 {
        got.insert(
            tokio::time::timeout(LIMIT, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(got.len(), 3);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attribute_monitor_sees_updates_made_on_another_hub() {
    let t = Testbed::start(3, GOSSIP).await.unwrap();
    converged(&t).await;
    let a = component(&t, 0, "a").await;
    a.register(&["web"]).await.unwrap();
    let watcher = Client::connect_anonymous(&t.socket(2)).await.unwrap();
    let mut m = watcher
        .monitor(Watch::Attributes {
            target: Target::Group("web".into()),
            names: vec!["leader".into()],
        })
        .await
        .unwrap();
    a.update_attributes(
        Some("web"),
        BTreeMap::from([("leader".into(), Some(json!("a")))]),
    )
    .await
    .unwrap();
    assert_eq!(
        m.next(LIMIT).await,
        Some(Event::Attribute {
            name: "leader".into(),
            value: Some(json!("a"))
        })
    );
    assert_eq!(
        watcher
            .select_attributes(Target::Group("web".into()), &[])
            .await
            .unwrap()["leader"],
        json!("a")
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_hub_dies_its_members_leave_and_monitors_fire() {
    let mut t = Testbed::start(5, GOSSIP).await.unwrap();
    converged(&t).await;
    let doomed = component(&t, 1, "doomed").await;
    doomed.register(&["web"]).await.unwrap();
    let survivor = component(&t, 3, "survivor").await;
    survivor.register(&["web"]).await.unwrap();
    assert!(t
        .wait_for(LIMIT, |t| members_seen(t, 2, "web") == 2)
        .await
        .is_some());
    let watcher = Client::connect_anonymous(&t.socket(2)).await.unwrap();
    let mut group = watcher.monitor(Watch::Group("web".into())).await.unwrap();
    let id = doomed.id().unwrap();
    let mut comp = watcher.monitor(Watch::Component(id)).await.unwrap();
    t.kill(1).await;
    assert_eq!(
        comp.next(LIMIT).await,
        Some(Event::Terminated {
            component: id,
            reason: "hub_lost".into()
        })
    );
    assert_eq!(
        group.next(LIMIT).await,
        Some(Event::Left {
            group: "web".into(),
            member: id
        })
    );
    // Every survivor agrees, and calls reach the member that is left.
    converged(&t).await;
    for hub in [0, 2, 3, 4] {
        assert_eq!(members_seen(&t, hub, "web"), 1, "hub {hub}");
    }
    let v = watcher
        .call(Target::Group("web".into()), "x", json!(null))
        .await
        .unwrap();
    assert_eq!(v["by"], "survivor");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_of_a_partition_serves_its_own_members_and_the_halves_converge_after_heal() {
    let t = Testbed::start(4, GOSSIP).await.unwrap();
    converged(&t).await;
    let left = component(&t, 0, "left").await;
    left.register(&["web"]).await.unwrap();
    let right = component(&t, 3, "right").await;
    right.register(&["web"]).await.unwrap();
    assert!(t
        .wait_for(LIMIT, |t| (0..4).all(|h| members_seen(t, h, "web") == 2))
        .await
        .is_some());

    t.partition(&[0, 1], &[2, 3]).await;
    let split = |t: &Testbed| {
        t.node(1).hub.members() == vec![hub_name(0), hub_name(1)]
            && t.node(2).hub.members() == vec![hub_name(2), hub_name(3)]
    };
    assert!(
        t.wait_for(LIMIT, split).await.is_some(),
        "the halves did not see the split"
    );
    let on_left = Client::connect_anonymous(&t.socket(1)).await.unwrap();
    let on_right = Client::connect_anonymous(&t.socket(2)).await.unwrap();
    for _ in 0..5 {
        let v = on_left
            .call(Target::Group("web".into()), "x", json!(null))
            .await
            .unwrap();
        assert_eq!(v["by"], "left");
        let v = on_right
            .call(Target::Group("web".into()), "x", json!(null))
            .await
            .unwrap();
        assert_eq!(v["by"], "right");
    }

    t.heal(&[0, 1], &[2, 3]).await;
    converged(&t).await;
    assert!(t
        .wait_for(LIMIT, |t| (0..4).all(|h| members_seen(t, h, "web") == 2))
        .await
        .is_some());
    let replies = on_left
        .call_all(Request::new(Target::Group("web".into()), "x"))
        .await
        .unwrap();
    assert_eq!(replies.len(), 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_hubs_agree_on_the_ring_and_components_land_in_their_hubs_vnodes() {
    let t = Testbed::start(10, GOSSIP).await.unwrap();
    converged(&t).await;
    let ring = t.node(0).hub.ring();
    assert_eq!(ring.members().len(), 10);
    for hub in 1..10 {
        let other = t.node(hub).hub.ring();
        for v in 0..ring.vnodes() {
            assert_eq!(
                ring.preference(v),
                other.preference(v),
                "hub {hub} vnode {v}"
            );
        }
    }
    // A component's id names a virtual node its own hub is primary for (when the hub owns
    // one of the type's), so its primary hub is where it is.
    let layout = t.node(0).hub.layout();
    let mut placed = 0;
    for hub in 0..10 {
        let c = component(&t, hub, "w").await;
        let id = c.id().unwrap();
        let owned: BTreeSet<u32> = ring.owned_by(&hub_name(hub)).into_iter().collect();
        let of_type: BTreeSet<u32> = layout.type_vnodes("web").into_iter().collect();
        if owned.intersection(&of_type).next().is_some() {
            assert_eq!(ring.for_target(&id)[0], hub_name(hub));
            placed += 1;
        } else {
            assert!(of_type.contains(&ring.vnode_of(&id)));
        }
    }
    assert!(placed > 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_in_a_row_across_hubs_never_waits_for_the_next_message() {
    // Regression: a TLS link that kept records back until the next write stalled a lone
    // caller until its request expired.
    let t = Testbed::start(2, GOSSIP).await.unwrap();
    converged(&t).await;
    let a = component(&t, 0, "a").await;
    a.register(&["web"]).await.unwrap();
    assert!(t
        .wait_for(LIMIT, |t| members_seen(t, 1, "web") == 1)
        .await
        .is_some());
    let caller = Client::connect_anonymous(&t.socket(1)).await.unwrap();
    for i in 0..300 {
        let r = caller
            .request(
                Request::new(Target::Group("web".into()), "get")
                    .inputs(json!(i))
                    .expiry(Duration::from_secs(10)),
            )
            .await;
        assert_eq!(r.result.unwrap()["inputs"], json!(i), "call {i}");
    }
    t.stop().await;
}
