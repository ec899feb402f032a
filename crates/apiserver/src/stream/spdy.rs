//! SPDY/3.1 framing, as kubectl's (moby/spdystream) client speaks it for
//! exec, attach and port-forward: control frames (SYN_STREAM, SYN_REPLY,
//! RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE) and DATA
//! frames, with header blocks compressed by one zlib stream per direction
//! primed with the SPDY/3 dictionary. No flow control: spdystream sends no
//! WINDOW_UPDATE and does not wait for one.

use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 1;
/// RST_STREAM status CANCEL.
pub const CANCEL: u32 = 5;
/// Frames larger than this are refused (spdystream sends at most 16 MiB).
const MAX_FRAME: usize = 16 << 20;
/// DATA frames this server sends carry at most this much.
pub const MAX_DATA: usize = 32 * 1024;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00
/// §2.6.10.1): length-prefixed header names and values, then a run of
/// common value text. 1423 bytes.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
            "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut out = Vec::with_capacity(1423);
        for w in WORDS {
            out.extend_from_slice(&(w.len() as u32).to_be_bytes());
            out.extend_from_slice(w.as_bytes());
        }
        out.extend_from_slice(TAIL.as_bytes());
        out
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy: {0}")]
    Protocol(String),
    #[error("spdy: {0}")]
    Io(#[from] std::io::Error),
}

/// What the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// SYN_STREAM: a new stream and its headers (names lower-case).
    Stream {
        id: u32,
        headers: Vec<(String, String)>,
        fin: bool,
    },
    Data {
        id: u32,
        data: Bytes,
        fin: bool,
    },
    Reset {
        id: u32,
    },
    GoAway,
}

impl Event {
    pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What the server sends.
#[derive(Debug)]
enum Out {
    Reply(u32),
    Data(u32, Bytes, bool),
    Reset(u32, u32),
    Ping(u32),
    GoAway,
}

/// Sends frames on a SPDY connection; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Out>,
}

impl Writer {
    pub async fn reply(&self, id: u32) -> bool {
        self.tx.send(Out::Reply(id)).await.is_ok()
    }
    /// DATA on `id` (split into frames of at most [`MAX_DATA`]); `fin` ends our side.
    pub async fn data(&self, id: u32, data: Bytes, fin: bool) -> bool {
        let mut data = data;
        while data.len() > MAX_DATA {
            if self.tx.send(Out::Data(id, data.split_to(MAX_DATA), false)).await.is_err() {
                return false;
            }
        }
        self.tx.send(Out::Data(id, data, fin)).await.is_ok()
    }
    pub async fn reset(&self, id: u32) -> bool {
        self.tx.send(Out::Reset(id, CANCEL)).await.is_ok()
    }
    pub async fn go_away(&self) -> bool {
        self.tx.send(Out::GoAway).await.is_ok()
    }
}

/// Serve one SPDY connection on `io`: the returned receiver yields what the
/// client sends (it ends when the connection does); the writer sends.
/// The connection closes when the receiver and every writer are dropped,
/// or after a GOAWAY has been sent.
pub fn serve<IO>(io: IO) -> (mpsc::Receiver<Event>, Writer)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let (ev_tx, ev_rx) = mpsc::channel::<Event>(64);
    let pinger = out_tx.clone();
    tokio::spawn(async move {
        if let Err(e) = read_loop(rd, ev_tx, pinger).await {
            tracing::debug!(error = %e, "spdy connection ended");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = write_loop(wr, out_rx).await {
            tracing::debug!(error = %e, "spdy writer ended");
        }
    });
    (ev_rx, Writer { tx: out_tx })
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    events: mpsc::Sender<Event>,
    pinger: mpsc::Sender<Out>,
) -> Result<(), SpdyError> {
    let mut inflate = HeaderInflater::new();
    let mut head = [0u8; 8];
    loop {
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let len = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        if len > MAX_FRAME {
            return Err(SpdyError::Protocol(format!("a frame of {len} bytes is too large")));
        }
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await?;
        let mut p = &payload[..];
        let ev = if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            Some(Event::Data { id, data: Bytes::from(payload), fin: flags & FLAG_FIN != 0 })
        } else {
            let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
            if version != VERSION {
                return Err(SpdyError::Protocol(format!("version {version} is not 3")));
            }
            let kind = u16::from_be_bytes([head[2], head[3]]);
            let need = |n: usize, p: &[u8]| {
                if p.len() < n {
                    Err(SpdyError::Protocol(format!("control frame {kind} is too short")))
                } else {
                    Ok(())
                }
            };
            match kind {
                SYN_STREAM => {
                    need(10, p)?;
                    let id = p.get_u32() & 0x7fff_ffff;
                    p.advance(6);
                    let headers = inflate.headers(p)?;
                    Some(Event::Stream { id, headers, fin: flags & FLAG_FIN != 0 })
                }
                SYN_REPLY | HEADERS => {
                    need(4, p)?;
                    p.advance(4);
                    inflate.headers(p)?;
                    None
                }
                RST_STREAM => {
                    need(8, p)?;
                    Some(Event::Reset { id: p.get_u32() & 0x7fff_ffff })
                }
                PING => {
                    need(4, p)?;
                    let _ = pinger.send(Out::Ping(p.get_u32())).await;
                    None
                }
                GOAWAY => Some(Event::GoAway),
                _ => None, // SETTINGS, WINDOW_UPDATE, CREDENTIAL
            }
        };
        if let Some(ev) = ev {
            let last = matches!(ev, Event::GoAway);
            if events.send(ev).await.is_err() || last {
                return Ok(());
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut out: mpsc::Receiver<Out>) -> Result<(), SpdyError> {
    let mut deflate = HeaderDeflater::new()?;
    let mut buf = BytesMut::new();
    while let Some(frame) = out.recv().await {
        let last = matches!(frame, Out::GoAway);
        encode(&mut buf, frame, &mut deflate)?;
        // write what is queued in one go
        while buf.len() < 256 * 1024 {
            match out.try_recv() {
                Ok(f) => {
                    let end = matches!(f, Out::GoAway);
                    encode(&mut buf, f, &mut deflate)?;
                    if end {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        wr.write_all(&buf).await?;
        wr.flush().await?;
        buf.clear();
        if last {
            break;
        }
    }
    let _ = wr.shutdown().await;
    Ok(())
}

fn control(buf: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) {
    buf.put_u16(0x8000 | VERSION);
    buf.put_u16(kind);
    buf.put_u32(u32::from(flags) << 24 | payload.len() as u32);
    buf.put_slice(payload);
}

fn encode(buf: &mut BytesMut, frame: Out, deflate: &mut HeaderDeflater) -> Result<(), SpdyError> {
    match frame {
        Out::Reply(id) => {
            let mut p = Vec::with_capacity(16);
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&deflate.headers(&[])?);
            control(buf, SYN_REPLY, 0, &p);
        }
        Out::Data(id, data, fin) => {
            buf.put_u32(id & 0x7fff_ffff);
            buf.put_u32(u32::from(if fin { FLAG_FIN } else { 0 }) << 24 | data.len() as u32);
            buf.put_slice(&data);
        }
        Out::Reset(id, status) => {
            let mut p = [0u8; 8];
            p[..4].copy_from_slice(&id.to_be_bytes());
            p[4..].copy_from_slice(&status.to_be_bytes());
            control(buf, RST_STREAM, 0, &p);
        }
        Out::Ping(id) => control(buf, PING, 0, &id.to_be_bytes()),
        Out::GoAway => control(buf, GOAWAY, 0, &[0u8; 8]),
    }
    Ok(())
}

/// The client's header-block zlib stream.
pub struct HeaderInflater {
    z: Decompress,
}

impl Default for HeaderInflater {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderInflater {
    pub fn new() -> Self {
        HeaderInflater { z: Decompress::new(true) }
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let bad = |e: String| SpdyError::Protocol(format!("header block: {e}"));
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let r = self.z.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - before_in) as usize;
            input = &input[used..];
            if used == 0 && self.z.total_out() == before_out && r.is_ok() && !input.is_empty() {
                return Err(bad("the compressed data makes no progress".into()));
            }
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) if input.is_empty() && out.capacity() > out.len() => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(dictionary()).map_err(|e| bad(e.to_string()))?;
                }
                Err(e) => return Err(bad(e.to_string())),
            }
        }
        Ok(out)
    }

    /// Decode one compressed header block.
    pub fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let raw = self.inflate(block)?;
        let bad = || SpdyError::Protocol("header block: truncated".into());
        let mut p = &raw[..];
        let take_u32 = |p: &mut &[u8]| -> Result<usize, SpdyError> {
            if p.len() < 4 {
                return Err(bad());
            }
            Ok(p.get_u32() as usize)
        };
        let count = take_u32(&mut p)?;
        let mut out = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let mut field = || -> Result<String, SpdyError> {
                let n = take_u32(&mut p)?;
                if p.len() < n {
                    return Err(bad());
                }
                let s = String::from_utf8_lossy(&p[..n]).into_owned();
                p.advance(n);
                Ok(s)
            };
            let name = field()?.to_ascii_lowercase();
            let value = field()?;
            // several values are joined by NUL
            for v in value.split('\0') {
                out.push((name.clone(), v.to_string()));
            }
        }
        Ok(out)
    }
}

/// Our header-block zlib stream.
pub struct HeaderDeflater {
    z: Compress,
}

impl HeaderDeflater {
    pub fn new() -> Result<Self, SpdyError> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary()).map_err(|e| SpdyError::Protocol(format!("header dictionary: {e}")))?;
        Ok(HeaderDeflater { z })
    }

    /// Encode and compress one header block (sync-flushed).
    pub fn headers(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before_in = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Protocol(format!("compressing headers: {e}")))?;
            input = &input[(self.z.total_in() - before_in) as usize..];
            // a sync flush is complete once it left room in the output
            if input.is_empty() && out.capacity() > out.len() {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream_each_way() {
        let mut de = HeaderDeflater::new().unwrap();
        let mut inf = HeaderInflater::new();
        for i in 0..3 {
            let port = i.to_string();
            let block = de.headers(&[("streamtype", "data"), ("port", &port)]).unwrap();
            let h = inf.headers(&block).unwrap();
            assert_eq!(h, vec![("streamtype".into(), "data".into()), ("port".into(), port)]);
        }
    }

    #[tokio::test]
    async fn frames_on_the_wire() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut events, writer) = serve(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        // the client opens stream 1 and sends "hi" with FIN
        let mut de = HeaderDeflater::new().unwrap();
        let block = de.headers(&[("streamtype", "stdout")]).unwrap();
        let mut buf = BytesMut::new();
        let mut p = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&block);
        control(&mut buf, SYN_STREAM, 0, &p);
        buf.put_u32(1);
        buf.put_u32(u32::from(FLAG_FIN) << 24 | 2);
        buf.put_slice(b"hi");
        control(&mut buf, PING, 0, &7u32.to_be_bytes());
        cwr.write_all(&buf).await.unwrap();
        assert_eq!(
            events.recv().await.unwrap(),
            Event::Stream { id: 1, headers: vec![("streamtype".into(), "stdout".into())], fin: false }
        );
        assert_eq!(events.recv().await.unwrap(), Event::Data { id: 1, data: Bytes::from_static(b"hi"), fin: true });
        writer.reply(1).await;
        writer.data(1, Bytes::from_static(b"ok"), true).await;
        // ping echo, then SYN_REPLY, then DATA
        let mut head = [0u8; 8];
        crd.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..4], &[0x80, 3, 0, 6]);
        let mut id = [0u8; 4];
        crd.read_exact(&mut id).await.unwrap();
        assert_eq!(u32::from_be_bytes(id), 7);
        crd.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..4], &[0x80, 3, 0, 2]);
        let len = usize::from(head[7]);
        let mut body = vec![0u8; len];
        crd.read_exact(&mut body).await.unwrap();
        assert_eq!(&body[..4], &[0, 0, 0, 1]);
        assert!(HeaderInflater::new().headers(&body[4..]).unwrap().is_empty());
        crd.read_exact(&mut head).await.unwrap();
        assert_eq!(head, [0, 0, 0, 1, 1, 0, 0, 2]);
    }
}
