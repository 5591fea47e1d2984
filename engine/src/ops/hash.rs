//! Hashing for flagd's `fractional` operator.
//!
//! flagd v3 bucketing hashes the deterministic CBOR encoding of the bucketing value (any JSON value)
//! with MurmurHash3 x86_32, seed 0; v2 hashes the raw UTF-8 bytes of a string with the same function.
//! The reference is flagd's Python core: `mmh3.hash(cbor2.dumps(normalize_numbers(v), canonical=True),
//! signed=False)`.
//!
//! Both halves stream: [`Cbor`] writes each encoded item straight into a [`Sink`], and [`Murmur3`] is
//! such a sink that mixes bytes in as they arrive. Evaluating a flag is the hot path and must not
//! allocate, so the CBOR bytes are never collected into a buffer; the only allocation left is the key
//! list used to sort a map with more than [`STACK_KEYS`] entries.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// First MurmurHash3 x86_32 block multiplier.
const C1: u32 = 0xcc9e_2d51;
/// Second MurmurHash3 x86_32 block multiplier.
const C2: u32 = 0x1b87_3593;

/// Streaming MurmurHash3 x86_32 (unsigned result), equal to the one-shot function on the concatenation
/// of all writes.
#[derive(Clone, Debug)]
pub(crate) struct Murmur3 {
    /// Hash state after every complete 4-byte block seen so far.
    h: u32,
    /// Bytes of the incomplete block at the end of the input so far.
    tail: [u8; 4],
    /// How many bytes of `tail` are in use (always below 4 between writes).
    tail_len: usize,
    /// Total number of bytes written.
    len: u64,
}

impl Murmur3 {
    /// A hasher with the given seed (flagd uses 0).
    pub(crate) fn new(seed: u32) -> Self {
        Self {
            h: seed,
            tail: [0; 4],
            tail_len: 0,
            len: 0,
        }
    }

    /// Feeds `bytes` into the hash.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u64);
        let rest = self.fill_tail(bytes);
        let (blocks, rest) = rest.as_chunks::<4>();
        for block in blocks {
            self.h = mix_block(self.h, u32::from_le_bytes(*block));
        }
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len += rest.len();
    }

    /// Tops up a pending partial block from the front of `bytes` (mixing it in once complete) and
    /// returns the bytes not consumed. Afterwards either the tail is empty or `bytes` was used up.
    fn fill_tail<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        if self.tail_len == 0 {
            return bytes;
        }
        let take = (4 - self.tail_len).min(bytes.len());
        let (head, rest) = bytes.split_at(take);
        self.tail[self.tail_len..self.tail_len + take].copy_from_slice(head);
        self.tail_len += take;
        if self.tail_len == 4 {
            self.h = mix_block(self.h, u32::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        rest
    }

    /// The hash of everything written.
    pub(crate) fn finish(self) -> u32 {
        let mut h = self.h;
        if self.tail_len > 0 {
            let mut block = [0; 4];
            block[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            h ^= mix_k(u32::from_le_bytes(block));
        }
        // The reference folds in the length as a 32-bit integer; truncation is intended.
        fmix32(h ^ self.len as u32)
    }
}

/// MurmurHash3 x86_32 of `data` in one go.
pub(crate) fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut hasher = Murmur3::new(seed);
    hasher.write(data);
    hasher.finish()
}

/// Scrambles one 4-byte block before it is folded into the state.
fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

/// Folds one complete 4-byte block into the state `h`.
fn mix_block(h: u32, k: u32) -> u32 {
    (h ^ mix_k(k))
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// MurmurHash3's final avalanche.
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Where encoded bytes go.
pub(crate) trait Sink {
    /// Appends `bytes` to the output.
    fn put(&mut self, bytes: &[u8]);
}

/// Hashes the encoding as it is produced.
impl Sink for Murmur3 {
    fn put(&mut self, bytes: &[u8]) {
        self.write(bytes);
    }
}

/// Collects the encoding (for tests and diagnostics).
impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// CBOR major type 0: unsigned integer.
const MAJOR_UNSIGNED: u8 = 0;
/// CBOR major type 1: negative integer `-1 - n`.
const MAJOR_NEGATIVE: u8 = 1;
/// CBOR major type 3: UTF-8 text string.
const MAJOR_TEXT: u8 = 3;
/// CBOR major type 4: array.
const MAJOR_ARRAY: u8 = 4;
/// CBOR major type 5: map.
const MAJOR_MAP: u8 = 5;
/// Initial byte of `false`.
const FALSE: u8 = 0xf4;
/// Initial byte of `true`.
const TRUE: u8 = 0xf5;
/// Initial byte of `null`.
const NULL: u8 = 0xf6;
/// Initial byte of a half-precision float.
const HALF: u8 = 0xf9;
/// Initial byte of a single-precision float.
const SINGLE: u8 = 0xfa;
/// Initial byte of a double-precision float.
const DOUBLE: u8 = 0xfb;
/// 2^63 as a float: integral floats from -2^63 on are normalised to integers.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
/// 2^64 as a float: integral floats below it are normalised to integers.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
/// 2^-14, the smallest normal half-precision float.
const HALF_MIN_NORMAL: f64 = 6.103_515_625e-5;
/// 2^24: the number of smallest half-precision subnormals in 1.0.
const HALF_SUBNORMAL_UNITS: f64 = 16_777_216.0;
/// Maps with at most this many entries sort their keys in a stack buffer; larger ones use a `Vec`.
const STACK_KEYS: usize = 16;

/// Deterministic CBOR writer: what Python's `cbor2.dumps(value, canonical=True)` produces after flagd's
/// number normalisation.
pub(crate) struct Cbor<'s, S: Sink> {
    /// Receives the encoded bytes.
    sink: &'s mut S,
}

impl<'s, S: Sink> Cbor<'s, S> {
    /// A writer into `sink`.
    pub(crate) fn new(sink: &'s mut S) -> Self {
        Self { sink }
    }

    /// Writes `null`.
    pub(crate) fn null(&mut self) {
        self.sink.put(&[NULL]);
    }

    /// Writes a boolean.
    pub(crate) fn bool(&mut self, b: bool) {
        self.sink.put(&[if b { TRUE } else { FALSE }]);
    }

    /// Writes an unsigned integer in the shortest form.
    pub(crate) fn u64(&mut self, v: u64) {
        self.head(MAJOR_UNSIGNED, v);
    }

    /// Writes a signed integer in the shortest form.
    pub(crate) fn i64(&mut self, v: i64) {
        match u64::try_from(v) {
            Ok(u) => self.head(MAJOR_UNSIGNED, u),
            // For negative `v`, `!v` is `-1 - v`, which is non-negative, so the cast is lossless.
            Err(_) => self.head(MAJOR_NEGATIVE, !v as u64),
        }
    }

    /// flagd normalisation first: a float with no fractional part inside [-2^63, 2^64-1] is written as
    /// an integer (so 1.0 ≡ 1, -0.0 ≡ 0, -2.0 ≡ -2); otherwise the shortest float width (half, single,
    /// double) that represents the value exactly (cbor2 canonical behaviour). NaN and infinities never
    /// come from JSON; they are written as cbor2 writes them (half-precision `7e00`, `7c00`, `fc00`).
    pub(crate) fn f64(&mut self, v: f64) {
        if is_normalised_integer(v) {
            if v < 0.0 {
                // In [-2^63, -1]: exact as i64.
                self.i64(v as i64);
            } else {
                // In [0, 2^64) (or -0.0, which becomes 0): exact as u64.
                self.u64(v as u64);
            }
        } else {
            self.float(v);
        }
    }

    /// Writes UTF-8 text.
    pub(crate) fn text(&mut self, s: &str) {
        self.head(MAJOR_TEXT, s.len() as u64);
        self.sink.put(s.as_bytes());
    }

    /// Starts an array of `len` items; the caller writes the items next.
    pub(crate) fn array_header(&mut self, len: usize) {
        self.head(MAJOR_ARRAY, len as u64);
    }

    /// Starts a map of `len` entries; the caller writes key, value, key, value... next, keys in
    /// [`canonical_key_cmp`] order.
    pub(crate) fn map_header(&mut self, len: usize) {
        self.head(MAJOR_MAP, len as u64);
    }

    /// A whole `serde_json::Value`: numbers as above (serde_json u64/i64 as integers, f64 through
    /// [`Cbor::f64`]), maps with keys in canonical order (see [`canonical_key_cmp`]). Sorting map keys
    /// may use a small `Vec` of references; nothing else allocates.
    pub(crate) fn json(&mut self, v: &Value) {
        match v {
            Value::Null => self.null(),
            Value::Bool(b) => self.bool(*b),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.text(s),
            Value::Array(items) => {
                self.array_header(items.len());
                items.iter().for_each(|item| self.json(item));
            }
            Value::Object(map) => self.map(map),
        }
    }

    /// Writes a JSON number.
    ///
    /// Without serde_json's `arbitrary_precision`, an integer literal beyond the u64/i64 range has
    /// already been parsed as the nearest f64, so it reaches [`Cbor::f64`]: an integral float from
    /// -2^63 up to 2^64 exclusive becomes an integer, anything beyond stays a float (e.g. `2^64` is
    /// written as the single-precision `fa5f800000`). Python keeps such literals as exact ints, so the reference
    /// writes a bignum (`c249010000000000000000` for 2^64) or, for [-2^64, -2^63 - 1], a 64-bit
    /// negative integer: a known divergence for JSON integer literals outside [-2^63, 2^64 - 1].
    fn number(&mut self, n: &Number) {
        if let Some(u) = n.as_u64() {
            self.u64(u);
        } else if let Some(i) = n.as_i64() {
            self.i64(i);
        } else {
            // Always `Some` without `arbitrary_precision`; NaN keeps this total if that ever changes.
            self.f64(n.as_f64().unwrap_or(f64::NAN));
        }
    }

    /// Writes an object's entries sorted by [`canonical_key_cmp`], sorting on the stack when small.
    fn map(&mut self, map: &Map<String, Value>) {
        self.map_header(map.len());
        if map.len() <= STACK_KEYS {
            static PLACEHOLDER: Value = Value::Null;
            let mut buf = [("", &PLACEHOLDER); STACK_KEYS];
            let entries = &mut buf[..map.len()];
            for (slot, (k, v)) in entries.iter_mut().zip(map) {
                *slot = (k.as_str(), v);
            }
            self.sorted_entries(entries);
        } else {
            let mut entries: Vec<(&str, &Value)> =
                map.iter().map(|(k, v)| (k.as_str(), v)).collect();
            self.sorted_entries(&mut entries);
        }
    }

    /// Sorts `entries` by key (keys are unique, so an unstable sort is exact) and writes them.
    fn sorted_entries(&mut self, entries: &mut [(&str, &Value)]) {
        entries.sort_unstable_by(|a, b| canonical_key_cmp(a.0, b.0));
        for (k, v) in entries.iter() {
            self.text(k);
            self.json(v);
        }
    }

    /// Writes a non-integral (or out-of-range, or non-finite) float in the shortest exact width.
    fn float(&mut self, v: f64) {
        if v.is_nan() {
            self.sink.put(&[HALF, 0x7e, 0x00]);
        } else if let Some(half) = half_bits(v) {
            self.tagged(HALF, &half.to_be_bytes());
        } else if f64::from(v as f32) == v {
            self.tagged(SINGLE, &(v as f32).to_bits().to_be_bytes());
        } else {
            self.tagged(DOUBLE, &v.to_bits().to_be_bytes());
        }
    }

    /// Writes an initial byte followed by up to 8 payload bytes, in one `put`.
    fn tagged(&mut self, initial: u8, payload: &[u8]) {
        let mut buf = [0; 9];
        buf[0] = initial;
        buf[1..=payload.len()].copy_from_slice(payload);
        self.sink.put(&buf[..=payload.len()]);
    }

    /// Writes the head of a data item: major type and argument in the shortest form.
    fn head(&mut self, major: u8, arg: u64) {
        let (info, width) = match arg {
            0..=23 => (arg as u8, 0),
            24..=0xff => (24, 1),
            0x100..=0xffff => (25, 2),
            0x1_0000..=0xffff_ffff => (26, 4),
            _ => (27, 8),
        };
        self.tagged(major << 5 | info, &arg.to_be_bytes()[8 - width..]);
    }
}

/// Whether flagd's `normalize_numbers` turns `v` into an integer: integral and in [-2^63, 2^64 - 1].
fn is_normalised_integer(v: f64) -> bool {
    v.is_finite() && v.fract() == 0.0 && (-TWO_POW_63..TWO_POW_64).contains(&v)
}

/// The IEEE 754 binary16 bits of `v` when it is exactly representable there (infinities included),
/// `None` otherwise. `v` must not be NaN.
fn half_bits(v: f64) -> Option<u16> {
    let bits = v.to_bits();
    let sign = ((bits >> 48) & 0x8000) as u16;
    let magnitude = v.abs();
    if magnitude == f64::INFINITY {
        return Some(sign | 0x7c00);
    }
    // Below 2^-14 only subnormals remain: multiples of 2^-24 (the scaling below is exact).
    if magnitude < HALF_MIN_NORMAL {
        let units = magnitude * HALF_SUBNORMAL_UNITS;
        return (units.fract() == 0.0).then_some(sign | units as u16);
    }
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = bits & ((1 << 52) - 1);
    // A normal half has exponents up to 15 and 10 explicit mantissa bits (the low 42 of 52 are zero).
    if exponent > 15 || mantissa & ((1 << 42) - 1) != 0 {
        return None;
    }
    Some(sign | ((exponent + 15) as u16) << 10 | (mantissa >> 42) as u16)
}

/// Order of map keys in the canonical encoding (as cbor2 `canonical=True`: by the bytes of each key's
/// encoding, which for text keys means shorter UTF-8 length first, then bytewise).
pub(crate) fn canonical_key_cmp(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    //! Vectors computed with the reference implementation: Python `cbor2` 5.9.0 (the version
    //! `openfeature-flagd-core` 2.0.0 pins; 6.2.1 agrees on every vector) with
    //! `dumps(normalize_numbers(json.loads(text)), canonical=True)`, and `mmh3` 5.3.1
    //! `hash(bytes, seed, signed=False)`.

    use super::*;
    use std::fmt::Write as _;

    // (json text, canonical CBOR hex, murmur3_32 seed 0 of that CBOR)
    const JSON_VECTORS: &[(&str, &str, u32)] = &[
        (r#"null"#, "f6", 1941745834),
        (r#"true"#, "f5", 836216331),
        (r#"false"#, "f4", 116478471),
        (r#""""#, "60", 661569231),
        (r#""a""#, "6161", 923832745),
        (r#""true""#, "6474727565", 4082319817),
        (r#""null""#, "646e756c6c", 1236505283),
        (r#""123""#, "63313233", 3729299010),
        (r#""1.23""#, "64312e3233", 589666177),
        (r#""false""#, "6566616c7365", 125843620),
        (r#""user1""#, "657573657231", 3686933882),
        (
            r#""aaaaaaaaaaaaaaaaaaaaaaa""#,
            "776161616161616161616161616161616161616161616161",
            2275846967,
        ),
        (
            r#""aaaaaaaaaaaaaaaaaaaaaaaa""#,
            "7818616161616161616161616161616161616161616161616161",
            85835601,
        ),
        (r#""héllo""#, "6668c3a96c6c6f", 350440914),
        (r#""é""#, "62c3a9", 382297839),
        (r#""日本語""#, "69e697a5e69cace8aa9e", 2590285676),
        (r#""😀""#, "64f09f9880", 7891819),
        (r#""\ud83d\ude00""#, "64f09f9880", 7891819),
        (r#""A\u0000B""#, "63410042", 2369802689),
        (r#""e\u0301""#, "6365cc81", 2740008370),
        (
            r#""quote\"back\\slash""#,
            "7071756f7465226261636b5c736c617368",
            888266600,
        ),
        (
            r#""tab\tnewline\n""#,
            "6c746162096e65776c696e650a",
            4009363644,
        ),
        (r#"0"#, "00", 1364076727),
        (r#"1"#, "01", 3831157163),
        (r#"23"#, "17", 3587710546),
        (r#"24"#, "1818", 1850618976),
        (r#"255"#, "18ff", 2102842189),
        (r#"256"#, "190100", 2062483401),
        (r#"65535"#, "19ffff", 643183154),
        (r#"65536"#, "1a00010000", 1844358409),
        (r#"4294967295"#, "1affffffff", 2326533495),
        (r#"4294967296"#, "1b0000000100000000", 3131679847),
        (r#"2147483647"#, "1a7fffffff", 1636411968),
        (r#"2147483648"#, "1a80000000", 4193773334),
        (r#"-1"#, "20", 2129959832),
        (r#"-24"#, "37", 602572328),
        (r#"-25"#, "3818", 2734936097),
        (r#"-255"#, "38fe", 3340331797),
        (r#"-256"#, "38ff", 1670987771),
        (r#"-257"#, "390100", 381989758),
        (r#"-65536"#, "39ffff", 509994027),
        (r#"-65537"#, "3a00010000", 3808930769),
        (r#"-2147483648"#, "3a7fffffff", 1329983438),
        (r#"-2147483649"#, "3a80000000", 3079276449),
        (r#"-4294967296"#, "3affffffff", 3642989061),
        (r#"-4294967297"#, "3b0000000100000000", 1342789437),
        (r#"9007199254740991"#, "1b001fffffffffffff", 256201780),
        (r#"9007199254740992"#, "1b0020000000000000", 1581616925),
        (r#"9223372036854775807"#, "1b7fffffffffffffff", 894372206),
        (r#"9223372036854775808"#, "1b8000000000000000", 2583063103),
        (r#"-9223372036854775808"#, "3b7fffffffffffffff", 345277741),
        (r#"18446744073709551615"#, "1bffffffffffffffff", 1908111393),
        (r#"-0"#, "00", 1364076727),
        (r#"0.0"#, "00", 1364076727),
        (r#"-0.0"#, "00", 1364076727),
        (r#"1.0"#, "01", 3831157163),
        (r#"-2.0"#, "21", 1919294708),
        (r#"0.5"#, "f93800", 2277126382),
        (r#"1.5"#, "f93e00", 346941878),
        (r#"-1.5"#, "f9be00", 3736854702),
        (r#"2.5"#, "f94100", 1801461939),
        (r#"1.23"#, "fb3ff3ae147ae147ae", 2393468550),
        (r#"4.56"#, "fb40123d70a3d70a3d", 3081820476),
        (r#"0.1"#, "fb3fb999999999999a", 109103420),
        (r#"-0.1"#, "fbbfb999999999999a", 2803098609),
        (r#"65504.0"#, "19ffe0", 2702199647),
        (r#"-65504.0"#, "39ffdf", 1424230676),
        (r#"65505.0"#, "19ffe1", 2842410070),
        (r#"-65505.0"#, "39ffe0", 2837596143),
        (r#"65536.5"#, "fa47800040", 2494325003),
        (r#"100000.5"#, "fa47c35040", 1826359323),
        (r#"1e-7"#, "fb3e7ad7f29abcaf48", 867340108),
        (r#"5.960464477539063e-8"#, "f90001", 3845981227),
        (r#"6.103515625e-05"#, "f90400", 3625736809),
        (r#"6.097555160522461e-05"#, "f903ff", 1069985150),
        (r#"1.1754943508222875e-38"#, "fa00800000", 4054665497),
        (r#"1.401298464324817e-45"#, "fa00000001", 2325826984),
        (r#"3.4028234663852886e38"#, "fa7f7fffff", 1582570431),
        (r#"-3.4028234663852886e38"#, "faff7fffff", 461271602),
        (r#"3.5e38"#, "fb47f074f8c4d3cd7b", 4379067),
        (r#"1e20"#, "fb4415af1d78b58c40", 3152684119),
        (r#"-1e20"#, "fbc415af1d78b58c40", 4137696012),
        (r#"1e300"#, "fb7e37e43c8800759c", 2973154037),
        (
            r#"1.7976931348623157e308"#,
            "fb7fefffffffffffff",
            2906822586,
        ),
        (
            r#"-1.7976931348623157e308"#,
            "fbffefffffffffffff",
            1505494695,
        ),
        (
            r#"2.2250738585072014e-308"#,
            "fb0010000000000000",
            1873161694,
        ),
        (r#"5e-324"#, "fb0000000000000001", 186668877),
        (r#"3.141592653589793"#, "fb400921fb54442d18", 4125965256),
        (r#"9007199254740992.0"#, "1b0020000000000000", 1581616925),
        (r#"9223372036854775807.0"#, "1b8000000000000000", 2583063103),
        (r#"9.223372036854776e18"#, "1b8000000000000000", 2583063103),
        (r#"-9.223372036854776e18"#, "3b7fffffffffffffff", 345277741),
        (r#"-9.223372036854778e18"#, "fbc3e0000000000001", 1346901907),
        (r#"1.844674407370955e19"#, "1bfffffffffffff800", 2657728186),
        (r#"1.8446744073709552e19"#, "fa5f800000", 2446446662),
        (r#"-1.8446744073709552e19"#, "fadf800000", 2103367517),
        (r#"1e2"#, "1864", 1811788592),
        (r#"1E2"#, "1864", 1811788592),
        (r#"[]"#, "80", 267099677),
        (r#"{}"#, "a0", 408952885),
        (r#"[1,[2,[3]]]"#, "820182028103", 957211508),
        (
            r#"[null,true,false,"x",1,-1,1.5,1.0,[],{}]"#,
            "8af6f5f461780120f93e000180a0",
            2922897042,
        ),
        (r#"[1,"1",1.0,true,null]"#, "8501613101f5f6", 2418922029),
        (r#"[[[[[]]]]]"#, "8181818180", 36576552),
        (r#"{"a":1}"#, "a1616101", 4244719751),
        (r#"{"a":1,"b":2}"#, "a2616101616202", 3853601438),
        (r#"{"b":2,"a":1}"#, "a2616101616202", 3853601438),
        (r#"{"z":1,"aa":2}"#, "a2617a0162616102", 3447691377),
        (
            r#"{"b":1,"a":2,"aa":3,"é":4,"z":5}"#,
            "a5616102616201617a056261610362c3a904",
            1776450423,
        ),
        (
            r#"{"aaa":1,"b":2,"ab":3,"B":4,"é":5,"z":6,"":7}"#,
            "a76007614204616202617a066261620362c3a9056361616101",
            1909168616,
        ),
        (
            r#"{"€":1,"aé":2,"ÿ":3,"zz":4,"😀":5,"\uffff":6,"abcd":7}"#,
            "a7627a7a0462c3bf036361c3a90263e282ac0163efbfbf0664616263640764f09f988005",
            322137714,
        ),
        (r#"{"aaa":1,"ÿ":2}"#, "a262c3bf026361616101", 1916061175),
        (
            r#"{"a":true,"bbb":1,"c":"text","dddd":2.5}"#,
            "a46161f56163647465787463626262016464646464f94100",
            4194743268,
        ),
        (r#"{"key":-0.0}"#, "a1636b657900", 1584938142),
        (
            r#"{"b":-0.0,"a":{"b":1},"c":0.0}"#,
            "a36161a1616201616200616300",
            1248073631,
        ),
        (
            r#"{"café":"façade","b":{"résumé":{"ÿ":true}}}"#,
            "a26162a16872c3a973756dc3a9a162c3bff565636166c3a9676661c3a7616465",
            3735528553,
        ),
        (r#"{"":{"":{"":""}}}"#, "a160a160a16060", 1807026819),
        (
            r#"{"a":[1,[],3],"b":null}"#,
            "a26161830180036162f6",
            372278382,
        ),
        (
            r#"{"x":[{"a":1},{"b":2},{"b":null}]}"#,
            "a1617883a1616101a1616202a16162f6",
            464677138,
        ),
        (
            r#"{"key":[null,true,{"x":1.5}]}"#,
            "a1636b657983f6f5a16178f93e00",
            436820021,
        ),
        (
            r#"{"abcdefghijklmnopqrstuvwxyz":1,"b":2}"#,
            "a2616202781a6162636465666768696a6b6c6d6e6f707172737475767778797a01",
            682398335,
        ),
        (
            r#"["fractional-flag-shorthand","jon@company.com"]"#,
            "8278196672616374696f6e616c2d666c61672d73686f727468616e646f6a6f6e40636f6d70616e792e636f6d",
            3783143057,
        ),
        (r#"["","user-1"]"#, "826066757365722d31", 896659817),
        (
            r#""fractional-flagjack""#,
            "736672616374696f6e616c2d666c61676a61636b",
            1435348822,
        ),
        (
            r#""shared-seedseven""#,
            "707368617265642d73656564736576656e",
            3083505270,
        ),
    ];

    // containers past the immediate-length limit / past the stack sort buffer
    const CONTAINER_VECTORS: &[(&str, &str, u32)] = &[
        (
            r#"{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k18":18,"k19":19,"k20":20,"k21":21,"k22":22,"k23":23}"#,
            "b818626b3000626b3101626b3202626b3303626b3404626b3505626b3606626b3707626b3808626b3909636b31300a636b31310b636b31320c636b31330d636b31340e636b31350f636b313610636b313711636b313812636b313913636b323014636b323115636b323216636b323317",
            2978582529,
        ),
        (
            r#"[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23]"#,
            "9818000102030405060708090a0b0c0d0e0f1011121314151617",
            3362068067,
        ),
        (
            r#"{"q0":0,"p1":1,"o2":2,"n3":3,"m4":4,"l5":5,"k6":6,"j7":7,"i8":8,"h9":9,"g10":10,"f11":11,"e12":12,"d13":13,"c14":14,"b15":15,"a16":16}"#,
            "b16268390962693808626a3707626b3606626c3505626d3404626e3303626f320262703101627130006361313610636231350f636331340e636431330d636531320c636631310b636731300a",
            1728798928,
        ),
    ];

    // (repeat count, repeated char, CBOR head hex, murmur3 of the whole encoding)
    const LONG_TEXT_VECTORS: &[(usize, char, &str, u32)] = &[
        (255, 'a', "78ff", 2946388577),
        (256, 'a', "790100", 1189501559),
        (65535, 'a', "79ffff", 533053835),
        (65536, 'a', "7a00010000", 2423876670),
        (128, 'é', "790100", 1927753289),
        (100000, 'x', "7a000186a0", 4003326147),
    ];

    // (f64, canonical CBOR hex) for direct `Cbor::f64` writes, NaN and infinities included
    const F64_VECTORS: &[(f64, &str)] = &[
        (0.5, "f93800"),
        (-0.0, "00"),
        (1.0, "01"),
        (f64::NAN, "f97e00"),
        (f64::INFINITY, "f97c00"),
        (f64::NEG_INFINITY, "f9fc00"),
        (18446744073709551616.0, "fa5f800000"),
        (-18446744073709551616.0, "fadf800000"),
        (9223372036854775808.0, "1b8000000000000000"),
        (-9223372036854775808.0, "3b7fffffffffffffff"),
        (f64::MAX, "fb7fefffffffffffff"),
        (f64::MIN_POSITIVE, "fb0010000000000000"),
        (1e-7, "fb3e7ad7f29abcaf48"),
        (-5.960464477539063e-8, "f98001"),
        (0.333_333_333_333_333_3, "fb3fd5555555555555"),
        (65504.0, "19ffe0"),
        (0.000_061_035_156_25, "f90400"),
        (1.0e300, "fb7e37e43c8800759c"),
        (-0.25, "f9b400"),
    ];

    // (input, seed, MurmurHash3 x86_32 as unsigned)
    const MURMUR3_VECTORS: &[(&[u8], u32, u32)] = &[
        (b"", 0x0, 0),
        (b"", 0x1, 1364076727),
        (b"", 0xffffffff, 2180083513),
        (b"a", 0x0, 1009084850),
        (b"ab", 0x0, 2613040991),
        (b"abc", 0x0, 3017643002),
        (b"abcd", 0x0, 1139631978),
        (b"abcde", 0x0, 3902511862),
        (b"hello", 0x0, 613153351),
        (b"hello", 0x2a, 3806057185),
        (b"Hello, world!", 0x0, 3224780355),
        (
            b"The quick brown fox jumps over the lazy dog",
            0x0,
            776992547,
        ),
        (
            b"The quick brown fox jumps over the lazy dog",
            0x9747b28c,
            799549133,
        ),
        (b"\x00", 0x0, 1364076727),
        (b"\x00\x00\x00\x00", 0x0, 593689054),
        (b"\xff\xff\xff\xff", 0x0, 1982413648),
        (b"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 0x0, 2779017879),
        (b"flag-keyuser-1", 0x0, 3611267318),
    ];

    /// Lowercase hex of `bytes`.
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
    }

    /// The canonical CBOR of a JSON value, collected.
    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        Cbor::new(&mut out).json(v);
        out
    }

    /// The streamed hash of a JSON value's canonical CBOR.
    fn hash(v: &Value) -> u32 {
        let mut hasher = Murmur3::new(0);
        Cbor::new(&mut hasher).json(v);
        hasher.finish()
    }

    /// A float literal must reach the encoder as the correctly rounded f64 (as Python parses it),
    /// which serde_json only guarantees with its `float_roundtrip` feature; without it, e.g.
    /// `5.960464477539063e-8` is parsed one ulp off and hashes differently.
    fn assert_float_parsed_exactly(text: &str, v: &Value) {
        if let (true, Some(parsed), Ok(exact)) = (v.is_f64(), v.as_f64(), text.parse::<f64>()) {
            assert_eq!(
                parsed, exact,
                "serde_json parsed {text} inexactly: enable serde_json's `float_roundtrip` feature"
            );
        }
    }

    /// Checks encoding and hash of every `(json text, cbor hex, hash)` vector.
    fn check_json_vectors(vectors: &[(&str, &str, u32)]) {
        for &(text, cbor, expected) in vectors {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_float_parsed_exactly(text, &v);
            let bytes = encode(&v);
            assert_eq!(hex(&bytes), cbor, "CBOR of {text}");
            assert_eq!(murmur3_32(&bytes, 0), expected, "one-shot hash of {text}");
            assert_eq!(hash(&v), expected, "streamed hash of {text}");
        }
    }

    #[test]
    fn murmur3_matches_reference() {
        for &(data, seed, expected) in MURMUR3_VECTORS {
            assert_eq!(murmur3_32(data, seed), expected, "{data:?} seed {seed}");
        }
    }

    #[test]
    fn murmur3_streaming_equals_one_shot_at_every_split() {
        let data = b"The quick brown fox jumps over the lazy dog";
        for len in 0..=data.len() {
            let data = &data[..len];
            let expected = murmur3_32(data, 7);
            for i in 0..=len {
                for j in i..=len {
                    let mut hasher = Murmur3::new(7);
                    hasher.write(&data[..i]);
                    hasher.write(&data[i..j]);
                    hasher.write(&[]);
                    hasher.write(&data[j..]);
                    assert_eq!(hasher.finish(), expected, "len {len} split {i}/{j}");
                }
            }
        }
    }

    #[test]
    fn murmur3_byte_at_a_time_equals_one_shot() {
        let data: Vec<u8> = (0..=255).collect();
        let mut hasher = Murmur3::new(0);
        data.iter().for_each(|b| hasher.write(&[*b]));
        assert_eq!(hasher.finish(), murmur3_32(&data, 0));
    }

    #[test]
    fn json_values_match_cbor2_and_mmh3() {
        check_json_vectors(JSON_VECTORS);
    }

    #[test]
    fn large_containers_match_cbor2_and_mmh3() {
        check_json_vectors(CONTAINER_VECTORS);
    }

    #[test]
    fn long_text_heads_and_hashes_match() {
        for &(count, ch, head, expected) in LONG_TEXT_VECTORS {
            let s: String = std::iter::repeat_n(ch, count).collect();
            let v = Value::String(s.clone());
            let bytes = encode(&v);
            let (got_head, body) = bytes.split_at(bytes.len() - s.len());
            assert_eq!(hex(got_head), head, "head of {count} x {ch:?}");
            assert_eq!(body, s.as_bytes());
            assert_eq!(hash(&v), expected, "hash of {count} x {ch:?}");
        }
    }

    #[test]
    fn f64_writes_match_cbor2() {
        for &(v, cbor) in F64_VECTORS {
            let mut out = Vec::new();
            Cbor::new(&mut out).f64(v);
            assert_eq!(hex(&out), cbor, "{v:e}");
        }
    }

    #[test]
    fn every_half_precision_value_is_written_as_half() {
        // Every finite binary16 value, rebuilt from its bits, must come back as the same half
        // (integral ones are normalised to integers first, so they are skipped).
        for bits in 0..=u16::MAX {
            let (sign, exp, man) = (bits >> 15, (bits >> 10) & 0x1f, bits & 0x3ff);
            if exp == 0x1f {
                continue;
            }
            let magnitude = if exp == 0 {
                f64::from(man) * 2f64.powi(-24)
            } else {
                f64::from(0x400 | man) * 2f64.powi(i32::from(exp) - 25)
            };
            let v = if sign == 1 { -magnitude } else { magnitude };
            if v.fract() == 0.0 {
                continue;
            }
            let mut out = Vec::new();
            Cbor::new(&mut out).f64(v);
            assert_eq!(out, [HALF, (bits >> 8) as u8, bits as u8], "{v:e}");
        }
    }

    #[test]
    fn integers_and_headers_use_the_shortest_argument() {
        let mut out = Vec::new();
        let mut cbor = Cbor::new(&mut out);
        cbor.i64(5);
        cbor.i64(i64::MAX);
        cbor.u64(u64::MAX);
        cbor.array_header(23);
        cbor.array_header(24);
        cbor.map_header(65_536);
        cbor.text("");
        cbor.bool(false);
        cbor.null();
        assert_eq!(
            hex(&out),
            "051b7fffffffffffffff1bffffffffffffffff979818ba0001000060f4f6"
        );
    }

    #[test]
    fn map_keys_sort_by_length_then_bytes() {
        let mut keys = ["b", "a", "aa", "é", "z", "", "ÿ", "€", "aé", "😀", "B"];
        keys.sort_by(|a, b| canonical_key_cmp(a, b));
        assert_eq!(
            keys,
            ["", "B", "a", "b", "z", "aa", "é", "ÿ", "aé", "€", "😀"]
        );
        assert_eq!(canonical_key_cmp("ab", "ab"), Ordering::Equal);
    }

    #[test]
    fn integers_beyond_64_bits_are_written_as_floats() {
        // Known divergence: serde_json (without `arbitrary_precision`) parses these literals as f64.
        // Python keeps exact ints: cbor2 writes 2^64 as the bignum c249010000000000000000 and
        // -2^63 - 1 as 3b8000000000000000. Here 2^64 stays a float and -2^63 - 1 rounds to -2^63.
        let cases = [
            ("18446744073709551616", "fa5f800000"),
            ("-18446744073709551616", "fadf800000"),
            ("-9223372036854775809", "3b7fffffffffffffff"),
        ];
        for (text, cbor) in cases {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(hex(&encode(&v)), cbor, "{text}");
        }
    }
}
