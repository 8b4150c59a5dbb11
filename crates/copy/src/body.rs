//! The bytes of one blob on their way to a destination, checked as they pass.
//!
//! A [`SendBody`] can be opened any number of times, at any offset (an upload resumed after
//! a cut asks for the bytes from where the registry stopped). Every pass reads the source
//! from its start and hashes all of it, skipping what comes before the offset: the checks
//! below then always cover the whole blob, and a pass that ends badly ends with an error
//! instead of the end of the stream, so the destination never commits it.
//!
//! - A blob sent as it is ([`SendBody::verbatim`]) must match its descriptor's digest and
//!   size; a compressed layer is also decompressed on the side and must match its `diff_id`.
//! - An uncompressed layer ([`SendBody::gzip`]) is gzip-compressed while it streams, with no
//!   temporary copy: its own bytes must match the `diff_id`, and the compressed digest and
//!   size are computed on the way ([`SendBody::finished`]). The output is the same on every
//!   pass (fixed level, empty gzip header), so a resumed upload continues the same bytes.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use sha2::Digest as _;

use ferry_core::media::Compression;
use ferry_core::verify::{Verifier, VerifyError};
use ferry_core::{Descriptor, Digest};

/// Where a blob's bytes come from: opened at their start, as many times as needed.
pub trait OpenBlob: Send + Sync {
    fn open(&self) -> io::Result<Box<dyn Read + Send>>;
}

impl<F> OpenBlob for F
where
    F: Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync,
{
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        self()
    }
}

/// What a pass over a blob found wrong with its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error(transparent)]
    Digest(#[from] VerifyError),
    #[error("layer {layer} holds content {actual} uncompressed, but the image config's diff_ids say {expected}")]
    DiffId {
        /// The layer as the source names it (its digest, or its diff_id for a layer only
        /// known uncompressed).
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {layer} is not valid {format} data: {reason}")]
    Decompress {
        layer: Digest,
        format: &'static str,
        reason: String,
    },
}

/// The gzip level layers are compressed with. The fastest: a registry's layers are read far
/// more often than written, but the ratio gained by higher levels on typical layers is a few
/// percent for several times the CPU, and compression is what a push of uncompressed layers
/// waits for.
const GZIP_LEVEL: u32 = 1;

/// Names the compression settings, for what is remembered about their output
/// ([`crate::CompressedMemo`]).
pub(crate) const GZIP_SETTINGS: &str = "gzip-1";

enum Kind {
    Verbatim {
        descriptor: Box<Descriptor>,
        /// The uncompressed digest to check, and how to decompress the bytes to get it.
        diff_id: Option<(Digest, Compression)>,
    },
    Gzip {
        /// The layer's name for messages (its source digest).
        layer: Digest,
        diff_id: Option<Digest>,
    },
}

/// One blob to send; see the module documentation.
pub struct SendBody {
    source: Arc<dyn OpenBlob>,
    kind: Kind,
    state: Arc<Mutex<PassState>>,
    /// Source bytes the latest pass of a layer being compressed has read.
    consumed: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct PassState {
    /// Digest and size of the bytes the last complete, checked pass produced.
    finished: Option<(Digest, u64)>,
    failure: Option<ContentError>,
}

impl SendBody {
    /// A blob sent byte for byte. `diff_id` (for a layer) is checked on the decompressed
    /// bytes, by the compression its media type declares.
    pub fn verbatim(
        descriptor: Descriptor,
        diff_id: Option<Digest>,
        source: Arc<dyn OpenBlob>,
    ) -> SendBody {
        let compression = ferry_core::media::layer_compression(&descriptor.media_type);
        SendBody {
            source,
            kind: Kind::Verbatim {
                diff_id: diff_id.map(|d| (d, compression)),
                descriptor: Box::new(descriptor),
            },
            state: Arc::default(),
            consumed: Arc::default(),
        }
    }

    /// An uncompressed layer, gzip-compressed on the way. `layer` names it in messages.
    pub fn gzip(layer: Digest, diff_id: Option<Digest>, source: Arc<dyn OpenBlob>) -> SendBody {
        SendBody {
            source,
            kind: Kind::Gzip { layer, diff_id },
            state: Arc::default(),
            consumed: Arc::default(),
        }
    }

    /// The size, when known before a pass (not for a layer being compressed).
    pub fn size(&self) -> Option<u64> {
        match &self.kind {
            Kind::Verbatim { descriptor, .. } => Some(descriptor.size),
            Kind::Gzip { .. } => None,
        }
    }

    /// The digest, when known before a pass.
    pub fn known_digest(&self) -> Option<&Digest> {
        match &self.kind {
            Kind::Verbatim { descriptor, .. } => Some(&descriptor.digest),
            Kind::Gzip { .. } => None,
        }
    }

    /// The blob's name for messages: its digest, or for a layer being compressed the
    /// digest the source gives it (the compressed one is not known before the end).
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Verbatim { descriptor, .. } => format!("blob {}", descriptor.digest),
            Kind::Gzip { layer, .. } => format!("layer {layer} (compressed on the way)"),
        }
    }

    /// Digest and size of the complete pass that last ended with every check passed.
    pub fn finished(&self) -> Option<(Digest, u64)> {
        self.state.lock().ok()?.finished.clone()
    }

    /// For a layer being compressed: how much of the source the latest pass has read, which
    /// says how far it is better than the compressed bytes sent (whose total is not known).
    pub fn consumed(&self) -> u64 {
        self.consumed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the last failed pass found wrong with the content, if that is why it failed.
    pub fn failure(&self) -> Option<ContentError> {
        self.state.lock().ok()?.failure.clone()
    }

    /// The bytes from `offset` on. The stream ends with an error instead of its end when a
    /// check fails (see [`SendBody::failure`]).
    pub fn open(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let raw = self.source.open()?;
        let (inner, side, out): (Inner, Side, Out) = match &self.kind {
            Kind::Verbatim {
                descriptor,
                diff_id,
            } => {
                let side = match diff_id {
                    None => Side::None,
                    Some((expected, c)) => Side::new(descriptor.digest.clone(), expected, *c),
                };
                (
                    Inner::Raw(raw),
                    side,
                    Out::Known(Verifier::new(
                        descriptor.digest.clone(),
                        Some(descriptor.size),
                    )),
                )
            }
            Kind::Gzip { layer, diff_id } => {
                self.consumed.store(0, std::sync::atomic::Ordering::Relaxed);
                let input = Hashing {
                    // The encoder reads in small pieces; each would be a read of the archive.
                    inner: Box::new(io::BufReader::with_capacity(1 << 18, raw)),
                    verifier: diff_id.clone().map(|d| Verifier::new(d, None)),
                    consumed: self.consumed.clone(),
                };
                let enc =
                    flate2::GzBuilder::new().read(input, flate2::Compression::new(GZIP_LEVEL));
                (
                    Inner::Gzip {
                        enc: Box::new(enc),
                        layer: layer.clone(),
                    },
                    Side::None,
                    Out::Computed(sha2::Sha256::new(), 0),
                )
            }
        };
        Ok(Box::new(Pass {
            inner,
            side,
            out: Some(out),
            skip: offset,
            state: self.state.clone(),
        }))
    }
}

/// Hashes what it reads, for the diff_id of a layer being compressed.
struct Hashing {
    inner: Box<dyn Read + Send>,
    verifier: Option<Verifier>,
    consumed: Arc<std::sync::atomic::AtomicU64>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(v) = &mut self.verifier {
            // No size is declared, so this cannot fail.
            let _ = v.update(&buf[..n]);
        }
        Ok(n)
    }
}

enum Inner {
    Raw(Box<dyn Read + Send>),
    Gzip {
        enc: Box<flate2::read::GzEncoder<Hashing>>,
        layer: Digest,
    },
}

/// The output's digest: checked against a descriptor, or computed.
enum Out {
    Known(Verifier),
    Computed(sha2::Sha256, u64),
}

/// A decompressor fed the blob's bytes beside the stream, hashing what comes out.
enum Side {
    None,
    Gzip {
        layer: Digest,
        dec: Box<flate2::write::MultiGzDecoder<VerifyWriter>>,
    },
    Zstd {
        layer: Digest,
        dec: Box<zstd::stream::write::Decoder<'static, VerifyWriter>>,
    },
    /// Broken already; the reason is reported at the end.
    Failed(ContentError),
}

struct VerifyWriter(Verifier);

impl Write for VerifyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Side {
    fn new(layer: Digest, expected: &Digest, c: Compression) -> Side {
        let w = VerifyWriter(Verifier::new(expected.clone(), None));
        match c {
            Compression::None => Side::None,
            Compression::Gzip => Side::Gzip {
                layer,
                dec: Box::new(flate2::write::MultiGzDecoder::new(w)),
            },
            Compression::Zstd => match zstd::stream::write::Decoder::new(w) {
                Ok(dec) => Side::Zstd {
                    layer,
                    dec: Box::new(dec),
                },
                Err(e) => Side::Failed(ContentError::Decompress {
                    layer,
                    format: "zstd",
                    reason: e.to_string(),
                }),
            },
        }
    }

    fn feed(&mut self, buf: &[u8]) {
        let failed = match self {
            Side::None | Side::Failed(_) => return,
            Side::Gzip { layer, dec } => dec.write_all(buf).err().map(|e| (layer, "gzip", e)),
            Side::Zstd { layer, dec } => dec.write_all(buf).err().map(|e| (layer, "zstd", e)),
        };
        if let Some((layer, format, e)) = failed {
            *self = Side::Failed(ContentError::Decompress {
                layer: layer.clone(),
                format,
                reason: e.to_string(),
            });
        }
    }

    fn finish(self) -> Result<(), ContentError> {
        let (layer, format, result) = match self {
            Side::None => return Ok(()),
            Side::Failed(e) => return Err(e),
            Side::Gzip { layer, dec } => (layer, "gzip", dec.finish()),
            Side::Zstd { layer, mut dec } => {
                let r = dec.flush().map(|()| dec.into_inner());
                (layer, "zstd", r)
            }
        };
        let w = result.map_err(|e| ContentError::Decompress {
            layer: layer.clone(),
            format,
            reason: e.to_string(),
        })?;
        diff_id_check(layer, w.0)
    }
}

fn diff_id_check(layer: Digest, v: Verifier) -> Result<(), ContentError> {
    match v.finish() {
        Ok(()) => Ok(()),
        Err(VerifyError::DigestMismatch { expected, actual }) => Err(ContentError::DiffId {
            layer,
            expected,
            actual,
        }),
        Err(e) => Err(e.into()),
    }
}

/// One pass over a blob.
struct Pass {
    inner: Inner,
    side: Side,
    out: Option<Out>,
    skip: u64,
    state: Arc<Mutex<PassState>>,
}

impl Pass {
    /// Run every check at the end of the bytes; record the result.
    fn finish(&mut self) -> Result<(), ContentError> {
        let side = std::mem::replace(&mut self.side, Side::None);
        let out = self.out.take();
        // The digest first: a blob that is not what its descriptor names is reported as
        // such, whatever its decompression then makes of it.
        let result: Result<Option<(Digest, u64)>, ContentError> = (|| {
            let done = match out {
                Some(Out::Known(v)) => {
                    let (digest, size) = (v.expected().clone(), v.seen());
                    v.finish()?;
                    Some((digest, size))
                }
                Some(Out::Computed(h, n)) => {
                    let d = format!("sha256:{}", hex_of(&h.finalize()));
                    Some((d.parse().expect("a sha256 digest"), n))
                }
                None => None,
            };
            side.finish()?;
            if let Inner::Gzip { enc, layer } = &mut self.inner {
                if let Some(v) = enc.get_mut().verifier.take() {
                    diff_id_check(layer.clone(), v)?;
                }
            }
            Ok(done)
        })();
        if let Ok(mut st) = self.state.lock() {
            match &result {
                Ok(Some(done)) => {
                    st.finished = Some(done.clone());
                    st.failure = None;
                }
                Ok(None) => {}
                Err(e) => st.failure = Some(e.clone()),
            }
        }
        result.map(|_| ())
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Read for Pass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out.is_none() {
                return Ok(0);
            }
            let n = match &mut self.inner {
                Inner::Raw(r) => r.read(buf)?,
                Inner::Gzip { enc, .. } => enc.read(buf)?,
            };
            if n == 0 {
                self.finish()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return Ok(0);
            }
            let chunk = &buf[..n];
            self.side.feed(chunk);
            match self.out.as_mut() {
                Some(Out::Known(v)) => {
                    if let Err(e) = v.update(chunk) {
                        let e = ContentError::from(e);
                        if let Ok(mut st) = self.state.lock() {
                            st.failure = Some(e.clone());
                        }
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                Some(Out::Computed(h, len)) => {
                    h.update(chunk);
                    *len += n as u64;
                }
                None => {}
            }
            if self.skip >= n as u64 {
                self.skip -= n as u64;
                continue;
            }
            let from = self.skip as usize;
            self.skip = 0;
            buf.copy_within(from..n, 0);
            return Ok(n - from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(bytes: Vec<u8>) -> Arc<dyn OpenBlob> {
        let bytes = Arc::new(bytes);
        Arc::new(move || -> io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(io::Cursor::new(bytes.as_ref().clone())))
        })
    }

    fn read_all(body: &SendBody, offset: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        body.open(offset)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn layer_bytes() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn gzip_body_is_the_same_on_every_pass_and_resumes_at_an_offset() {
        let data = layer_bytes();
        let diff_id = Digest::sha256_of(&data);
        let body = SendBody::gzip(diff_id.clone(), Some(diff_id.clone()), source(data.clone()));
        assert_eq!(body.known_digest(), None);
        let first = read_all(&body, 0).unwrap();
        assert_eq!(
            body.consumed(),
            data.len() as u64,
            "progress counts the source"
        );
        let (digest, size) = body.finished().expect("finished");
        assert_eq!(digest, Digest::sha256_of(&first));
        assert_eq!(size, first.len() as u64);
        assert!(first.len() < data.len(), "compressed");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&first[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let again = read_all(&body, 1000).unwrap();
        assert_eq!(again, first[1000..]);
    }

    #[test]
    fn gzip_body_fails_at_the_end_when_the_content_is_not_the_diff_id() {
        let data = layer_bytes();
        let wrong = Digest::sha256_of(b"something else");
        let body = SendBody::gzip(wrong.clone(), Some(wrong.clone()), source(data.clone()));
        let err = read_all(&body, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let Some(ContentError::DiffId {
            expected, actual, ..
        }) = body.failure()
        else {
            panic!("{:?}", body.failure())
        };
        assert_eq!(expected, wrong);
        assert_eq!(actual, Digest::sha256_of(&data));
        assert!(body.finished().is_none());
    }

    #[test]
    fn verbatim_body_checks_digest_and_diff_id() {
        let data = layer_bytes();
        let blob = gz(&data);
        let d = Descriptor::new(
            ferry_core::media::OCI_LAYER_GZIP,
            Digest::sha256_of(&blob),
            blob.len() as u64,
        );
        let ok = SendBody::verbatim(
            d.clone(),
            Some(Digest::sha256_of(&data)),
            source(blob.clone()),
        );
        assert_eq!(read_all(&ok, 0).unwrap(), blob);
        assert_eq!(read_all(&ok, 5).unwrap(), blob[5..]);
        assert_eq!(ok.finished(), Some((d.digest.clone(), d.size)));

        let bad_diff = SendBody::verbatim(
            d.clone(),
            Some(Digest::sha256_of(b"x")),
            source(blob.clone()),
        );
        read_all(&bad_diff, 0).unwrap_err();
        assert!(matches!(
            bad_diff.failure(),
            Some(ContentError::DiffId { .. })
        ));

        let mut damaged = blob.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 1;
        let bad = SendBody::verbatim(d, None, source(damaged));
        read_all(&bad, 0).unwrap_err();
        assert!(matches!(
            bad.failure(),
            Some(ContentError::Digest(VerifyError::DigestMismatch { .. }))
        ));
    }
}
