//! Which interface the service configures, read from rtnetlink link messages (no netlink
//! socket needed: the messages are built here as the kernel would send them).

use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use tessera_node::net::links::{choose_interface, Link, LinkKind};

fn message(
    index: u32,
    name: &str,
    kind: LinkLayerType,
    virtual_kind: Option<InfoKind>,
) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.link_layer_type = kind;
    m.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m.attributes.push(LinkAttribute::Address(vec![
        0x52,
        0x54,
        0,
        0x12,
        0x34,
        index as u8,
    ]));
    m.attributes.push(LinkAttribute::Carrier(1));
    if let Some(k) = virtual_kind {
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)]));
    }
    m
}

fn links(messages: &[LinkMessage]) -> Vec<Link> {
    messages.iter().map(Link::from_message).collect()
}

#[test]
fn a_link_message_becomes_a_link() {
    let link = Link::from_message(&message(2, "eth0", LinkLayerType::Ether, None));
    assert_eq!(link.name, "eth0");
    assert_eq!(link.kind, LinkKind::Ethernet);
    assert!(link.up && link.carrier && !link.is_virtual);
    assert_eq!(
        link.ethernet_address(),
        Some([0x52, 0x54, 0, 0x12, 0x34, 2])
    );
    let lo = Link::from_message(&message(1, "lo", LinkLayerType::Loopback, None));
    assert_eq!(lo.kind, LinkKind::Loopback);
}

#[test]
fn the_first_physical_ethernet_nic_is_chosen() {
    let all = links(&[
        message(1, "lo", LinkLayerType::Loopback, None),
        message(2, "veth0", LinkLayerType::Ether, Some(InfoKind::Veth)),
        message(3, "sit0", LinkLayerType::Sit, None),
        message(5, "eth1", LinkLayerType::Ether, None),
        message(4, "eth0", LinkLayerType::Ether, None),
    ]);
    assert_eq!(choose_interface(&all, None).unwrap().name, "eth0");
}

#[test]
fn a_virtual_ethernet_device_is_used_when_there_is_nothing_else() {
    let all = links(&[
        message(1, "lo", LinkLayerType::Loopback, None),
        message(7, "br0", LinkLayerType::Ether, Some(InfoKind::Bridge)),
    ]);
    assert_eq!(choose_interface(&all, None).unwrap().name, "br0");
    assert!(
        choose_interface(&all[..1], None).is_none(),
        "loopback is never chosen"
    );
}

#[test]
fn the_interface_user_data_names_wins() {
    let all = links(&[
        message(1, "lo", LinkLayerType::Loopback, None),
        message(2, "eth0", LinkLayerType::Ether, None),
        message(3, "eth1", LinkLayerType::Ether, None),
    ]);
    assert_eq!(choose_interface(&all, Some("eth1")).unwrap().index, 3);
    assert!(
        choose_interface(&all, Some("eth9")).is_none(),
        "wait for it, do not pick another"
    );
}
