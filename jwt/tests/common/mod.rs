//! Test keys (generated here: EC with rcgen/ring; RSA with a small generator below, since ring
//! cannot generate RSA keys), token builders, and a local HTTP(S) server for JWKS URLs.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use num_bigint::BigUint;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{self, KeyPair as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature` from raw parts.
pub fn raw(header: &str, payload: &str, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

/// Something that signs tokens.
pub trait Signer {
    fn alg(&self) -> &'static str;
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// A token with header `{"alg", "typ", "kid"?}` over `claims`.
pub fn token(signer: &dyn Signer, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": signer.alg(), "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    token_with_header(signer, &header, claims)
}

/// A token with `header` (as is) over `claims`.
pub fn token_with_header(signer: &dyn Signer, header: &Value, claims: &Value) -> String {
    let signed = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = signer.sign(signed.as_bytes());
    format!("{signed}.{}", b64(sig))
}

/// An HS256 secret.
pub struct Hmac(pub Vec<u8>);

impl Signer for Hmac {
    fn alg(&self) -> &'static str {
        "HS256"
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        ring::hmac::sign(&key, message).as_ref().to_vec()
    }
}

/// A P-256 key pair.
pub struct Ec {
    pub pair: signature::EcdsaKeyPair,
    /// SubjectPublicKeyInfo PEM (by rcgen).
    pub spki_pem: String,
    pub x: Vec<u8>,
    pub y: Vec<u8>,
}

impl Ec {
    pub fn generate() -> Ec {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &kp.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65);
        assert_eq!(kp.public_key_raw(), point.as_slice());
        Ec {
            spki_pem: kp.public_key_pem(),
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
            pair,
        }
    }

    pub fn jwk(&self, kid: Option<&str>) -> Value {
        let mut jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&self.x), "y": b64(&self.y)});
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }
}

impl Signer for Ec {
    fn alg(&self) -> &'static str {
        "ES256"
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

/// An RSA-2048 key pair.
pub struct Rsa {
    pub pair: signature::RsaKeyPair,
    pub n: Vec<u8>,
    pub e: Vec<u8>,
    /// SubjectPublicKeyInfo PEM (`PUBLIC KEY`, by rcgen).
    pub spki_pem: String,
    /// PKCS#1 PEM (`RSA PUBLIC KEY`).
    pub pkcs1_pem: String,
    /// The PKCS#1 `RSAPublicKey` DER.
    pub pkcs1_der: Vec<u8>,
}

impl Rsa {
    /// A fresh key. ring cannot generate RSA keys: two random 1024-bit primes (Miller-Rabin),
    /// e = 65537, encoded as PKCS#8 and then checked and used by ring itself.
    pub fn generate() -> Rsa {
        let e = BigUint::from(65_537u32);
        let one = BigUint::from(1u32);
        let (p, q) = loop {
            let p = random_prime(1024);
            let q = random_prime(1024);
            if p == q {
                continue;
            }
            let (p, q) = if p > q { (p, q) } else { (q, p) };
            let phi = (&p - &one) * (&q - &one);
            if (&phi % &e) != BigUint::from(0u32) {
                break (p, q);
            }
        };
        let n = &p * &q;
        let phi = (&p - &one) * (&q - &one);
        let d = e.modinv(&phi).unwrap();
        let dp = &d % (&p - &one);
        let dq = &d % (&q - &one);
        let qinv = q.modinv(&p).unwrap();
        let rsa_private = der(
            0x30,
            &[
                der_uint(&[0]),
                der_uint(&n.to_bytes_be()),
                der_uint(&e.to_bytes_be()),
                der_uint(&d.to_bytes_be()),
                der_uint(&p.to_bytes_be()),
                der_uint(&q.to_bytes_be()),
                der_uint(&dp.to_bytes_be()),
                der_uint(&dq.to_bytes_be()),
                der_uint(&qinv.to_bytes_be()),
            ]
            .concat(),
        );
        let algorithm = der(
            0x30,
            &[
                der(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                ),
                der(0x05, &[]),
            ]
            .concat(),
        );
        let pkcs8 = der(
            0x30,
            &[der_uint(&[0]), algorithm, der(0x04, &rsa_private)].concat(),
        );
        let pair = signature::RsaKeyPair::from_pkcs8(&pkcs8).expect("ring accepts the key");
        let rc = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &pkcs8.clone().into(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let pkcs1_der = der(
            0x30,
            &[der_uint(&n.to_bytes_be()), der_uint(&e.to_bytes_be())].concat(),
        );
        Rsa {
            pair,
            n: n.to_bytes_be(),
            e: e.to_bytes_be(),
            spki_pem: rc.public_key_pem(),
            pkcs1_pem: pem("RSA PUBLIC KEY", &pkcs1_der),
            pkcs1_der,
        }
    }

    pub fn jwk(&self, kid: Option<&str>) -> Value {
        let mut jwk = json!({"kty": "RSA", "n": b64(&self.n), "e": b64(&self.e)});
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }
}

impl Signer for Rsa {
    fn alg(&self) -> &'static str {
        "RS256"
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut sig,
            )
            .unwrap();
        sig
    }
}

/// Two RSA keys, generated once per test binary (generation takes a moment in debug builds).
pub fn rsa_keys() -> &'static [Rsa; 2] {
    static KEYS: std::sync::OnceLock<[Rsa; 2]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(Rsa::generate);
            let b = s.spawn(Rsa::generate);
            (a.join().unwrap(), b.join().unwrap())
        });
        [a, b]
    })
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let mut v = bytes[first..].to_vec();
    if v.is_empty() || v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    der(0x02, &v)
}

fn random_prime(bits: usize) -> BigUint {
    let small: Vec<u32> = (3u32..2000)
        .filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0))
        .collect();
    let rng = SystemRandom::new();
    loop {
        let mut bytes = vec![0u8; bits / 8];
        rng.fill(&mut bytes).unwrap();
        bytes[0] |= 0xc0; // two top bits: the product has exactly 2 * bits bits
        *bytes.last_mut().unwrap() |= 1;
        let candidate = BigUint::from_bytes_be(&bytes);
        if small
            .iter()
            .any(|p| (&candidate % p) == BigUint::from(0u32))
        {
            continue;
        }
        if miller_rabin(&candidate) {
            return candidate;
        }
    }
}

fn miller_rabin(n: &BigUint) -> bool {
    let one = BigUint::from(1u32);
    let n1 = n - &one;
    let s = n1.trailing_zeros().unwrap();
    let d = &n1 >> s;
    'bases: for a in [2u32, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        let mut x = BigUint::from(a).modpow(&d, n);
        if x == one || x == n1 {
            continue;
        }
        for _ in 1..s {
            x = x.modpow(&BigUint::from(2u32), n);
            if x == n1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vexil-jwt-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `contents` to `name` (atomically: temp file and rename) and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(contents.as_ref()).unwrap();
        drop(f);
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the local server answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `status` with `body` (and a Content-Length, unless `close_delimited`).
    Send {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        close_delimited: bool,
    },
    /// Reads the request, then never answers.
    Hang,
}

impl Answer {
    pub fn json(body: &Value) -> Answer {
        Answer::Send {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            close_delimited: false,
        }
    }

    pub fn status(status: u16) -> Answer {
        Answer::Send {
            status,
            headers: Vec::new(),
            body: b"nope".to_vec(),
            close_delimited: false,
        }
    }
}

/// A local HTTP (or HTTPS) server on its own thread and runtime; every request gets the current
/// [`Answer`].
pub struct Server {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(answer: Answer, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (a, r) = (answer.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
                loop {
                    let (stream, _) = tokio::select! {
                        _ = &mut stop_rx => return,
                        s = listener.accept() => s.unwrap(),
                    };
                    let (a, r, acceptor) = (a.clone(), r.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        match acceptor {
                            Some(acc) => {
                                if let Ok(s) = acc.accept(stream).await {
                                    serve(s, &a, &r).await;
                                }
                            }
                            None => serve(stream, &a, &r).await,
                        }
                    });
                }
            });
        });
        Server {
            addr: addr_rx.recv().unwrap(),
            answer,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve<S>(mut s: S, answer: &Mutex<Answer>, requests: &AtomicUsize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let answer = answer.lock().unwrap().clone();
    match answer {
        Answer::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
        Answer::Send {
            status,
            headers,
            body,
            close_delimited,
        } => {
            let mut out = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            if !close_delimited {
                out.push_str(&format!("content-length: {}\r\n", body.len()));
            }
            out.push_str("\r\n");
            let _ = s.write_all(out.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    }
}

/// A CA and a server certificate for `localhost` and 127.0.0.1: (CA PEM, server TLS config).
pub fn tls_server() -> (String, Arc<rustls::ServerConfig>) {
    vexil_testkit::tls::server_config(&["localhost", "127.0.0.1"])
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    vexil_jwt::unix_now()
}
