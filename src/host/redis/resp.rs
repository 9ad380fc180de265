//! Just enough of the Redis protocol (RESP2) for reads: connect, AUTH, SELECT, and one command
//! at a time. A client crate would bring a connection manager and a hundred commands we do
//! not use; a ping and a SCAN loop need a socket and a parser.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A Redis URL, split: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

impl Target {
    /// `host:port`, never the password.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses the URL; the error never repeats it (it may hold a password).
pub fn parse_url(text: &str) -> Result<Target, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("it is not a URL ({e})"))?;
    match url.scheme() {
        "redis" => {}
        "rediss" => return Err("TLS (rediss://) is not supported; use a redis:// URL".into()),
        other => {
            return Err(format!(
                "its scheme is '{other}', not redis; write it as redis://[:password@]host:port[/db]"
            ));
        }
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("it has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let decode = |s: &str| {
        percent_decode(s)
            .ok_or_else(|| "its user or password is not valid percent-encoding".to_string())
    };
    let username = Some(url.username())
        .filter(|u| !u.is_empty())
        .map(decode)
        .transpose()?;
    let password = url.password().map(decode).transpose()?;
    let path = url.path().trim_matches('/');
    let db = if path.is_empty() {
        0
    } else {
        path.parse()
            .map_err(|_| format!("'/{path}' is not a database number"))?
    };
    Ok(Target {
        host,
        port: url.port().unwrap_or(6379),
        username,
        password,
        db,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes: Vec<u8> =
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()?
            .1
            .into_owned()
            .into_bytes();
    String::from_utf8(bytes).ok()
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

impl Value {
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Why a connection or a command failed, before it is put in an operator's words.
#[derive(Debug)]
pub enum Failure {
    Io(std::io::Error),
    Timeout,
    /// The server answered with an error reply.
    Server(String),
    Protocol(String),
}

pub struct Connection {
    stream: BufReader<TcpStream>,
    timeout: Duration,
}

impl Connection {
    /// Connects, then AUTH and SELECT as the target says.
    pub async fn open(target: &Target, timeout: Duration) -> Result<Connection, Failure> {
        let stream = tokio::time::timeout(
            timeout,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(Failure::Io)?;
        stream.set_nodelay(true).map_err(Failure::Io)?;
        let mut conn = Connection {
            stream: BufReader::new(stream),
            timeout,
        };
        if let Some(password) = &target.password {
            match &target.username {
                Some(user) => {
                    conn.ok(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                        .await?
                }
                None => conn.ok(&[b"AUTH", password.as_bytes()]).await?,
            };
        }
        if target.db != 0 {
            conn.ok(&[b"SELECT", target.db.to_string().as_bytes()])
                .await?;
        }
        Ok(conn)
    }

    /// A command whose error reply is a failure.
    pub async fn ok(&mut self, args: &[&[u8]]) -> Result<Value, Failure> {
        match self.command(args).await? {
            Value::Error(e) => Err(Failure::Server(e)),
            other => Ok(other),
        }
    }

    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Value, Failure> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        let exchange = async {
            self.stream
                .get_mut()
                .write_all(&out)
                .await
                .map_err(Failure::Io)?;
            read_value(&mut self.stream).await
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::Timeout)?
    }
}

async fn read_line(stream: &mut BufReader<TcpStream>) -> Result<String, Failure> {
    let mut line = Vec::new();
    let n = stream
        .read_until(b'\n', &mut line)
        .await
        .map_err(Failure::Io)?;
    if n == 0 {
        return Err(Failure::Protocol("the server closed the connection".into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(Failure::Protocol("a reply line without CRLF".into()));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| Failure::Protocol("a reply line is not UTF-8".into()))
}

fn length(text: &str) -> Result<i64, Failure> {
    text.parse()
        .map_err(|_| Failure::Protocol(format!("'{text}' is not a length")))
}

/// Reads one reply; arrays are read iteratively so a nested reply cannot recurse deeply.
async fn read_value(stream: &mut BufReader<TcpStream>) -> Result<Value, Failure> {
    // Open arrays: (remaining elements, elements so far).
    let mut open: Vec<(usize, Vec<Value>)> = Vec::new();
    loop {
        let line = read_line(stream).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let mut value = match kind {
            "+" => Value::Simple(rest.to_string()),
            "-" => Value::Error(rest.to_string()),
            ":" => Value::Int(length(rest)?),
            "$" => match length(rest)? {
                n if n < 0 => Value::Bulk(None),
                n => {
                    let mut data = vec![0; n as usize + 2];
                    stream.read_exact(&mut data).await.map_err(Failure::Io)?;
                    data.truncate(n as usize);
                    Value::Bulk(Some(data))
                }
            },
            "*" => match length(rest)? {
                n if n < 0 => Value::Array(None),
                0 => Value::Array(Some(Vec::new())),
                n => {
                    open.push((n as usize, Vec::with_capacity(n.min(4096) as usize)));
                    continue;
                }
            },
            _ => return Err(Failure::Protocol(format!("unexpected reply '{line}'"))),
        };
        loop {
            let Some((remaining, items)) = open.last_mut() else {
                return Ok(value);
            };
            items.push(value);
            *remaining -= 1;
            if *remaining > 0 {
                break;
            }
            let (_, items) = open.pop().expect("an open array");
            value = Value::Array(Some(items));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_credentials_and_db() {
        let t = parse_url("redis://:s3cr%40t@127.0.0.1:6380/2").unwrap();
        assert_eq!((t.address().as_str(), t.db), ("127.0.0.1:6380", 2));
        assert_eq!(t.password.as_deref(), Some("s3cr@t"));
        assert_eq!(t.username, None);
        let t = parse_url("redis://app:pw@cache.internal").unwrap();
        assert_eq!((t.port, t.username.as_deref()), (6379, Some("app")));
        for bad in ["http://x", "rediss://x", "redis://x/abc", "nonsense"] {
            let err = parse_url(bad).err().expect("rejected");
            assert!(!err.contains("pw"), "{err}");
        }
    }
}
