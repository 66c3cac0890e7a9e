//! A small blocking HTTP/1.1 client: what probes, tests and the benchmark
//! need to talk to a served pod, and no more. Responses may be sized by
//! `Content-Length`, chunked, or delimited by the server closing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One answer: the status code and the body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, lossily decoded.
    pub body: String,
}

/// A connection that sends requests one after another (keep-alive).
pub struct Connection {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Connection {
    /// Connects to `addr`, giving up on any read or write after `timeout`.
    pub fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        Self::over(stream, addr, timeout)
    }

    /// Speaks HTTP over `stream`, already connected to `addr`.
    pub fn over(stream: TcpStream, addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    /// GET `path`; the connection stays open for the next request unless
    /// `close` is set (then the server is asked to close it).
    pub fn get(&mut self, path: &str, close: bool) -> std::io::Result<Response> {
        let connection = if close { "close" } else { "keep-alive" };
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wasmpod-test\r\nAccept: */*\r\nConnection: {connection}\r\n\r\n",
            self.host
        )?;
        self.read_response()
    }

    fn read_response(&mut self) -> std::io::Result<Response> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| invalid(format!("not an HTTP status line: {line:?}")))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(invalid("the connection closed inside the headers".into()));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| invalid(header.into()))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = line.trim_end().split(';').next().unwrap_or_default();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..])?;
                line.clear();
                self.reader.read_line(&mut line)?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// One GET of `path` from `addr` on a connection of its own.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Response> {
    Connection::open(addr, timeout)?.get(path, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `answers` in turn on one connection; returns its address.
    fn server(answers: Vec<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            for answer in answers {
                let mut line = String::new();
                while reader.read_line(&mut line).expect("read") > 2 {
                    line.clear();
                }
                reader
                    .get_mut()
                    .write_all(answer.as_bytes())
                    .expect("write");
            }
        });
        addr
    }

    #[test]
    fn reads_sized_chunked_and_closed_bodies_on_one_connection() {
        let addr = server(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            "HTTP/1.0 503 Busy\r\n\r\nuntil close",
        ]);
        let mut c = Connection::open(addr, Duration::from_secs(5)).expect("connect");
        let ok = |status, body: &str| Response {
            status,
            body: body.into(),
        };
        assert_eq!(c.get("/", false).expect("first"), ok(200, "hello"));
        assert_eq!(c.get("/x", false).expect("second"), ok(404, "abcde"));
        assert_eq!(c.get("/y", true).expect("third"), ok(503, "until close"));
    }

    #[test]
    fn refuses_what_is_not_http() {
        let addr = server(vec!["SSH-2.0-OpenSSH\r\n"]);
        let err = get(addr, "/", Duration::from_secs(5)).expect_err("not HTTP");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
