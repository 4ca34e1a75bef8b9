//! `tessera hub component …` against an in-process cluster of three real hubs: `serve` on hub
//! 0, `select` from hub 1, `call` and `monitor` from hub 2, then hub 0 dies and the monitor
//! prints the member leaving, named with its node. Bad input fails with the cause and the fix.
//! No timing assertions: only generous limits.

use std::time::Duration;

use tessera_hub::component::{self, CallArgs, ServeArgs};
use tessera_hub::testbed::{hub_name, Testbed};
use tessera_hub::{Selector, Watch};
use tokio::sync::{mpsc, oneshot};

const GOSSIP: Duration = Duration::from_millis(50);
const LIMIT: Duration = Duration::from_secs(30);

/// A line sink whose lines a test reads from the receiver.
fn sink() -> (
    impl FnMut(String) + Send + 'static,
    mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        move |l: String| {
            let _ = tx.send(l);
        },
        rx,
    )
}

/// The next line containing `needle`, within the limit.
async fn line_with(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let wait = async {
        while let Some(l) = rx.recv().await {
            if l.contains(needle) {
                return l;
            }
        }
        panic!("the command ended without printing {needle:?}");
    };
    tokio::time::timeout(LIMIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no line with {needle:?} within {LIMIT:?}"))
}

/// `select web` on `hub` until a line has `wanted`; its lines.
async fn select_until(t: &Testbed, hub: usize, wanted: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..300 {
        let (mut out, mut rx) = sink();
        component::select(&t.socket(hub), "web", Selector::All, &mut out)
            .await
            .unwrap();
        drop(out);
        seen.clear();
        while let Some(l) = rx.recv().await {
            seen.push(l);
        }
        if seen.iter().any(|l| l.contains(wanted)) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("hub {hub} never listed {wanted:?}; last: {seen:?}");
}

fn call_args(target: &str, inputs: &str) -> CallArgs {
    CallArgs {
        target: target.into(),
        operation: "echo".into(),
        inputs: inputs.into(),
        object: "o".into(),
        all: false,
        expiry: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_select_call_and_monitor_across_hubs() {
    let mut t = Testbed::start(3, GOSSIP).await.unwrap();
    assert!(t.wait_for(LIMIT, |t| t.converged()).await.is_some());

    let (mut serve_out, mut served) = sink();
    let (stop_serving, stopped) = oneshot::channel::<()>();
    let socket0 = t.socket(0);
    let serving = tokio::spawn(async move {
        let args = ServeArgs {
            group: vec!["web".into()],
            name: Some("web-1".into()),
            component_type: "console".into(),
            reply: None,
        };
        component::serve(&socket0, &args, &mut serve_out, async {
            let _ = stopped.await;
        })
        .await
    });
    let first = line_with(&mut served, "SERVING").await;
    assert!(
        first.contains(&format!("name=web-1 node={} groups=web:1", hub_name(0))),
        "{first}"
    );

    // Hubs 1 and 2 see the member once gossip carried it.
    let wanted = format!("name=web-1 type=console node={}", hub_name(0));
    for hub in [1, 2] {
        let seen = select_until(&t, hub, &wanted).await;
        assert_eq!(seen[0], "GROUP group=web members=1", "{seen:?}");
        assert!(
            seen[1].starts_with("MEMBER group=web component="),
            "{seen:?}"
        );
    }

    // Hub 2 calls the group: the reply names node 0, and the component saw the call.
    let (mut out, mut rx) = sink();
    component::call(&t.socket(2), &call_args("group:web", "\"ping\""), &mut out)
        .await
        .unwrap();
    let reply = line_with(&mut rx, "REPLY").await;
    assert!(
        reply.contains(&format!(r#""reply":"hello from {}""#, hub_name(0)))
            && reply.contains(r#""inputs":"ping""#),
        "{reply}"
    );
    let invoked = line_with(&mut served, "INVOKED").await;
    assert!(
        invoked.contains(&format!("@{} operation=echo object=o", hub_name(2))),
        "{invoked}"
    );

    // Bad input: refused before anything is sent, naming the fix.
    let (mut out, _rx) = sink();
    let e = component::call(&t.socket(2), &call_args("web", "not json"), &mut out)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("quote strings"), "{e:#}");
    // An empty group is an error reply, printed, and the command fails.
    let (mut out, mut rx) = sink();
    let e = component::call(&t.socket(2), &call_args("nobody", "1"), &mut out)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1 of 1 replies were errors"), "{e}");
    let err = line_with(&mut rx, "ERROR").await;
    assert!(err.contains("code=no_target"), "{err}");

    // Hub 2 monitors web; hub 0 dies; the member leaves, named with its node.
    let (mut mon_out, mut monitored) = sink();
    let socket2 = t.socket(2);
    let monitoring = tokio::spawn(async move {
        component::monitor(
            &socket2,
            Watch::Group("web".into()),
            &mut mon_out,
            std::future::pending(),
        )
        .await
    });
    let first = line_with(&mut monitored, "MONITORING").await;
    assert_eq!(first, "MONITORING group=web members=1");
    t.kill(0).await;
    let left = line_with(&mut monitored, "MEMBER-LEFT").await;
    assert!(
        left.starts_with("MEMBER-LEFT group=web component=") && left.ends_with(&wanted),
        "{left}"
    );

    monitoring.abort();
    let _ = stop_serving.send(());
    let _ = serving.await;
    t.stop().await;
}

#[tokio::test]
async fn without_a_hub_the_commands_say_how_to_start_one() {
    let dir = std::env::temp_dir().join(format!("tessera-hub-nosock-{}", std::process::id()));
    let (mut out, _rx) = sink();
    let e = component::select(&dir.join("hub.sock"), "web", Selector::All, &mut out)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("is `tessera agent hub` running?"),
        "{e}"
    );
}
