//! The fuzz targets: each is a parser Tessera runs on input from outside the process (the
//! kernel command line, user-data and NoCloud volumes, socket protocols, hub frames, DHCP
//! packets, disks, service files, HTTP responses, the CA's requests), called with arbitrary bytes. A target fails by panicking,
//! hanging or allocating without bound; returning an error is the expected outcome for bad
//! input. `src/bin/tessera-fuzz.rs` drives them under libFuzzer (`make fuzz`); the replay
//! test runs every corpus seed and every saved crash through them in `make test`.

use std::path::Path;
use std::time::{Duration, Instant};

/// A target: its name (the corpus directory under `fuzz/corpus/`) and its entry point.
pub struct Target {
    pub name: &'static str,
    pub what: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "cmdline",
        what: "kernel command line (tessera.* arguments)",
        run: cmdline,
    },
    Target {
        name: "userdata",
        what: "user-data TOML and its schema",
        run: userdata,
    },
    Target {
        name: "nocloud_label",
        what: "NoCloud volume probe (vfat and iso9660 headers)",
        run: nocloud_label,
    },
    Target {
        name: "nocloud_meta",
        what: "NoCloud meta-data",
        run: nocloud_meta,
    },
    Target {
        name: "service_file",
        what: "service files (/etc/tessera/services/*.toml)",
        run: service_file,
    },
    Target {
        name: "hub_frame",
        what: "hub frame codec: component, peer and hub messages",
        run: hub_frame,
    },
    Target {
        name: "certmgr_socket",
        what: "certmgr's socket protocol",
        run: certmgr_socket,
    },
    Target {
        name: "callout",
        what: "the request-key callout's arguments",
        run: callout,
    },
    Target {
        name: "firewall_socket",
        what: "the firewall's socket protocol",
        run: firewall_socket,
    },
    Target {
        name: "storage_socket",
        what: "the storage service's socket protocol",
        run: storage_socket,
    },
    Target {
        name: "storage_probe",
        what: "the storage disk probe (first MiB of a disk)",
        run: storage_probe,
    },
    Target {
        name: "dhcp",
        what: "the DHCP client's packet parser and state machine",
        run: dhcp,
    },
    Target {
        name: "http_response",
        what: "the IMDS/HTTP client's response reader",
        run: http_response,
    },
    Target {
        name: "ca_csr",
        what: "the CA's CSR check (DER and PEM)",
        run: ca_csr,
    },
    Target {
        name: "ca_body",
        what: "the CA's JSON request bodies, their token and CSR",
        run: ca_body,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

fn cmdline(data: &[u8]) {
    let args = tessera_common::cmdline::KernelArgs::parse(&text(data));
    let _ = args.get("tessera.hostname");
}

fn userdata(data: &[u8]) {
    let _ = tessera_userdata::schema::parse(data);
    let _ = tessera_userdata::schema::parse_document(data);
}

fn nocloud_label(data: &[u8]) {
    let _ = tessera_userdata::label::probe(data);
}

fn nocloud_meta(data: &[u8]) {
    let _ = tessera_userdata::nocloud::parse_meta_data(data);
}

fn service_file(data: &[u8]) {
    let _ = tessera_init::supervisor::manifest::parse(Path::new("fuzz.toml"), &text(data));
}

fn hub_frame(data: &[u8]) {
    use tessera_hub::codec::{decode, Frame};
    use tessera_hub::protocol::{ClientMsg, HubMsg, PeerMsg};
    if let Ok(f) = decode::<ClientMsg>(data) {
        // What decodes must encode again (the hub forwards what it reads).
        let _ = tessera_hub::codec::to_bytes(&Frame::with(f.header, f.attachments));
    }
    let _ = decode::<PeerMsg>(data);
    let _ = decode::<HubMsg>(data);
}

fn certmgr_socket(data: &[u8]) {
    let _ = tessera_certmgr::protocol::parse(data);
}

fn callout(data: &[u8]) {
    let args: Vec<String> = text(data).split(['\0', ' ']).map(str::to_string).collect();
    let _ = tessera_certmgr::callout::parse_args(&args);
}

fn firewall_socket(data: &[u8]) {
    let _ = tessera_node::firewall::protocol::parse(data);
}

fn storage_socket(data: &[u8]) {
    let _ = tessera_node::storage::protocol::parse(data);
}

fn storage_probe(data: &[u8]) {
    let _ = tessera_node::storage::probe::probe(data);
}

fn dhcp(data: &[u8]) {
    use tessera_node::net::dhcp::Client;
    // A client that has sent its DISCOVER, handed the packet at once and after its lease's
    // timers would have run (renew, rebind, expire).
    let now = Instant::now();
    let mut client = Client::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], 7, now);
    let _ = client.on_timer(now);
    let _ = client.on_packet(data, now);
    let _ = client.on_packet(data, now);
    for secs in [1u64, 3600, 86_400 * 400] {
        let _ = client.on_timer(now + Duration::from_secs(secs));
    }
}

fn ca_csr(data: &[u8]) {
    let _ = tessera_ca::csr::verify_der(data);
    let _ = tessera_ca::csr::verify_pem(&text(data));
}

fn ca_body(data: &[u8]) {
    use tessera_ca::service::{IssueRequest, RedeemRequest, TokenRequest};
    if let Ok(r) = serde_json::from_slice::<RedeemRequest>(data) {
        let _ = tessera_ca::token::check_shape(&r.token);
        let _ = tessera_ca::csr::verify_pem(&r.csr_pem);
    }
    if let Ok(r) = serde_json::from_slice::<IssueRequest>(data) {
        let _ = tessera_ca::csr::verify_pem(&r.csr_pem);
    }
    let _ = serde_json::from_slice::<TokenRequest>(data);
}

/// The IMDS/HTTP client reading a response: a loopback server answers each request with the
/// input's bytes and closes, so the client's real socket path (status line, headers, chunked
/// or sized body, limits) reads it.
fn http_response(data: &[u8]) {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{mpsc, Mutex, OnceLock};
    use tessera_userdata::http::{request, HttpUrl, Limits};

    static SERVER: OnceLock<(u16, Mutex<mpsc::Sender<Vec<u8>>>)> = OnceLock::new();
    let (port, next) = SERVER.get_or_init(|| {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("a loopback port for the fuzz server");
        let port = listener.local_addr().expect("its address").port();
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Ok(answer) = rx.recv() else { return };
                // Read the request head first: closing with it unread would reset the
                // connection before the client reads the answer.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&answer);
            }
        });
        (port, Mutex::new(tx))
    });
    let Ok(url) = HttpUrl::parse(&format!("http://127.0.0.1:{port}/latest/user-data")) else {
        return;
    };
    if next.lock().map(|tx| tx.send(data.to_vec())).is_err() {
        return;
    }
    let limits = Limits {
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
        max_body: 64 * 1024,
    };
    let _ = request("GET", &url, &[("Metadata-Flavor", "Google")], limits);
}
