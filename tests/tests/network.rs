//! End-to-end: the `net` service of the default image configures the node from QEMU's
//! user-network DHCP server (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3) and its IPv6 router
//! advertisements, says so in `tessera status` and its log, lets the guest reach a TCP service
//! on the host through the gateway, and applies static addressing from user-data while it
//! runs. Everything is read from the console with busybox and the tessera CLI.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;
use tessera_e2e::*;
use tessera_qemu::{BootMode, Vm};

fn booted(name: &str) -> Vm {
    let vm = boot(&default_image(), BootMode::Kernel, name, &[]);
    wait_ready(&vm, BootMode::Kernel);
    vm
}

/// Milliseconds since midnight of a `HH:MM:SS.mmm` log time.
fn log_time_ms(line: &str) -> Option<u64> {
    let t = line.split_whitespace().next()?;
    let (hms, ms) = t.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<u64>().ok()?)
}

#[test]
fn dhcp_gives_the_node_its_address_default_route_and_dns() {
    let vm = booted("net-dhcp");
    let addr = sh(&vm, "ip -4 addr show dev eth0");
    assert!(addr.contains("inet 10.0.2.15/24"), "{addr}");
    // The kernel holds the lease's lifetime too: the address goes even if net is gone.
    assert!(addr.contains("valid_lft 86"), "{addr}");
    let route = sh(&vm, "ip route");
    assert!(
        route
            .lines()
            .any(|l| l.starts_with("default via 10.0.2.2 dev eth0")),
        "{route}"
    );
    assert!(route.contains("10.0.2.0/24 dev eth0"), "{route}");
    let resolv = sh(&vm, "cat /etc/resolv.conf");
    assert!(
        resolv.lines().any(|l| l.trim() == "nameserver 10.0.2.3"),
        "{resolv}"
    );
    let lo = sh(&vm, "ip addr show dev lo");
    assert!(lo.contains("UP") && lo.contains("inet 127.0.0.1/8"), "{lo}");
}

#[test]
fn ipv6_is_autoconfigured_from_router_advertisements() {
    let vm = booted("net-ipv6");
    // QEMU's user network advertises fec0::/64 with the router fe80::2.
    let addr = sh_until(
        &vm,
        "ip -6 addr show dev eth0",
        Duration::from_secs(30),
        |s| s.contains("inet6 fec0::"),
    );
    assert!(addr.contains("inet6 fe80::"), "{addr}");
    let route = sh(&vm, "ip -6 route");
    assert!(route.contains("default via fe80::2 dev eth0"), "{route}");
}

#[test]
fn net_is_ready_with_a_status_and_logs_each_step() {
    let vm = booted("net-status");
    let status = sh(&vm, "tessera status");
    let row = status_row(&status, "net");
    assert_eq!(row[2], "ready", "{status}");
    assert!(
        status.contains("bound 10.0.2.15/24 via 10.0.2.2, lease 86400s"),
        "{status}"
    );

    let logs = sh(&vm, "tessera logs net");
    for step in [
        "link up interface=lo",
        "link up interface=eth0",
        "ipv6 router advertisements accepted interface=eth0",
        "carrier up interface=eth0",
        "DHCP: requesting 10.0.2.15 from 10.0.2.2",
        "dhcp bound",
        "resolv.conf written",
        "network ready",
    ] {
        assert!(logs.contains(step), "no {step:?} in:\n{logs}");
    }
    let bound = logs.lines().find(|l| l.contains("dhcp bound")).unwrap();
    for field in [
        "address=10.0.2.15/24",
        "router=10.0.2.2",
        "lease_s=86400",
        "server=10.0.2.2",
    ] {
        assert!(bound.contains(field), "{bound}");
    }

    // Service start to READY, from PID 1's events (reported, not asserted: TCG varies).
    let init = sh(&vm, "tessera logs init | grep 'service=net'");
    let at = |what: &str| {
        init.lines()
            .find(|l| l.contains(what))
            .and_then(log_time_ms)
            .unwrap_or_else(|| panic!("no {what:?} for net in:\n{init}"))
    };
    let (started, ready) = (at("service started"), at("service ready"));
    eprintln!(
        "net: service started → READY in {} ms under TCG",
        ready - started
    );
    assert!(
        ready - started < 10_000,
        "net took {} ms to be ready",
        ready - started
    );
}

#[test]
fn guest_reaches_a_tcp_service_on_the_host_through_the_gateway() {
    // QEMU's user network maps 10.0.2.2 to the host's loopback.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a host port");
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, peer) = listener.accept().expect("the guest connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream)
            .write_all(format!("host got {}", line).as_bytes())
            .unwrap();
        (line.trim().to_string(), peer)
    });

    let vm = booted("net-host-tcp");
    let reply = sh(
        &vm,
        &format!("echo hello-from-guest | nc -w 10 10.0.2.2 {port}"),
    );
    assert!(reply.contains("host got hello-from-guest"), "{reply}");
    let (line, _) = server.join().unwrap();
    assert_eq!(line, "hello-from-guest");
}

#[test]
fn static_address_and_host_name_from_user_data_are_applied_while_running() {
    let vm = booted("net-static");
    // What the userdata service writes when user-data arrives late (IMDS); net polls the file.
    sh(
        &vm,
        "printf 'version = 1\\n[node]\\nhostname = \"static-node\"\\n[network]\\ninterface = \"eth0\"\\naddress = \"10.0.2.50/24\"\\ngateway = \"10.0.2.2\"\\ndns = [\"10.0.2.3\"]\\n' > /run/tessera/userdata.toml.new && mv /run/tessera/userdata.toml.new /run/tessera/userdata.toml",
    );
    let status = sh_until(&vm, "tessera status", Duration::from_secs(30), |s| {
        s.contains("static 10.0.2.50/24 via 10.0.2.2")
    });
    assert_eq!(status_row(&status, "net")[2], "ready", "{status}");
    assert_eq!(status_row(&status, "net")[4], "0", "no restart: {status}");
    let addr = sh(&vm, "ip -4 addr show dev eth0");
    assert!(addr.contains("inet 10.0.2.50/24"), "{addr}");
    assert!(
        !addr.contains("10.0.2.15"),
        "the DHCP address is gone:\n{addr}"
    );
    assert!(sh(&vm, "ip route").contains("default via 10.0.2.2 dev eth0"));
    let resolv = sh(&vm, "cat /etc/resolv.conf");
    assert!(
        resolv.contains("static configuration from user-data"),
        "{resolv}"
    );
    assert_eq!(sh(&vm, "hostname"), "static-node");
    let logs = sh(&vm, "tessera logs net");
    assert!(logs.contains("user-data changed, reconfiguring"), "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("network configuration") && l.contains("mode=static")),
        "{logs}"
    );
}
