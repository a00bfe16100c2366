//! A minimal PostgreSQL protocol client for the request hot path: a whole request
//! transaction in ONE pipeline with ONE `Sync`.
//!
//! tokio-postgres ends every statement with its own `Sync`, so a request transaction costs
//! four statements (`BEGIN`, the role/claims setup, the query, `COMMIT`), four
//! `ReadyForQuery` flushes and four transaction-state changes on the server. The extended
//! protocol runs everything between two `Sync`s in one implicit transaction, in which
//! `set_config(…, true)` holds until the `Sync` commits it; so setup + query + `Sync` is
//! the same transaction with half the statements and one flush (measured with pgbench in
//! docs/benchmarks.md, REST). This module sends exactly that and nothing else:
//!
//! - text-format parameters and results only (the REST engine binds every value as text
//!   and builds its JSON in SQL);
//! - named prepared statements cached per connection, parsed in the same pipeline the first
//!   time they are used (no extra round trip), dropped when the schema cache reloads;
//! - trust, cleartext, MD5 and SCRAM-SHA-256 authentication over TCP or a unix socket
//!   (no TLS: the main pool connects without TLS too).
//!
//! A connection is returned to the pool only after its `ReadyForQuery` was read back in the
//! idle state; one dropped mid-pipeline (a cancelled request) is closed, so the server
//! rolls its implicit transaction back.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{DataRowBody, ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bumped when the schema cache reloads: every connection closes its prepared statements
/// before its next pipeline.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Drops every connection's prepared statements (lazily, on each connection's next use).
pub fn invalidate_statements() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Prepared statements kept per connection before the cache is reset.
const STATEMENT_CACHE_MAX: usize = super::tx::STATEMENT_CACHE_MAX;

/// An error the server sent (`ErrorResponse`).
#[derive(Debug, Clone, Default)]
pub struct DbError {
    /// SQLSTATE.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// `DETAIL`.
    pub detail: Option<String>,
    /// `HINT`.
    pub hint: Option<String>,
    /// `ERROR`, `FATAL`, … (non-localised when the server sends it).
    pub severity: String,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.severity, self.message, self.code)
    }
}

/// What can go wrong on a wire connection.
#[derive(Debug)]
pub enum WireError {
    /// The server refused a statement; the connection is still usable.
    Db(DbError),
    /// The connection failed (or never opened).
    Io(io::Error),
    /// The server said something this client does not expect; the connection is closed.
    Protocol(String),
    /// No connection became free within the pool's wait time.
    Timeout,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Db(e) => e.fmt(f),
            WireError::Io(e) => write!(f, "database connection: {e}"),
            WireError::Protocol(m) => write!(f, "database protocol: {m}"),
            WireError::Timeout => f.write_str("no database connection became free in time"),
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// One statement of a pipeline: SQL text and its parameters, all sent as text.
pub struct Query<'a> {
    /// The statement (prepared once per connection).
    pub sql: &'a str,
    /// `$1`, `$2`, … as text; `None` is SQL NULL.
    pub params: &'a [Option<&'a str>],
}

/// A result row: every column as text (`None` for NULL).
pub type Row = Vec<Option<String>>;

/// One statement's result: its rows and the row count of its command tag (`INSERT 0 3`,
/// `UPDATE 2`, `DELETE 1`, `SELECT 5`: the last number; 0 for tags without one).
#[derive(Debug, Default)]
pub struct Done {
    pub rows: Vec<Row>,
    pub affected: u64,
}

/// The row count at the end of a command tag.
fn tag_count(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Unix(s) => s.read_buf(buf).await,
        }
    }

    /// Whether the server has closed the connection or sent something unasked (a FATAL
    /// before closing): an idle connection must have nothing to read.
    fn is_dead(&self) -> bool {
        let mut probe = [0u8; 1];
        let r = match self {
            Stream::Tcp(s) => s.try_read(&mut probe),
            Stream::Unix(s) => s.try_read(&mut probe),
        };
        !matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
struct Target {
    host: tokio_postgres::config::Host,
    port: u16,
    user: String,
    password: Option<Vec<u8>>,
    dbname: String,
    application_name: Option<String>,
    options: Option<String>,
    connect_timeout: Duration,
}

/// One connection speaking the protocol itself.
pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// SQL text → prepared statement name.
    /// Keyed by SQL text, hashed with foldhash (randomly seeded per process): SipHash of a
    /// few hundred bytes of SQL, twice per request, was ~2k instructions of a single-row GET.
    statements: HashMap<Box<str>, Box<str>, foldhash::fast::RandomState>,
    next_name: u64,
    generation: u64,
    /// False from the first byte written until `ReadyForQuery` (idle) is read back.
    clean: bool,
    /// The role this client last set for the session, when nothing since can have changed
    /// it unseen (see `RequestTx::pipelined_wire`): a belief, always checked by the server.
    role: Option<Box<str>>,
    /// The thread (an actix worker's single-threaded runtime) whose reactor the socket is
    /// registered with: see [`Pool::get`].
    owner: std::thread::ThreadId,
}

impl Conn {
    async fn connect(t: &Target) -> Result<Conn, WireError> {
        let stream = tokio::time::timeout(t.connect_timeout, async {
            Ok::<_, io::Error>(match &t.host {
                tokio_postgres::config::Host::Tcp(h) => {
                    let s = TcpStream::connect((h.as_str(), t.port)).await?;
                    s.set_nodelay(true)?;
                    Stream::Tcp(s)
                }
                tokio_postgres::config::Host::Unix(dir) => Stream::Unix(
                    UnixStream::connect(dir.join(format!(".s.PGSQL.{}", t.port))).await?,
                ),
            })
        })
        .await
        .map_err(|_| {
            WireError::Io(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        })??;
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(4 * 1024),
            statements: HashMap::default(),
            next_name: 0,
            generation: GENERATION.load(Ordering::Relaxed),
            clean: false,
            role: None,
            owner: std::thread::current().id(),
        };
        conn.startup(t).await?;
        conn.clean = true;
        Ok(conn)
    }

    async fn startup(&mut self, t: &Target) -> Result<(), WireError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &t.user),
            ("database", &t.dbname),
            ("client_encoding", "UTF8"),
        ];
        if let Some(a) = &t.application_name {
            params.push(("application_name", a));
        }
        if let Some(o) = &t.options {
            params.push(("options", o));
        }
        frontend::startup_message(params.iter().copied(), &mut self.wbuf)?;
        self.flush().await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next_message().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let pw = t.password.as_deref().ok_or_else(no_password)?;
                    frontend::password_message(pw, &mut self.wbuf)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = t.password.as_deref().ok_or_else(no_password)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        t.user.as_bytes(),
                        pw,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(m) = mechanisms.next()? {
                        scram_offered |= m == SCRAM_SHA_256;
                    }
                    if !scram_offered {
                        return Err(WireError::Protocol(
                            "the server offers no supported SASL mechanism".into(),
                        ));
                    }
                    let pw = t.password.as_deref().ok_or_else(no_password)?;
                    let s = ScramSha256::new(pw, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.wbuf)?;
                    self.flush().await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| WireError::Protocol("unexpected SASL continue".into()))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| WireError::Protocol("unexpected SASL final".into()))?;
                    s.finish(body.data())?;
                }
                Message::ErrorResponse(body) => return Err(WireError::Db(db_error(&body)?)),
                Message::ReadyForQuery(_) => return Ok(()),
                Message::BackendKeyData(_)
                | Message::ParameterStatus(_)
                | Message::NoticeResponse(_) => {}
                _ => {
                    return Err(WireError::Protocol(
                        "unsupported authentication method (trust, password, md5 and \
                         scram-sha-256 are)"
                            .into(),
                    ))
                }
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        let r = self.stream.write_all(&self.wbuf).await;
        self.wbuf.clear();
        r
    }

    async fn next_message(&mut self) -> Result<Message, WireError> {
        loop {
            if let Some(m) = Message::parse(&mut self.rbuf)? {
                return Ok(m);
            }
            self.rbuf.reserve(8 * 1024);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }

    /// Runs `queries` in one pipeline ending in one `Sync`: one implicit transaction,
    /// committed by the `Sync` unless a statement fails (then nothing of it is kept). Returns
    /// each statement's rows, or the first error.
    pub async fn pipeline(&mut self, queries: &[Query<'_>]) -> Result<Vec<Done>, WireError> {
        self.clean = false;
        let generation = GENERATION.load(Ordering::Relaxed);
        if generation != self.generation || self.statements.len() > STATEMENT_CACHE_MAX {
            for name in self.statements.values() {
                frontend::close(b'S', name, &mut self.wbuf)?;
            }
            self.statements.clear();
            self.generation = generation;
        }
        // The names parsed in this pipeline, by query; kept once `ParseComplete` arrives.
        let mut parsed: Vec<Option<Box<str>>> = Vec::with_capacity(queries.len());
        for q in queries {
            let name = match self.statements.get(q.sql) {
                Some(n) => {
                    parsed.push(None);
                    n.clone()
                }
                None => {
                    self.next_name += 1;
                    let n: Box<str> = format!("fxw{}", self.next_name).into();
                    frontend::parse(&n, q.sql, std::iter::empty(), &mut self.wbuf)?;
                    parsed.push(Some(n.clone()));
                    n
                }
            };
            frontend::bind(
                "",
                &name,
                std::iter::empty(),
                q.params.iter(),
                |v, buf| match v {
                    Some(s) => {
                        buf.extend_from_slice(s.as_bytes());
                        Ok(IsNull::No)
                    }
                    None => Ok(IsNull::Yes),
                },
                std::iter::empty(),
                &mut self.wbuf,
            )
            .map_err(|e| match e {
                frontend::BindError::Conversion(e) => WireError::Protocol(e.to_string()),
                frontend::BindError::Serialization(e) => WireError::Io(e),
            })?;
            frontend::execute("", 0, &mut self.wbuf)?;
        }
        frontend::sync(&mut self.wbuf);
        self.flush().await?;

        let mut results: Vec<Done> = Vec::with_capacity(queries.len());
        let mut rows: Vec<Row> = Vec::new();
        let mut error: Option<DbError> = None;
        loop {
            match self.next_message().await? {
                Message::ParseComplete => {
                    if let Some(Some(name)) = parsed.get_mut(results.len()).map(Option::take) {
                        let sql = queries[results.len()].sql;
                        self.statements.insert(sql.into(), name);
                    }
                }
                Message::BindComplete | Message::CloseComplete => {}
                Message::DataRow(body) => rows.push(decode_row(&body)?),
                Message::CommandComplete(body) => {
                    let affected = body.tag().map(tag_count).unwrap_or(0);
                    results.push(Done {
                        rows: std::mem::take(&mut rows),
                        affected,
                    });
                }
                Message::EmptyQueryResponse => results.push(Done {
                    rows: std::mem::take(&mut rows),
                    affected: 0,
                }),
                Message::ErrorResponse(body) => {
                    let e = db_error(&body)?;
                    if error.is_none() {
                        error = Some(e);
                    }
                }
                Message::ReadyForQuery(body) => {
                    // Idle: the implicit transaction ended (committed, or rolled back by
                    // the error). Anything else would leave state for the next request.
                    if body.status() != b'I' {
                        return Err(WireError::Protocol(format!(
                            "transaction state {:?} after Sync",
                            body.status() as char
                        )));
                    }
                    self.clean = true;
                    return match error {
                        Some(e) => Err(WireError::Db(e)),
                        None if results.len() == queries.len() => Ok(results),
                        None => Err(WireError::Protocol(format!(
                            "{} results for {} statements",
                            results.len(),
                            queries.len()
                        ))),
                    };
                }
                Message::NoticeResponse(_)
                | Message::ParameterStatus(_)
                | Message::NotificationResponse(_) => {}
                _ => return Err(WireError::Protocol("unexpected message".into())),
            }
        }
    }
}

fn no_password() -> WireError {
    WireError::Protocol("the server asks for a password and none is configured".into())
}

fn decode_row(body: &DataRowBody) -> Result<Row, WireError> {
    let buf = body.buffer();
    let mut out = Vec::with_capacity(8);
    let mut ranges = body.ranges();
    while let Some(r) = ranges.next()? {
        out.push(match r {
            Some(r) => Some(
                String::from_utf8(buf[r].to_vec())
                    .map_err(|_| WireError::Protocol("a text column is not UTF-8".into()))?,
            ),
            None => None,
        });
    }
    Ok(out)
}

fn db_error(body: &ErrorResponseBody) -> Result<DbError, WireError> {
    let mut e = DbError::default();
    let mut fields = body.fields();
    while let Some(f) = fields.next()? {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            b'V' => e.severity = v,
            b'S' if e.severity.is_empty() => e.severity = v,
            _ => {}
        }
    }
    Ok(e)
}

/// A pool of wire connections, bounded like the main pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    wait: Duration,
}

/// A checked-out connection; back to the pool on drop when clean, closed otherwise.
pub struct Pooled {
    conn: Option<Conn>,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    /// [`Conn::pipeline`] on this connection.
    pub async fn pipeline(&mut self, queries: &[Query<'_>]) -> Result<Vec<Done>, WireError> {
        match self.conn.as_mut() {
            Some(c) => c.pipeline(queries).await,
            None => Err(WireError::Protocol("connection already returned".into())),
        }
    }

    /// Whether the connection was opened on the calling thread (its socket is registered
    /// with this thread's reactor).
    pub fn opened_here(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.owner == std::thread::current().id())
    }

    /// The role this client believes the session runs as (`None`: unknown).
    pub fn role(&self) -> Option<&str> {
        self.conn.as_ref().and_then(|c| c.role.as_deref())
    }

    /// Records (or forgets, with `None`) the role the session runs as.
    pub fn set_role(&mut self, role: Option<&str>) {
        if let Some(c) = self.conn.as_mut() {
            if c.role.as_deref() != role {
                c.role = role.map(Into::into);
            }
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if c.clean {
                if let Ok(mut idle) = self.inner.idle.lock() {
                    idle.push(c);
                }
            }
        }
    }
}

impl Pool {
    /// A pool for `pg`'s first host; `None` when the settings need something this client
    /// does not speak (TLS required), so callers keep using the main pool.
    pub fn new(pg: &tokio_postgres::Config, size: usize, wait: Duration) -> Option<Pool> {
        if matches!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require) {
            return None;
        }
        let host = pg.get_hosts().first()?.clone();
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let user = pg.get_user()?.to_string();
        let target = Target {
            host,
            port,
            dbname: pg.get_dbname().unwrap_or(&user).to_string(),
            user,
            password: pg.get_password().map(<[u8]>::to_vec),
            application_name: pg.get_application_name().map(str::to_string),
            options: pg.get_options().map(str::to_string),
            connect_timeout: pg.get_connect_timeout().copied().unwrap_or(wait),
        };
        Some(Pool {
            inner: Arc::new(Inner {
                target,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size.max(1))),
                wait,
            }),
        })
    }

    /// A connection: an idle one that is still alive — one opened on this thread when there
    /// is one — or a new one.
    pub async fn get(&self) -> Result<Pooled, WireError> {
        let permit =
            tokio::time::timeout(self.inner.wait, self.inner.permits.clone().acquire_owned())
                .await
                .map_err(|_| WireError::Timeout)?
                .map_err(|_| WireError::Timeout)?;
        let me = std::thread::current().id();
        loop {
            // An idle connection opened on this thread first: its socket is registered with
            // this thread's reactor, so its readiness wakes this worker directly instead of
            // the other worker's reactor waking this one (a cross-thread wake-up per
            // request, and a delay whenever that worker is busy).
            let idle = self.inner.idle.lock().ok().and_then(|mut v| {
                let i = v
                    .iter()
                    .rposition(|c| c.owner == me)
                    .or(v.len().checked_sub(1))?;
                Some(v.swap_remove(i))
            });
            match idle {
                Some(c) if c.stream.is_dead() => continue,
                Some(c) => {
                    return Ok(Pooled {
                        conn: Some(c),
                        inner: self.inner.clone(),
                        _permit: permit,
                    })
                }
                None => break,
            }
        }
        let c = Conn::connect(&self.inner.target).await?;
        Ok(Pooled {
            conn: Some(c),
            inner: self.inner.clone(),
            _permit: permit,
        })
    }
}
