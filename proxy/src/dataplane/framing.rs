//! HTTP/1.1 message framing for the fast path ([`super::fast`]), without I/O: which requests it
//! serves, where a request's head and body end, and a chunked decoder that re-frames what it
//! accepts. Everything here works on bytes already read; the I/O shell feeds it.
//!
//! The rules are stricter than pingora's parser, never looser: a request whose framing could be
//! read two ways (`Content-Length` with `Transfer-Encoding`, several `Content-Length`s, a coding
//! other than `chunked`, a line ending that is not CRLF, an obs-fold) is refused with `400`
//! rather than forwarded; what the fast path does not handle (HTTP/1.0, `Upgrade`, `Expect`, a
//! target that is neither `/…` nor `http://…`, no or several `Host`s, more than [`MAX_HEADERS`]
//! fields, a head over [`MAX_HEAD_READ`], a target httparse refuses) goes to pingora unchanged. Bodies go upstream re-framed:
//! exactly `Content-Length` bytes, or chunks rewritten as `{size:x}\r\n…\r\n` with extensions and
//! trailers dropped, so no byte reaches the upstream that this module did not frame.

use std::fmt::Write as _;

use crate::dataplane::proxy::MAX_HEAD_READ;

/// Most header fields of a request the fast path serves (more go to pingora, which allows 256).
pub(crate) const MAX_HEADERS: usize = 64;
/// Most header fields of an upstream's response, as written for the client (pingora's limit):
/// more is a `502`. Counted after the rewrite, which can add two, so that what the fast path
/// writes is always a head it would itself accept.
pub(crate) const MAX_RESPONSE_FIELDS: usize = 256;
/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk (they are dropped, not forwarded).
const MAX_TRAILERS: usize = 16_384;
/// Most hex digits of a chunk size (2^60 bytes: no overflow possible).
const MAX_SIZE_DIGITS: u8 = 15;

/// How a request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// No body.
    Empty,
    /// `Content-Length` bytes (more than 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request the fast path serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    /// Bytes of the head, blank line included.
    pub head_len: usize,
    pub body: Body,
    /// The client asked to close after this request (`Connection: close`).
    pub close: bool,
}

/// What to do with a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Serve(Framing),
    /// Not for the fast path: pingora serves it.
    Fallback,
    /// Malformed or ambiguous: answer `400` and close.
    Refuse(&'static str),
}

/// Classifies the request head at the start of `buf`, parsing it into `req`.
pub(crate) fn request<'b>(buf: &'b [u8], req: &mut httparse::Request<'_, 'b>) -> Verdict {
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        // Incomplete, too many fields, or a target or version pingora may still take (it escapes
        // some bytes httparse refuses in targets).
        Ok(httparse::Status::Partial)
        | Err(
            httparse::Error::TooManyHeaders | httparse::Error::Token | httparse::Error::Version,
        ) => {
            return Verdict::Fallback;
        }
        Err(_) => return Verdict::Refuse("malformed request head"),
    };
    if head_len > MAX_HEAD_READ {
        return Verdict::Fallback;
    }
    // httparse takes a bare LF as a line ending; pingora does too. A proxy and the server behind
    // it must never disagree on where a line ends.
    if let Err(reason) = crlf_only(&buf[..head_len]) {
        return Verdict::Refuse(reason);
    }
    if req.version != Some(1) || req.method == Some("CONNECT") {
        return Verdict::Fallback;
    }
    let target = req.path.unwrap_or("").as_bytes();
    let absolute = target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://");
    if !(target.first() == Some(&b'/') || absolute) {
        return Verdict::Fallback;
    }
    let mut length = None;
    let mut chunked = false;
    let mut hosts = 0;
    let mut host_differs = false;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Verdict::Refuse("several Content-Length fields");
            }
            match content_length(h.value) {
                Some(n) => length = Some(n),
                None => return Verdict::Refuse("invalid Content-Length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.eq_ignore_ascii_case(b"chunked") {
                return Verdict::Refuse("unsupported Transfer-Encoding (only one `chunked`)");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host_differs = absolute && !h.value.eq_ignore_ascii_case(authority(target));
        } else if name.eq_ignore_ascii_case("connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            return Verdict::Fallback;
        }
    }
    // pingora refuses an absolute-form target whose authority is not the `Host`.
    if hosts != 1 || host_differs {
        return Verdict::Fallback;
    }
    let body = match (length, chunked) {
        (Some(_), true) => return Verdict::Refuse("Content-Length with Transfer-Encoding"),
        (None, true) => Body::Chunked,
        (Some(0) | None, false) => Body::Empty,
        (Some(n), false) => Body::Length(n),
    };
    Verdict::Serve(Framing {
        head_len,
        body,
        close,
    })
}

/// The authority of an absolute-form target (`http://authority/...`).
fn authority(target: &[u8]) -> &[u8] {
    let rest = &target[7..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// A `Content-Length` value: 1 to 18 digits, nothing else (no sign, no space, no list).
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// Every CR in `head` is followed by LF and every LF preceded by CR.
fn crlf_only(head: &[u8]) -> Result<(), &'static str> {
    let mut prev = 0u8;
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && prev != b'\r' {
            return Err("bare LF in the head");
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Err("bare CR in the head");
        }
        prev = b;
    }
    Ok(())
}

/// How an upstream response's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseBody {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes (then the client's connection closes too).
    UntilClose,
}

/// An upstream response head, rewritten for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub body: ResponseBody,
    /// The upstream connection cannot be reused.
    pub upstream_close: bool,
    /// The client's connection closes after this response.
    pub client_close: bool,
}

/// Parses the upstream response head at the start of `buf` (`Ok(None)`: not complete yet) and
/// writes it for the client into `out`: the hop-by-hop fields (those `Connection` lists,
/// `Connection`, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`) dropped, `chunked` and
/// `connection: close` written by the proxy when they apply. `head_request`: the request was
/// `HEAD` (no body follows whatever the head says); `client_close`: the client asked to close.
pub(crate) fn response(
    buf: &[u8],
    head_request: bool,
    client_close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, &'static str> {
    // Uninitialised: the 256 fields (8 KiB) need not be filled in for every answer.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed response head"),
    };
    crlf_only(&buf[..head_len])?;
    let status = resp.code.unwrap_or(0);
    if status < 100 {
        return Err("bad status code");
    }
    let mut length = None;
    let mut chunked = false;
    let mut upstream_close = resp.version != Some(1);
    let mut listed = [&b""[..]; 16];
    let mut n_listed = 0;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err("several Content-Length fields");
            }
            length = Some(content_length(h.value).ok_or("invalid Content-Length")?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported Transfer-Encoding");
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    upstream_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                    upstream_close = false;
                } else if !t.is_empty() {
                    *listed
                        .get_mut(n_listed)
                        .ok_or("too many Connection options")? = t;
                    n_listed += 1;
                }
            }
        }
    }
    if status == 101 {
        return Err("a protocol switch that was not asked for");
    }
    let body = match (length, chunked) {
        (Some(_), true) => return Err("Content-Length with Transfer-Encoding"),
        _ if head_request || (100..200).contains(&status) || status == 204 || status == 304 => {
            ResponseBody::Empty
        }
        (None, true) => ResponseBody::Chunked,
        (Some(0), false) => ResponseBody::Empty,
        (Some(n), false) => ResponseBody::Length(n),
        (None, false) => ResponseBody::UntilClose,
    };
    let upstream_close = upstream_close || body == ResponseBody::UntilClose;
    let client_close = client_close || body == ResponseBody::UntilClose;
    let start = out.len();
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = write!(Ascii(out), "{status} ");
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let listed = &listed[..n_listed];
    let mut written = 0;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let hop = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
            || listed.iter().any(|l| name.eq_ignore_ascii_case(l));
        if !hop {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
            written += 1;
        }
    }
    if body == ResponseBody::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        written += 1;
    }
    if client_close && !(100..200).contains(&status) {
        out.extend_from_slice(b"connection: close\r\n");
        written += 1;
    }
    if written > MAX_RESPONSE_FIELDS {
        out.truncate(start);
        return Err("too many response header fields");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        head_len,
        status,
        body,
        upstream_close,
        client_close,
    }))
}

/// `fmt::Write` into a byte buffer (for numbers).
struct Ascii<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Ascii<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Chunk {
    /// The hex digits of a chunk size.
    #[default]
    Size,
    /// After the size: extensions, up to CR.
    Ext,
    /// The LF of a size line.
    SizeLf,
    Data,
    /// The CRLF after a chunk's data.
    DataCr,
    DataLf,
    /// The start of a trailer line, or the CR of the final blank line.
    TrailerStart,
    Trailer,
    TrailerLf,
    /// The LF of the final blank line.
    EndLf,
    Done,
}

/// A chunked body decoder (RFC 9112 §7.1) that writes what it accepts, re-framed, to an output
/// buffer: `{size:x}\r\n` + data + `\r\n` per chunk, `0\r\n\r\n` at the end. Extensions and
/// trailers are checked and dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chunked {
    state: Chunk,
    /// The chunk size being read, then the data left of the chunk.
    size: u64,
    digits: u8,
    /// Bytes of the current size line, or of all trailers.
    line: usize,
}

impl Chunked {
    /// The last chunk and its trailers were read: the body is complete.
    pub(crate) fn done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Reads from `input` (up to the end of the body), appending the re-framed body to `out`;
    /// returns how many bytes of `input` it consumed.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < input.len() && self.state != Chunk::Done {
            if self.state == Chunk::Data {
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                out.extend_from_slice(&input[i..i + n]);
                self.size -= n as u64;
                i += n;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                Chunk::Size => match hex(b) {
                    Some(v) => {
                        if self.digits == MAX_SIZE_DIGITS {
                            return Err("chunk size too large");
                        }
                        self.digits += 1;
                        self.size = self.size << 4 | u64::from(v);
                        Chunk::Size
                    }
                    None if self.digits == 0 => return Err("bad chunk size"),
                    None if b == b'\r' => Chunk::SizeLf,
                    None if matches!(b, b';' | b' ' | b'\t') => Chunk::Ext,
                    None => return Err("bad chunk size"),
                },
                Chunk::Ext => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err("chunk extensions too long");
                    }
                    match b {
                        b'\r' => Chunk::SizeLf,
                        b'\t' | 0x20..=0x7e | 0x80..=0xff => Chunk::Ext,
                        _ => return Err("bad chunk extension"),
                    }
                }
                Chunk::SizeLf if b == b'\n' => {
                    self.digits = 0;
                    self.line = 0;
                    if self.size == 0 {
                        Chunk::TrailerStart
                    } else {
                        let _ = write!(Ascii(out), "{:x}\r\n", self.size);
                        Chunk::Data
                    }
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataCr => return Err("chunk data longer than its size"),
                Chunk::DataLf if b == b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    Chunk::Size
                }
                Chunk::TrailerStart if b == b'\r' => Chunk::EndLf,
                Chunk::TrailerStart | Chunk::Trailer => {
                    self.line += 1;
                    if self.line > MAX_TRAILERS {
                        return Err("trailers too long");
                    }
                    match b {
                        b'\r' if self.state == Chunk::Trailer => Chunk::TrailerLf,
                        // A field name starts the line (no obs-fold: no leading whitespace).
                        _ if self.state == Chunk::TrailerStart && is_tchar(b) => Chunk::Trailer,
                        b'\t' | 0x20..=0x7e | 0x80..=0xff if self.state == Chunk::Trailer => {
                            Chunk::Trailer
                        }
                        _ => return Err("bad trailer field"),
                    }
                }
                Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
                Chunk::EndLf if b == b'\n' => {
                    out.extend_from_slice(b"0\r\n\r\n");
                    Chunk::Done
                }
                Chunk::SizeLf | Chunk::DataLf | Chunk::TrailerLf | Chunk::EndLf => {
                    return Err("bare CR in chunked framing");
                }
                Chunk::Data | Chunk::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A byte of an HTTP token (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &str) -> Verdict {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        request(head.as_bytes(), &mut httparse::Request::new(&mut fields))
    }

    fn body(head: &str) -> Body {
        match verdict(head) {
            Verdict::Serve(f) => {
                assert_eq!(f.head_len, head.find("\r\n\r\n").unwrap() + 4);
                f.body
            }
            v => panic!("{v:?} for {head:?}"),
        }
    }

    fn refused(head: &str) -> bool {
        matches!(verdict(head), Verdict::Refuse(_))
    }

    #[test]
    fn plain_requests_are_served() {
        assert_eq!(body("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Body::Empty);
        assert_eq!(
            body("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Body::Empty
        );
        assert_eq!(
            body("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nbody"),
            Body::Length(12)
        );
        assert_eq!(
            body("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n"),
            Body::Empty
        );
        assert_eq!(
            body("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Body::Chunked
        );
        let Verdict::Serve(f) =
            verdict("GET / HTTP/1.1\r\nHost: a\r\nConnection: x, close\r\n\r\n")
        else {
            panic!()
        };
        assert!(f.close);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for head in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        ] {
            assert!(refused(head), "{head:?}: {:?}", verdict(head));
        }
    }

    #[test]
    fn what_the_fast_path_does_not_handle_goes_to_pingora() {
        for head in [
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(verdict(head), Verdict::Fallback, "{head:?}");
        }
        let long = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "y".repeat(MAX_HEAD_READ)
        );
        assert_eq!(verdict(&long), Verdict::Fallback);
        let many: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            verdict(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Verdict::Fallback
        );
    }

    fn decode(input: &[u8]) -> Result<(usize, Vec<u8>), &'static str> {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let n = d.feed(input, &mut out)?;
        assert!(d.done(), "incomplete");
        Ok((n, out))
    }

    #[test]
    fn chunked_bodies_are_reframed() {
        let (n, out) =
            decode(b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(n, 44);
        assert_eq!(out, b"5\r\nhello\r\na\r\n0123456789\r\n0\r\n\r\n");
        // Byte by byte, the same.
        let input = b"3\r\nabc\r\n000\r\n\r\n";
        let mut d = Chunked::default();
        let mut out = Vec::new();
        for b in input {
            assert_eq!(d.feed(std::slice::from_ref(b), &mut out), Ok(1));
        }
        assert!(d.done());
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
    }

    #[test]
    fn bad_chunked_framing_is_refused() {
        for input in [
            &b"g\r\n"[..],
            b"-1\r\n",
            b" 1\r\n",
            b"0x1\r\n",
            b"1234567890abcdef0\r\n",
            b"1\nx\r\n",
            b"1\r\nxy\r\n",
            b"1\r\nx\n",
            b"1\r\nx\rz",
            b"0\r\n\n",
            b"0\r\n foo: x\r\n\r\n",
            b"0\r\nX: a\nY: b\r\n\r\n",
            b"1;a\0\r\n",
        ] {
            let mut d = Chunked::default();
            assert!(
                d.feed(input, &mut Vec::new()).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn resp(input: &str, head: bool) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let h = response(input.as_bytes(), head, false, &mut out)
            .unwrap()
            .unwrap();
        (h, String::from_utf8(out).unwrap())
    }

    /// Found by the fuzz target: an answer at the field limit grew past it when the rewrite
    /// added `connection: close`, so the fast path wrote a head it would itself refuse. The limit
    /// counts the fields written; up to it, pingora's 256, an answer is relayed.
    #[test]
    fn response_fields_are_counted_as_written() {
        let head = |fields: usize, framing: &str| {
            let mut h = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..fields {
                h.push_str(&format!("X-{i}: v\r\n"));
            }
            h.push_str(framing);
            h.push_str("\r\n");
            h
        };
        // 255 fields plus the added `connection: close`: 256, relayed; once more, the same.
        let (_, out) = resp(&head(255, ""), false);
        assert_eq!(resp(&out, false).1, out);
        // 256 plus `connection: close` is one too many.
        let mut out = Vec::new();
        assert_eq!(
            response(head(256, "").as_bytes(), false, false, &mut out),
            Err("too many response header fields")
        );
        assert!(out.is_empty());
        // A framed answer of 256 fields is relayed as it is (Content-Length is kept).
        let (_, out) = resp(&head(255, "Content-Length: 0\r\n"), false);
        assert_eq!(resp(&out, false).1, out);
        // More than 256 fields do not parse.
        assert!(response(head(257, "").as_bytes(), false, false, &mut Vec::new()).is_err());
    }

    #[test]
    fn responses_lose_hop_by_hop_fields() {
        let (h, out) = resp(
            "HTTP/1.1 200 OK\r\nConnection: x-a, keep-alive\r\nX-A: 1\r\nKeep-Alive: 5\r\nX-B: 2\r\nContent-Length: 2\r\n\r\nok",
            false,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-B: 2\r\nContent-Length: 2\r\n\r\n"
        );
        assert_eq!(h.body, ResponseBody::Length(2));
        assert!(!h.upstream_close && !h.client_close);
        let (h, out) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.body, ResponseBody::Chunked);
        assert_eq!(out, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        let (h, out) = resp("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(h.body, ResponseBody::UntilClose);
        assert!(h.client_close && h.upstream_close);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
        assert_eq!(
            resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
                .0
                .body,
            ResponseBody::Empty
        );
        assert_eq!(
            resp("HTTP/1.1 304 No\r\n\r\n", false).0.body,
            ResponseBody::Empty
        );
        assert!(
            resp("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false)
                .0
                .upstream_close
        );
        let mut out = Vec::new();
        assert_eq!(
            response(b"HTTP/1.1 200 OK\r\n", false, false, &mut out),
            Ok(None)
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
            "HTTP/1.1 101 Switching\r\n\r\n",
            "HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(
                response(bad.as_bytes(), false, false, &mut out).is_err(),
                "{bad:?}"
            );
        }
    }
}
