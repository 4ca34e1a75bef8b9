//! A small HTTP/1.1 client over `std::net::TcpStream`: enough for the instance metadata
//! service (plain HTTP on a link-local address) and `tessera.config=http://…`. One request per
//! connection (`Connection: close`), bounded in time and size, no redirects. HTTPS waits for
//! the identity crate's TLS client.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Longest status line + headers accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(format!("{s:?}: https is not supported here yet (it comes with the identity crate's TLS client); serve the document over http:// or put it on a NoCloud volume"));
        }
        if !lower.starts_with("http://") {
            return Err(format!(
                "{s:?} is not an http:// URL; write it like http://10.0.2.2:8080/node1.toml"
            ));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{s:?}: URL contains {c:?}"));
        }
        let rest = &s[7..];
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "{s:?}: user names and passwords in URLs are not supported"
            ));
        }
        let (host, port) =
            crate::values::host_port(authority).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(HttpUrl {
            host,
            port: port.unwrap_or(80),
            path,
        })
    }

    /// The same server with another path.
    pub fn with_path(&self, path: &str) -> HttpUrl {
        HttpUrl {
            path: path.to_string(),
            ..self.clone()
        }
    }

    /// `host:port` as the Host header wants it.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("{url}: {source}")]
    Io { url: String, source: io::Error },
    #[error("{url}: timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: not an HTTP response ({reason})")]
    Malformed { url: String, reason: String },
    #[error("{url}: response body larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: writing the body: {source}")]
    Sink { url: String, source: io::Error },
}

impl HttpError {
    /// The network has no way to the server at all (no route, interface down): waiting a few
    /// hundred milliseconds will not help, unlike a refused connection.
    pub fn no_route(&self) -> bool {
        match self {
            HttpError::Connect { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::EADDRNOTAVAIL)
            ),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Timeouts and limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// For the whole exchange after connecting.
    pub timeout: Duration,
    pub max_body: usize,
}

/// Sends one request with an empty body and reads the whole response.
pub fn request(
    method: &str,
    url: &HttpUrl,
    headers: &[(&str, &str)],
    limits: Limits,
) -> Result<Response, HttpError> {
    connect(method, url, headers, limits)?.read_response(limits.max_body)
}

/// Connects and sends the request head (an empty body).
fn connect(
    method: &str,
    url: &HttpUrl,
    headers: &[(&str, &str)],
    limits: Limits,
) -> Result<Conn, HttpError> {
    let shown = url.to_string();
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tessera-userdata\r\nAccept: */*\r\nConnection: close\r\n",
        url.path,
        url.authority()
    );
    for (k, v) in headers {
        if k.contains([':', '\r', '\n']) || v.contains(['\r', '\n']) {
            return Err(HttpError::Malformed {
                url: shown,
                reason: format!("refusing to send header {k:?} with a line break"),
            });
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");

    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Resolve {
            host: url.host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut stream = None;
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, limits.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some((addr, source))) => {
            return Err(HttpError::Connect {
                addr: addr.to_string(),
                source,
            })
        }
        (None, None) => {
            return Err(HttpError::Resolve {
                host: url.host.clone(),
                reason: "no addresses".into(),
            })
        }
    };
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        pos: 0,
        deadline: Instant::now() + limits.timeout,
        timeout: limits.timeout,
        url: shown,
    };
    conn.write_all(head.as_bytes())?;
    Ok(conn)
}

/// What [`download`] got: the status, and how many body bytes went into the sink (none
/// unless the status is 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub status: u16,
    pub reason: String,
    pub bytes: u64,
}

/// GETs `url` and writes a 200 response's body into `sink` as it arrives (at most
/// `limits.max_body` bytes), so that a large file never sits in memory. Other statuses leave
/// the sink untouched.
pub fn download(
    url: &HttpUrl,
    sink: &mut dyn Write,
    limits: Limits,
) -> Result<Download, HttpError> {
    let mut conn = connect("GET", url, &[], limits)?;
    let head = conn.read_head()?;
    let mut download = Download {
        status: head.status,
        reason: head.reason.clone(),
        bytes: 0,
    };
    if head.status == 200 {
        let mut counted = Counted { inner: sink, n: 0 };
        conn.read_body(&head, limits.max_body, &mut counted)?;
        download.bytes = counted.n;
    }
    Ok(download)
}

/// A sink that counts what passes through it.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    deadline: Instant,
    timeout: Duration,
    url: String,
}

impl Conn {
    fn left(&self) -> Result<Duration, HttpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        Ok(left)
    }

    fn timed_out(&self) -> HttpError {
        HttpError::Timeout {
            url: self.url.clone(),
            after: self.timeout,
        }
    }

    fn io(&self, e: io::Error) -> HttpError {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return self.timed_out();
        }
        HttpError::Io {
            url: self.url.clone(),
            source: e,
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> HttpError {
        HttpError::Malformed {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        let left = self.left()?;
        self.stream
            .set_write_timeout(Some(left))
            .map_err(|e| self.io(e))?;
        let r = self.stream.write_all(bytes);
        r.map_err(|e| self.io(e))
    }

    /// Reads more bytes into the buffer; false at end of stream.
    fn fill(&mut self) -> Result<bool, HttpError> {
        let left = self.left()?;
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| self.io(e))?;
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// The next CRLF- (or LF-) terminated line, without its terminator.
    fn line(&mut self, limit: usize) -> Result<String, HttpError> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let raw = &self.buf[self.pos..self.pos + i];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.pos += i + 1;
                return Ok(line);
            }
            if self.buf.len() - self.pos > limit {
                return Err(self.malformed("line too long"));
            }
            if !self.fill()? {
                return Err(self.malformed(if self.buf.is_empty() {
                    "the server closed the connection without answering".to_string()
                } else {
                    "the response ends in the middle of a line".to_string()
                }));
            }
        }
    }

    /// Moves the next `n` body bytes into `sink`, a buffer at a time.
    fn copy(&mut self, mut n: usize, sink: &mut dyn Write) -> Result<(), HttpError> {
        let wanted = n;
        while n > 0 {
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
                if !self.fill()? {
                    return Err(
                        self.malformed(format!("body cut short: {} of {wanted} bytes", wanted - n))
                    );
                }
            }
            let k = n.min(self.buf.len() - self.pos);
            self.sink(sink, k)?;
            n -= k;
        }
        Ok(())
    }

    /// Writes the next `k` buffered bytes into `sink`.
    fn sink(&mut self, sink: &mut dyn Write, k: usize) -> Result<(), HttpError> {
        let r = sink.write_all(&self.buf[self.pos..self.pos + k]);
        r.map_err(|source| HttpError::Sink {
            url: self.url.clone(),
            source,
        })?;
        self.pos += k;
        Ok(())
    }

    fn read_response(&mut self, max_body: usize) -> Result<Response, HttpError> {
        let mut response = self.read_head()?;
        let mut body = Vec::new();
        self.read_body(&response, max_body, &mut body)?;
        response.body = body;
        Ok(response)
    }

    /// The status line and headers (the body left empty).
    fn read_head(&mut self) -> Result<Response, HttpError> {
        let status_line = self.line(MAX_HEAD)?;
        let (status, reason) = parse_status_line(&status_line).ok_or_else(|| {
            let shown: String = status_line.chars().take(40).collect();
            self.malformed(format!("status line {shown:?}"))
        })?;
        let mut headers = Vec::new();
        let mut head_len = status_line.len();
        loop {
            let line = self.line(MAX_HEAD)?;
            head_len += line.len() + 2;
            if head_len > MAX_HEAD {
                return Err(self.malformed("headers longer than 16 KiB"));
            }
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| self.malformed("header line without ':'"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        })
    }

    /// The body (chunked, by Content-Length, or to the end of the stream) into `sink`.
    fn read_body(
        &mut self,
        head: &Response,
        max_body: usize,
        sink: &mut dyn Write,
    ) -> Result<(), HttpError> {
        let header = |name: &str| head.header(name);
        let too_large = |url: &str| HttpError::TooLarge {
            url: url.to_string(),
            limit: max_body,
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            let mut total = 0usize;
            loop {
                let size_line = self.line(1024)?;
                let hex = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| self.malformed(format!("bad chunk size {hex:?}")))?;
                if size == 0 {
                    while !self.line(MAX_HEAD)?.is_empty() {}
                    break;
                }
                total = total.saturating_add(size);
                if total > max_body {
                    return Err(too_large(&self.url));
                }
                self.copy(size, sink)?;
                if !self.line(2)?.is_empty() {
                    return Err(self.malformed("chunk not followed by CRLF"));
                }
            }
        } else if let Some(len) = header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| self.malformed(format!("bad Content-Length {len:?}")))?;
            if len > max_body {
                return Err(too_large(&self.url));
            }
            self.copy(len, sink)?;
        } else {
            let mut total = 0usize;
            loop {
                let k = self.buf.len() - self.pos;
                total += k;
                if total > max_body {
                    return Err(too_large(&self.url));
                }
                self.sink(sink, k)?;
                self.buf.clear();
                self.pos = 0;
                if !self.fill()? {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// `HTTP/1.1 200 OK` → (200, "OK").
fn parse_status_line(line: &str) -> Option<(u16, String)> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let mut parts = rest.splitn(3, ' ');
    let minor = parts.next()?;
    if minor.len() != 1 || !minor.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((code.parse().ok()?, parts.next().unwrap_or("").to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(reply: &'static [u8]) -> (HttpUrl, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&b[..n]);
            }
            s.write_all(reply).unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (
            HttpUrl::parse(&format!("http://127.0.0.1:{port}/x?y=1")).unwrap(),
            handle,
        )
    }

    fn limits() -> Limits {
        Limits {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            max_body: 100,
        }
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://Host.example:8080/a/b?c").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("host.example", 8080, "/a/b?c")
        );
        assert_eq!(HttpUrl::parse("http://h").unwrap().path, "/");
        assert_eq!(HttpUrl::parse("http://h?x").unwrap().path, "/?x");
        assert_eq!(
            HttpUrl::parse("http://[fd00::1]:81/p").unwrap().to_string(),
            "http://[fd00::1]:81/p"
        );
        assert!(HttpUrl::parse("https://h/")
            .unwrap_err()
            .contains("not supported"));
        assert!(HttpUrl::parse("ftp://h/").is_err());
        assert!(HttpUrl::parse("http://u:p@h/").is_err());
        assert!(HttpUrl::parse("http://h:99999/").is_err());
    }

    #[test]
    fn content_length_body_and_request_line() {
        let (url, server) =
            serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        let r = request("PUT", &url, &[("X-Test", "1")], limits()).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(r.header("x-a"), Some("b"));
        let req = server.join().unwrap();
        assert!(req.starts_with("PUT /x?y=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nX-Test: 1\r\n"));
        assert!(req.contains("\r\nContent-Length: 0\r\n"));
    }

    #[test]
    fn chunked_body() {
        let (url, _s) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        );
        let r = request("GET", &url, &[], limits()).unwrap();
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn download_streams_a_large_body_into_the_sink_and_leaves_it_untouched_on_an_error_status() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut reply =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        reply.extend_from_slice(&body);
        let (url, _s) = serve_once(Box::leak(reply.into_boxed_slice()));
        let mut sink = Vec::new();
        let big = Limits {
            max_body: 1 << 20,
            ..limits()
        };
        let d = download(&url, &mut sink, big).unwrap();
        assert_eq!((d.status, d.bytes), (200, body.len() as u64));
        assert!(sink == body, "the body arrives intact");

        let (url, _s) = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop");
        let mut sink = Vec::new();
        let d = download(&url, &mut sink, big).unwrap();
        assert_eq!(
            (d.status, d.reason.as_str(), d.bytes),
            (404, "Not Found", 0)
        );
        assert!(sink.is_empty());

        // A sink that fails (a full disk) is its own error, not the server's.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (url, _s) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        let e = download(&url, &mut Full, big).unwrap_err();
        assert!(
            matches!(&e, HttpError::Sink { source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
            "{e}"
        );
        // Past the limit, and cut short.
        let (url, _s) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\nx");
        assert!(matches!(
            download(&url, &mut Vec::new(), limits()),
            Err(HttpError::TooLarge { .. })
        ));
        let (url, _s) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        let e = download(&url, &mut Vec::new(), limits())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut short: 3 of 10"), "{e}");
    }

    #[test]
    fn body_until_close() {
        let (url, _s) = serve_once(b"HTTP/1.0 404 Not Found\r\n\r\nnope");
        let r = request("GET", &url, &[], limits()).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
        assert_eq!(r.body, b"nope");
    }

    #[test]
    fn garbage_and_oversize_are_errors() {
        let (url, _s) = serve_once(b"SSH-2.0-OpenSSH_9.2\r\n");
        let e = request("GET", &url, &[], limits()).unwrap_err();
        assert!(e.to_string().contains("not an HTTP response"), "{e}");
        let (url, _s) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        assert!(matches!(
            request("GET", &url, &[], limits()).unwrap_err(),
            HttpError::TooLarge { .. }
        ));
        let (url, _s) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        assert!(request("GET", &url, &[], limits())
            .unwrap_err()
            .to_string()
            .contains("cut short"));
        let (url, _s) = serve_once(b"");
        assert!(request("GET", &url, &[], limits())
            .unwrap_err()
            .to_string()
            .contains("without answering"));
    }

    #[test]
    fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!(
            "http://127.0.0.1:{}/",
            listener.local_addr().unwrap().port()
        ))
        .unwrap();
        let start = Instant::now();
        let e = request(
            "GET",
            &url,
            &[],
            Limits {
                timeout: Duration::from_millis(300),
                ..limits()
            },
        )
        .unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(listener);
    }

    #[test]
    fn refused_connection_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = request("GET", &url, &[], limits()).unwrap_err();
        assert!(matches!(e, HttpError::Connect { .. }), "{e}");
        assert!(!e.no_route());
    }
}
