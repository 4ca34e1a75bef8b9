//! The DHCP client's socket: UDP, bound to 0.0.0.0:68 and to one interface
//! (SO_BINDTODEVICE), allowed to broadcast.
//!
//! On Linux this is enough on an interface that has no address yet: a limited broadcast
//! (255.255.255.255) leaves through the bound device with source 0.0.0.0, and the server's
//! broadcast replies (requested with the BROADCAST flag) are delivered to the socket. Checked
//! against QEMU's user-network DHCP server; no AF_PACKET socket is needed. Renewals are
//! unicast from the leased address through the same socket.

use super::dhcp::{Destination, CLIENT_PORT, SERVER_PORT};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

pub struct DhcpSocket {
    socket: tokio::net::UdpSocket,
}

impl DhcpSocket {
    /// Opens the client socket on `interface` (needs CAP_NET_BIND_SERVICE for port 68 and
    /// CAP_NET_RAW for SO_BINDTODEVICE). Must be called inside a tokio runtime.
    pub fn bind(interface: &str) -> io::Result<Self> {
        let context = |what: &str, e: nix::Error| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("DHCP socket on {interface}: {what}: {e}"),
            )
        };
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| context("socket", e))?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
            .map_err(|e| context("SO_REUSEADDR", e))?;
        socket::setsockopt(&fd, sockopt::Broadcast, &true)
            .map_err(|e| context("SO_BROADCAST", e))?;
        socket::setsockopt(&fd, sockopt::BindToDevice, &OsString::from(interface))
            .map_err(|e| context("SO_BINDTODEVICE", e))?;
        let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any)
            .map_err(|e| context("bind 0.0.0.0:68", e))?;
        let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
        Ok(DhcpSocket { socket })
    }

    pub async fn send(&self, packet: &[u8], to: Destination) -> io::Result<()> {
        let ip = match to {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Server(ip) => ip,
        };
        self.socket
            .send_to(packet, SocketAddrV4::new(ip, SERVER_PORT))
            .await
            .map(|_| ())
    }

    /// Receives one datagram that came from a DHCP server port.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if let std::net::SocketAddr::V4(from) = from {
                if from.port() == SERVER_PORT {
                    return Ok((n, from));
                }
            }
        }
    }
}
