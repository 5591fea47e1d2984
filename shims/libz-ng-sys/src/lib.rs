//! The zlib API under the name `libz_ng_sys`, for pingora's `flate2` (which asks for the `zlib-ng`
//! backend, whose crate builds zlib-ng with cmake). flate2 calls only the standard zlib entry points
//! (`deflate*`, `inflate*`, `zlibVersion`, `z_stream`, `Z_*`), and reaches them through
//! `libz_ng_sys::*` exactly as it reaches them through `libz_sys::*` on its plain-zlib backend, so
//! re-exporting libz-sys is the whole adapter. The data plane never compresses or decompresses a
//! body (it forwards them untouched); this only keeps pingora's optional compression module
//! linkable. See docs/adr (the build needs no cmake).

pub use libz_sys::*;
