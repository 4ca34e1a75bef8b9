//! User-data's `[network]` section (tests/data holds whole user-data files), the host-name
//! rule and the text of /etc/resolv.conf.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use tessera_node::net::config::*;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
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
    assert!(config.hostname_in_userdata);
    assert!(config.unknown_keys.is_empty());
    let s = config.static_config.unwrap();
    assert_eq!(
        (s.address, s.prefix_len),
        (Ipv4Addr::new(192, 168, 77, 10), 24)
    );
    assert_eq!(s.gateway, Some(Ipv4Addr::new(192, 168, 77, 1)));
    assert_eq!(
        s.dns,
        vec![
            IpAddr::from([192, 168, 77, 1]),
            "2001:db8::53".parse::<IpAddr>().unwrap()
        ]
    );
    assert!(!s.gateway_onlink());
}

#[test]
fn one_dns_server_may_be_a_string_and_the_gateway_is_optional() {
    let config = parse_text("[network]\naddress = \"10.1.2.3/32\"\ndns = \"10.1.0.53\"\n").unwrap();
    let s = config.static_config.unwrap();
    assert_eq!(s.prefix_len, 32);
    assert_eq!(s.gateway, None);
    assert_eq!(s.dns, vec![IpAddr::from([10, 1, 0, 53])]);
}

#[test]
fn a_gateway_outside_the_subnet_is_on_link() {
    let config =
        parse_text("[network]\naddress = \"203.0.113.7/32\"\ngateway = \"172.31.1.1\"\n").unwrap();
    assert!(config.static_config.unwrap().gateway_onlink());
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
    let e = error_of("[network]\naddress = \"fd00::1/64\"\n");
    assert!(e.contains("IPv4"), "{e}");
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
fn cidr_parsing() {
    assert_eq!(
        parse_cidr("10.0.2.15/24"),
        Some((Ipv4Addr::new(10, 0, 2, 15), 24))
    );
    assert_eq!(
        parse_cidr(" 10.0.2.15/8 "),
        Some((Ipv4Addr::new(10, 0, 2, 15), 8))
    );
    assert_eq!(parse_cidr("10.0.2.15/0"), None);
    assert_eq!(parse_cidr("10.0.2.15/"), None);
    assert_eq!(parse_cidr("10.0.2/24"), None);
    assert!(same_subnet(
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(10, 0, 2, 2),
        24
    ));
    assert!(!same_subnet(
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(10, 0, 3, 2),
        24
    ));
    assert!(same_subnet(
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(10, 0, 3, 2),
        16
    ));
    assert!(!same_subnet(
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(10, 0, 2, 16),
        32
    ));
}

#[test]
fn dhcp_sets_the_host_name_only_while_it_is_the_default() {
    assert!(dhcp_may_set_hostname("tessera", false, false));
    assert!(
        !dhcp_may_set_hostname("node7", false, false),
        "set by someone else"
    );
    assert!(
        !dhcp_may_set_hostname("tessera", true, false),
        "tessera.hostname=tessera"
    );
    assert!(
        !dhcp_may_set_hostname("tessera", false, true),
        "user-data names the node"
    );
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
