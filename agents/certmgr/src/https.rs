//! A small HTTP/1.1 client over rustls, blocking, one request per connection
//! (`Connection: close`), bounded in time and size: all certmgr needs to talk to the CA, without
//! pulling hyper or the CA server into the node's binary.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// Longest status line + headers accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An `https://host[:port][/base]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing '/', possibly empty.
    pub base: String,
}

impl HttpsUrl {
    pub fn parse(url: &str) -> Result<HttpsUrl, HttpError> {
        let bad = |why: &str| HttpError::BadUrl {
            url: url.chars().take(200).collect(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("it does not start with https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it has no host, or has user information"));
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after the IPv6 address")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => 443,
        };
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the host contains spaces or control characters"));
        }
        Ok(HttpsUrl {
            host,
            port,
            base: path.trim_end_matches('/').to_string(),
        })
    }

    /// The name the server's certificate must carry.
    pub fn server_name(&self) -> Result<ServerName<'static>, HttpError> {
        ServerName::try_from(self.host.clone()).map_err(|_| HttpError::BadUrl {
            url: self.host.clone(),
            why: "not a valid DNS name or IP address".into(),
        })
    }
}

impl std::fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}{}", self.host, self.port, self.base)
        } else {
            write!(f, "https://{}:{}{}", self.host, self.port, self.base)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad CA URL {url:?}: {why}; write it like https://ca.example:8443")]
    BadUrl { url: String, why: String },
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        #[source]
        source: rustls::Error,
    },
    #[error("talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("{addr} sent a malformed HTTP reply: {why}")]
    BadReply { addr: String, why: String },
}

impl HttpError {
    /// The OS error behind a failed connection or exchange, if any.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            HttpError::Connect { source, .. } | HttpError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// The errno behind a failed connection, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            HttpError::Connect { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A reply: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Timeouts and limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    pub io: Duration,
    pub max_body: usize,
}

/// One request: connect, handshake, send, read the whole reply, close. `body` is sent as
/// JSON when given (POST), otherwise the request is a GET.
pub fn request(
    url: &HttpsUrl,
    config: Arc<ClientConfig>,
    path: &str,
    body: Option<&[u8]>,
    limits: Limits,
) -> Result<Reply, HttpError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|source| HttpError::Resolve {
            host: url.host.clone(),
            source,
        })?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, limits.connect) {
            Ok(s) => {
                tcp = Some((s, *addr));
                break;
            }
            Err(e) => last = Some((e, *addr)),
        }
    }
    let (tcp, addr) = match (tcp, last) {
        (Some(t), _) => t,
        (None, Some((source, addr))) => {
            return Err(HttpError::Connect {
                addr: addr.to_string(),
                source,
            })
        }
        (None, None) => {
            return Err(HttpError::Resolve {
                host: url.host.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no address"),
            })
        }
    };
    let shown = addr.to_string();
    let io_err = |source: io::Error| HttpError::Io {
        addr: shown.clone(),
        source,
    };
    tcp.set_read_timeout(Some(limits.io)).map_err(io_err)?;
    tcp.set_write_timeout(Some(limits.io)).map_err(io_err)?;
    let _ = tcp.set_nodelay(true);
    let conn =
        ClientConnection::new(config, url.server_name()?).map_err(|source| HttpError::Tls {
            addr: shown.clone(),
            source,
        })?;
    let mut tls = StreamOwned::new(conn, tcp);
    // Finish the handshake first, so that a refused server is told apart from a bad reply and
    // nothing of the request is written before the server is verified.
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            return Err(classify(e, &shown));
        }
    }
    let full_path = format!("{}{}", url.base, path);
    let head = match body {
        Some(b) => format!(
            "POST {full_path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            host_header(url),
            b.len()
        ),
        None => format!(
            "GET {full_path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            host_header(url)
        ),
    };
    let mut out = Vec::with_capacity(head.len() + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(head.as_bytes());
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    let written = tls.write_all(&out).and_then(|_| tls.flush());
    // The body may hold a token: do not leave it behind in freed memory.
    zeroize::Zeroize::zeroize(&mut out);
    written.map_err(|e| classify(e, &shown))?;
    read_reply(&mut tls, &shown, limits.max_body)
}

fn host_header(url: &HttpsUrl) -> String {
    if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    }
}

/// A TLS alert or verification failure inside an io::Error becomes `HttpError::Tls`.
fn classify(e: io::Error, addr: &str) -> HttpError {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return HttpError::Tls {
            addr: addr.to_string(),
            source: inner.clone(),
        };
    }
    HttpError::Io {
        addr: addr.to_string(),
        source: e,
    }
}

/// Reads status line, headers and a body framed by Content-Length, chunked encoding or the
/// end of the connection.
fn read_reply(stream: &mut impl Read, addr: &str, max_body: usize) -> Result<Reply, HttpError> {
    let bad = |why: String| HttpError::BadReply {
        addr: addr.to_string(),
        why,
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad(format!("headers longer than {MAX_HEAD} bytes")));
        }
        let n = read_some(stream, &mut chunk, addr)?;
        if n == 0 {
            return Err(bad("the connection closed before the headers ended".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| {
            bad(format!(
                "status line {:?}",
                status_line.escape_debug().to_string()
            ))
        })?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = Some(
                    v.parse::<usize>()
                        .map_err(|_| bad(format!("Content-Length {v:?}")))?,
                );
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut rest = buf.split_off(head_end + 4);
    let body = if chunked {
        read_chunked(stream, rest, addr, max_body)?
    } else if let Some(len) = length {
        if len > max_body {
            return Err(bad(format!("a body of {len} bytes (at most {max_body})")));
        }
        while rest.len() < len {
            let n = read_some(stream, &mut chunk, addr)?;
            if n == 0 {
                return Err(bad("the connection closed in the middle of the body".into()));
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else {
        loop {
            if rest.len() > max_body {
                return Err(bad(format!("a body over {max_body} bytes")));
            }
            let n = read_some(stream, &mut chunk, addr)?;
            if n == 0 {
                break rest;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
    };
    Ok(Reply { status, body })
}

fn read_chunked(
    stream: &mut impl Read,
    mut data: Vec<u8>,
    addr: &str,
    max_body: usize,
) -> Result<Vec<u8>, HttpError> {
    let bad = |why: &str| HttpError::BadReply {
        addr: addr.to_string(),
        why: why.to_string(),
    };
    let mut chunk = [0u8; 4096];
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&data, b"\r\n") {
                break i;
            }
            if data.len() > 64 {
                return Err(bad("a chunk size line is too long"));
            }
            let n = read_some(stream, &mut chunk, addr)?;
            if n == 0 {
                return Err(bad("the connection closed inside a chunk header"));
            }
            data.extend_from_slice(&chunk[..n]);
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("a chunk size is not hexadecimal"))?;
        data.drain(..line_end + 2);
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > max_body {
            return Err(bad("the chunked body is too large"));
        }
        while data.len() < size + 2 {
            let n = read_some(stream, &mut chunk, addr)?;
            if n == 0 {
                return Err(bad("the connection closed inside a chunk"));
            }
            data.extend_from_slice(&chunk[..n]);
        }
        body.extend_from_slice(&data[..size]);
        data.drain(..size + 2);
    }
}

/// One read; a peer that closes without TLS close_notify counts as the end of the stream.
fn read_some(stream: &mut impl Read, buf: &mut [u8], addr: &str) -> Result<usize, HttpError> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(classify(e, addr)),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_ports_paths_and_ipv6() {
        let u = HttpsUrl::parse("https://10.0.2.2:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base.as_str()),
            ("10.0.2.2", 8443, "")
        );
        assert_eq!(u.to_string(), "https://10.0.2.2:8443");
        let u = HttpsUrl::parse("https://ca.example/tessera/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base.as_str()),
            ("ca.example", 443, "/tessera")
        );
        let u = HttpsUrl::parse("https://[fd00::1]:8443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 8443));
        assert_eq!(u.to_string(), "https://[fd00::1]:8443");
        for bad in [
            "http://x",
            "https://",
            "https://u@x",
            "https://x:port",
            "https://a b",
        ] {
            assert!(HttpsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_framed_by_length_chunks_or_close() {
        let r = read_reply(
            &mut &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello trailing"[..],
            "a",
            100,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = read_reply(
            &mut &b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n"[..],
            "a",
            100,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (409, &b"abcde"[..]));
        let r = read_reply(&mut &b"HTTP/1.0 200 OK\r\n\r\nto the end"[..], "a", 100).unwrap();
        assert_eq!(r.body, b"to the end");
        assert!(read_reply(
            &mut &b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"[..],
            "a",
            100
        )
        .is_err());
        assert!(read_reply(&mut &b"SSH-2.0-OpenSSH\r\n\r\n"[..], "a", 100).is_err());
        assert!(read_reply(
            &mut &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..],
            "a",
            100
        )
        .is_err());
    }
}
