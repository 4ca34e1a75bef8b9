//! Links, addresses and routes through rtnetlink: the few operations the network service
//! (the node's NIC) and the container agent (its bridge and each container's veth pair)
//! need, each one netlink request, each error naming the operation and the interface.
//!
//! A netlink socket belongs to the network namespace its thread was in when it was opened:
//! to configure a container's namespace, open [`Links`] on a thread that has joined it.

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{
    InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use std::os::fd::{AsRawFd, BorrowedFd};

pub use netlink_packet_route::route::RouteProtocol;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{operation}: {detail}")]
pub struct LinkError {
    pub operation: String,
    pub detail: String,
    /// The errno the kernel answered with, if it answered with one.
    pub errno: Option<i32>,
}

impl LinkError {
    fn new(operation: impl Into<String>, e: rtnetlink::Error) -> Self {
        let (detail, errno) = match &e {
            rtnetlink::Error::NetlinkError(m) => {
                let io = m.to_io();
                (io.to_string(), io.raw_os_error())
            }
            other => (other.to_string(), None),
        };
        LinkError {
            operation: operation.into(),
            detail,
            errno,
        }
    }
}

/// What the service needs to know about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    /// The hardware address (Ethernet: 6 bytes).
    pub mac: Vec<u8>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// The driver reports a carrier (IFLA_CARRIER, without the link-watch delay of operstate).
    pub carrier: bool,
    /// A virtual device (veth, bridge, …: it has an `IFLA_INFO_KIND`), not a NIC.
    pub is_virtual: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Loopback,
    Ethernet,
    Other,
}

impl Link {
    pub fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: match msg.header.link_layer_type {
                LinkLayerType::Loopback => LinkKind::Loopback,
                LinkLayerType::Ether => LinkKind::Ethernet,
                _ => LinkKind::Other,
            },
            mac: Vec::new(),
            up: msg.header.flags.contains(LinkFlags::Up),
            carrier: false,
            is_virtual: false,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(mac) => link.mac = mac.clone(),
                LinkAttribute::Carrier(c) => link.carrier = *c != 0,
                LinkAttribute::LinkInfo(infos) => {
                    link.is_virtual = infos.iter().any(|i| matches!(i, LinkInfo::Kind(_)))
                }
                _ => {}
            }
        }
        link
    }

    /// The 6-byte Ethernet address, if the link has one.
    pub fn ethernet_address(&self) -> Option<[u8; 6]> {
        self.mac.as_slice().try_into().ok()
    }
}

/// The interface to configure: the one named (whatever its kind), or the Ethernet NIC with
/// the lowest index (physical NICs before virtual devices).
pub fn choose_interface<'a>(links: &'a [Link], wanted: Option<&str>) -> Option<&'a Link> {
    if let Some(name) = wanted {
        return links.iter().find(|l| l.name == name);
    }
    let ethernet = || links.iter().filter(|l| l.kind == LinkKind::Ethernet);
    ethernet()
        .filter(|l| !l.is_virtual)
        .min_by_key(|l| l.index)
        .or_else(|| ethernet().min_by_key(|l| l.index))
}

/// A handle on the kernel's routing netlink socket.
#[derive(Clone)]
pub struct Links {
    handle: Handle,
}

impl Links {
    /// Opens the netlink socket; its connection runs as a task of the current tokio runtime.
    pub fn connect() -> std::io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Links { handle })
    }

    pub async fn list(&self) -> Result<Vec<Link>, LinkError> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| Link::from_message(&m))
            .try_collect()
            .await
            .map_err(|e| LinkError::new("list links", e))
    }

    pub async fn get(&self, index: u32) -> Result<Option<Link>, LinkError> {
        let links = self.list().await?;
        Ok(links.into_iter().find(|l| l.index == index))
    }

    pub async fn set_up(&self, link: &Link) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).up().build())
            .execute()
            .await
            .map_err(|e| LinkError::new(format!("set {} up", link.name), e))
    }

    /// Adds (or refreshes) an address with its prefix route (and, IPv4, broadcast address).
    /// With a lifetime the kernel removes the address when it runs out, even if this process
    /// is no longer there to do it (`ip addr` shows it as `valid_lft`).
    pub async fn add_address(
        &self,
        link: &Link,
        address: IpAddr,
        prefix_len: u8,
        lifetime: Option<Duration>,
    ) -> Result<(), LinkError> {
        let mut request = self
            .handle
            .address()
            .add(link.index, address, prefix_len)
            .replace();
        if let Some(lifetime) = lifetime {
            let secs = u32::try_from(lifetime.as_secs())
                .unwrap_or(u32::MAX - 1)
                .max(1);
            let mut info = CacheInfo::default();
            (info.ifa_preferred, info.ifa_valid) = (secs, secs);
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::CacheInfo(info));
        }
        request.execute().await.map_err(|e| {
            LinkError::new(
                format!("add address {address}/{prefix_len} to {}", link.name),
                e,
            )
        })
    }

    /// The IPv4 addresses on a link, with their prefix lengths.
    pub async fn ipv4_addresses(&self, link: &Link) -> Result<Vec<(Ipv4Addr, u8)>, LinkError> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| LinkError::new(format!("list addresses of {}", link.name), e))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.index == link.index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Removes an address (the kernel drops the routes through it); absent is not an error.
    pub async fn remove_address(
        &self,
        link: &Link,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), LinkError> {
        let msg = match address {
            IpAddr::V4(ip) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(link.index)
                .address(ip, prefix_len)
                .build(),
            IpAddr::V6(ip) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(link.index)
                .address(ip, prefix_len)
                .build(),
        };
        match self.handle.address().del(msg).execute().await {
            Err(e) => {
                let err = LinkError::new(
                    format!("remove address {address}/{prefix_len} from {}", link.name),
                    e,
                );
                if err.errno == Some(libc::EADDRNOTAVAIL) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
            Ok(()) => Ok(()),
        }
    }

    /// Sets the default route of the gateway's family (replacing one that exists).
    /// `onlink`: the gateway is in none of the link's subnets but is reachable on it.
    pub async fn set_default_route(
        &self,
        link: &Link,
        gateway: IpAddr,
        protocol: RouteProtocol,
        onlink: bool,
    ) -> Result<(), LinkError> {
        let route = match gateway {
            IpAddr::V4(gw) => {
                let r = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw);
                let r = r.output_interface(link.index).protocol(protocol);
                if onlink { r.onlink() } else { r }.build()
            }
            IpAddr::V6(gw) => {
                let r = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw);
                let r = r.output_interface(link.index).protocol(protocol);
                if onlink { r.onlink() } else { r }.build()
            }
        };
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                LinkError::new(
                    format!("set default route via {gateway} dev {}", link.name),
                    e,
                )
            })
    }

    /// Sets the link's MTU (a DHCP server's interface-MTU option).
    pub async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| LinkError::new(format!("set MTU {mtu} on {}", link.name), e))
    }

    /// The link of that name, if there is one.
    pub async fn by_name(&self, name: &str) -> Result<Option<Link>, LinkError> {
        let links = self.list().await?;
        Ok(links.into_iter().find(|l| l.name == name))
    }

    /// Creates a bridge (down; [`Links::set_up`] it once it has its address).
    pub async fn add_bridge(&self, name: &str) -> Result<(), LinkError> {
        let msg = LinkBridge::new(name).down().build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| LinkError::new(format!("create bridge {name}"), e))
    }

    /// Creates a veth pair: `host` here, attached to `bridge` and up; `peer` created directly
    /// in the network namespace `netns` (an open `/proc/PID/ns/net`), down.
    pub async fn add_veth_into(
        &self,
        host: &str,
        bridge: &Link,
        peer: &str,
        netns: BorrowedFd<'_>,
    ) -> Result<(), LinkError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(host, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .controller(bridge.index)
            .up()
            .build();
        self.handle.link().add(msg).execute().await.map_err(|e| {
            LinkError::new(
                format!("create veth pair {host} (on {}) / {peer}", bridge.name),
                e,
            )
        })
    }

    /// Deletes a link (a veth pair goes with either end); absent is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        let Some(link) = self.by_name(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(link.index).execute().await {
            Err(e) => {
                let err = LinkError::new(format!("delete link {name}"), e);
                if err.errno == Some(libc::ENODEV) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
            Ok(()) => Ok(()),
        }
    }
}
