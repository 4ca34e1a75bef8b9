//! User-data's `[network]` and `[node] hostname` (tests/data holds whole user-data files,
//! including two exactly as the `userdata` service writes them), which host name to set, and
//! the text of /etc/resolv.conf.

use std::net::IpAddr;
use std::path::Path;
use tessera_node::net::config::*;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn parse_text(text: &str) -> Result<NetworkConfig, ConfigError> {
    parse(text, Path::new("/run/tessera/userdata.toml"))
}

fn error_of(text: &str) -> String {
    parse_text(text).expect_err("must be refused").to_string()
}

#[test]
fn a_missing_file_means_dhcp_on_the_first_ethernet_interface() {
    let config = load(&data("no-such-file.toml")).unwrap();
    assert_eq!(config, NetworkConfig::default());
    assert!(config.static_config.is_none() && config.interface.is_none());
}

#[test]
fn user_data_without_a_network_section_means_dhcp() {
    let config = load(&data("userdata-dhcp.toml")).unwrap();
    assert_eq!(config, NetworkConfig::default());
}

#[test]
fn static_configuration_from_user_data() {
    let config = load(&data("userdata-static.toml")).unwrap();
    assert_eq!(config.interface.as_deref(), Some("ens3"));
    assert_eq!(config.hostname.as_deref(), Some("node1.example"));
    assert!(config.unknown_keys.is_empty());
    let s = config.static_config.unwrap();
    assert_eq!(s.cidr(), "192.168.77.10/24");
    assert_eq!(s.gateway, Some(ip("192.168.77.1")));
    assert_eq!(s.dns, vec![ip("192.168.77.1"), ip("2001:db8::53")]);
    assert!(!s.gateway_onlink());
}

#[test]
fn the_file_the_userdata_service_writes_is_read() {
    let v4 = load(&data("userdata-written-v4.toml")).unwrap();
    assert_eq!(v4.interface.as_deref(), Some("eth0"));
    assert_eq!(v4.hostname.as_deref(), Some("node1.example"));
    let s = v4.static_config.unwrap();
    assert_eq!(
        (s.cidr(), s.gateway),
        ("192.168.77.10/24".into(), Some(ip("192.168.77.1")))
    );
    assert_eq!(s.dns, vec![ip("192.168.77.1")]);

    let v6 = load(&data("userdata-written-v6.toml")).unwrap();
    assert_eq!(v6.hostname, None);
    let s = v6.static_config.unwrap();
    assert_eq!(
        (s.cidr(), s.gateway, s.dns.len()),
        ("fd00::10/64".into(), None, 0)
    );
}

#[test]
fn one_dns_server_may_be_a_string_and_the_gateway_is_optional() {
    let config = parse_text("[network]\naddress = \"10.1.2.3/32\"\ndns = \"10.1.0.53\"\n").unwrap();
    let s = config.static_config.unwrap();
    assert_eq!(s.prefix_len, 32);
    assert_eq!(s.gateway, None);
    assert_eq!(s.dns, vec![ip("10.1.0.53")]);
}

#[test]
fn a_gateway_outside_the_subnet_is_on_link() {
    let config =
        parse_text("[network]\naddress = \"203.0.113.7/32\"\ngateway = \"172.31.1.1\"\n").unwrap();
    assert!(config.static_config.unwrap().gateway_onlink());
    let config =
        parse_text("[network]\naddress = \"fd00::10/64\"\ngateway = \"fd00::1\"\n").unwrap();
    assert!(!config.static_config.unwrap().gateway_onlink());
}

#[test]
fn bad_values_name_the_key_and_the_fix() {
    let e = error_of("[network]\naddress = \"192.168.1.10\"\n");
    assert!(
        e.contains("[network] address") && e.contains("like 192.168.1.10/24"),
        "{e}"
    );
    let e = error_of("[network]\naddress = \"192.168.1.10/33\"\n");
    assert!(e.contains("[network] address"), "{e}");
    let e = error_of("[network]\naddress = \"fd00::1/129\"\n");
    assert!(e.contains("[network] address"), "{e}");
    let e = error_of("[network]\naddress = \"fd00::10/64\"\ngateway = \"10.0.0.1\"\n");
    assert!(
        e.contains("[network] gateway") && e.contains("same address family"),
        "{e}"
    );
    let e = error_of("[network]\naddress = \"10.0.0.2/24\"\ngateway = \"10.0.0.256\"\n");
    assert!(
        e.contains("[network] gateway") && e.contains("10.0.0.256"),
        "{e}"
    );
    let e = error_of("[network]\naddress = \"10.0.0.2/24\"\ndns = [\"resolver\"]\n");
    assert!(e.contains("[network] dns"), "{e}");
    let e = error_of("[network]\ninterface = \"eth0/1\"\n");
    assert!(e.contains("[network] interface"), "{e}");
    let e = error_of("[network]\ninterface = \"a-very-long-interface-name\"\n");
    assert!(e.contains("1-15 characters"), "{e}");
    let e = error_of("[network]\naddress = 10\n");
    assert!(e.contains("expected a string, found integer"), "{e}");
}

#[test]
fn gateway_or_dns_without_an_address_is_refused() {
    let e = error_of("[network]\ngateway = \"10.0.0.1\"\n");
    assert!(
        e.contains("need `address`") && e.contains("to use DHCP"),
        "{e}"
    );
    let e = error_of("[network]\ndns = \"10.0.0.1\"\n");
    assert!(e.contains("need `address`"), "{e}");
}

#[test]
fn broken_toml_is_an_error_naming_the_file() {
    let e = error_of("[network\n");
    assert!(
        e.starts_with("/run/tessera/userdata.toml is not valid TOML"),
        "{e}"
    );
}

#[test]
fn unknown_network_keys_are_reported_not_fatal() {
    let config = parse_text("[network]\ninterface = \"eth1\"\nmtu = 9000\n").unwrap();
    assert_eq!(config.unknown_keys, vec!["mtu".to_string()]);
    assert_eq!(config.interface.as_deref(), Some("eth1"));
    assert!(config.static_config.is_none());
}

#[test]
fn cidr_parsing_and_subnets() {
    assert_eq!(parse_cidr("10.0.2.15/24"), Some((ip("10.0.2.15"), 24)));
    assert_eq!(parse_cidr(" 10.0.2.15/8 "), Some((ip("10.0.2.15"), 8)));
    assert_eq!(parse_cidr("fd00::10/64"), Some((ip("fd00::10"), 64)));
    assert_eq!(parse_cidr("10.0.2.15/0"), None);
    assert_eq!(parse_cidr("10.0.2.15/"), None);
    assert_eq!(parse_cidr("10.0.2/24"), None);
    assert!(same_subnet(ip("10.0.2.15"), ip("10.0.2.2"), 24));
    assert!(!same_subnet(ip("10.0.2.15"), ip("10.0.3.2"), 24));
    assert!(same_subnet(ip("10.0.2.15"), ip("10.0.3.2"), 16));
    assert!(!same_subnet(ip("10.0.2.15"), ip("10.0.2.16"), 32));
    assert!(same_subnet(ip("fd00::10"), ip("fd00::1"), 64));
    assert!(!same_subnet(ip("fd00::10"), ip("fd01::1"), 64));
    assert!(
        !same_subnet(ip("10.0.2.15"), ip("::ffff:10.0.2.2"), 8),
        "families differ"
    );
}

#[test]
fn which_host_name_is_set() {
    let default = "tessera";
    // DHCP only while the name is the default and nobody else named the node.
    assert_eq!(
        hostname_to_set(default, false, None, Some("dhcp-name")),
        Some("dhcp-name")
    );
    assert_eq!(
        hostname_to_set("node7", false, None, Some("dhcp-name")),
        None
    );
    // tessera.hostname= (applied by PID 1) beats everything, even when it says "tessera".
    assert_eq!(
        hostname_to_set(default, true, None, Some("dhcp-name")),
        None
    );
    assert_eq!(
        hostname_to_set("kernel-name", true, Some("ud-name"), None),
        None
    );
    // User-data beats DHCP, and replaces the default.
    assert_eq!(
        hostname_to_set(default, false, Some("ud-name"), Some("dhcp-name")),
        Some("ud-name")
    );
    assert_eq!(
        hostname_to_set("ud-name", false, Some("ud-name"), Some("dhcp-name")),
        None,
        "already set"
    );
    assert_eq!(hostname_to_set(default, false, None, None), None);
}

#[test]
fn host_names_are_checked() {
    for ok in ["node1", "node-1.example", "a", "x.y.z"] {
        assert!(valid_hostname(ok), "{ok}");
    }
    for bad in [
        "",
        "-node",
        "node-",
        "no de",
        "node_1",
        "a..b",
        "é",
        &"a".repeat(65),
    ] {
        assert!(!valid_hostname(bad), "{bad:?}");
    }
}

#[test]
fn resolv_conf_lists_at_most_three_servers() {
    let servers: Vec<IpAddr> = (1..=4).map(|i| IpAddr::from([10, 0, 0, i])).collect();
    let text = resolv_conf("DHCP from 10.0.2.2", &servers, Some("cluster.example"));
    assert_eq!(
        text,
        "# Written by tessera net (DHCP from 10.0.2.2).\nsearch cluster.example\n\
         nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n"
    );
    let text = resolv_conf("static", &servers[..1], Some("bad domain"));
    assert!(!text.contains("search"), "{text}");
}
