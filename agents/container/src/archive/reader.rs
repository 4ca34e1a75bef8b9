//! The byte streams of an import: the raw input hashed as it is read, the decompressor chosen
//! by magic bytes (gzip, zstd, else plain tar), and the tar stream under it watched for
//! truncation, oversized headers and data after the end.
//!
//! Truncation is checked by hand because the `tar` crate takes an EOF where a header should be
//! for the end of the archive, and a short read inside an entry for its end: the stream must
//! end with two zero blocks, every entry must deliver all its bytes, and a compressed stream
//! is read to its own end so its trailer (gzip CRC and length, zstd frame end) is checked.

use std::cell::Cell;
use std::io::{self, Cursor, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::ImportError;

const BLOCK: usize = 512;

/// Bytes the tar crate may read on its own between two entries: headers, PAX and GNU
/// long-name data (which it keeps in memory), padding. Paths are at most 4 KiB; this stops a
/// "header" of gigabytes before it is buffered.
const HEADER_PHASE_LIMIT: u64 = 1 << 20;

/// Zero padding accepted after the end-of-archive blocks (tar pads to 10 KiB records).
const MAX_TRAILER: u64 = 1 << 20;

/// Sha256 of everything read through it, and how much; counts into a shared progress total.
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    total: Rc<Cell<u64>>,
    eof: Rc<Cell<bool>>,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R, total: Rc<Cell<u64>>) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            total,
            eof: Rc::new(Cell::new(false)),
        }
    }

    /// Reads what is left (at most `MAX_TRAILER` bytes) and returns ("sha256:<hex>", length).
    pub(crate) fn finish(mut self) -> Result<(String, u64), ImportError> {
        let mut rest = io::sink();
        let n = io::copy(&mut (&mut self).take(MAX_TRAILER + 1), &mut rest).map_err(|e| {
            ImportError::Corrupt {
                detail: format!("reading the end: {e}"),
            }
        })?;
        if n > MAX_TRAILER {
            return Err(ImportError::Corrupt {
                detail: "more than 1 MiB of data after the end of the archive".to_string(),
            });
        }
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.bytes,
        ))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.total.set(self.total.get() + n as u64);
        Ok(n)
    }
}

/// "sha256:<hex>" of everything `reader` yields.
pub fn digest_of(mut reader: impl Read) -> io::Result<String> {
    let mut h = Hashing::new(&mut reader, Rc::new(Cell::new(0)));
    io::copy(&mut h, &mut io::sink())?;
    Ok(format!("sha256:{}", hex::encode(h.hasher.finalize())))
}

/// What the tar layer has seen, shared with the error classifier.
#[derive(Default)]
struct TarState {
    pos: Cell<u64>,
    eof: Cell<bool>,
    limit: Cell<Option<u64>>,
    over_limit: Cell<bool>,
    raw_eof: Rc<Cell<bool>>,
}

/// The decompressed tar bytes, counted, limited while the tar crate reads headers, hashed
/// (an image layer's diff_id is the sha256 of its uncompressed tar).
pub(crate) struct TarInput<'a> {
    inner: Box<dyn Read + 'a>,
    state: Rc<TarState>,
    hasher: Sha256,
}

impl Read for TarInput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let st = &self.state;
        let mut want = buf.len();
        if let Some(limit) = st.limit.get() {
            let left = limit.saturating_sub(st.pos.get());
            if left == 0 {
                st.over_limit.set(true);
                return Err(io::Error::other("tar header data over the limit"));
            }
            want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            st.eof.set(true);
        }
        self.hasher.update(&buf[..n]);
        st.pos.set(st.pos.get() + n as u64);
        Ok(n)
    }
}

/// Turns the I/O errors of reading a stream into what they mean for the import.
#[derive(Clone)]
pub(crate) struct Classifier {
    state: Rc<TarState>,
    what: Rc<str>,
}

impl Classifier {
    pub(crate) fn error(&self, e: io::Error) -> ImportError {
        let st = &self.state;
        if st.over_limit.get() {
            return ImportError::ArchiveTooLarge {
                what: format!("{}: one tar header (PAX or GNU long name)", self.what),
                limit: HEADER_PHASE_LIMIT,
            };
        }
        let detail = format!("{}: {e}", self.what);
        if st.eof.get() || st.raw_eof.get() || e.kind() == io::ErrorKind::UnexpectedEof {
            ImportError::Truncated { detail }
        } else {
            ImportError::Corrupt { detail }
        }
    }

    pub(crate) fn truncated(&self, detail: &str) -> ImportError {
        ImportError::Truncated {
            detail: format!("{}: {detail}", self.what),
        }
    }
}

/// A tar stream over a (possibly compressed) raw stream.
pub(crate) struct Stream<'a> {
    archive: tar::Archive<TarInput<'a>>,
    classifier: Classifier,
}

impl<'a> Stream<'a> {
    /// Sniffs the compression from the first bytes of `raw`. `what` names the stream in errors
    /// ("archive", "layer sha256:…").
    pub(crate) fn open<R: Read + 'a>(
        raw: &'a mut Hashing<R>,
        what: &str,
    ) -> Result<Self, ImportError> {
        let raw_eof = raw.eof.clone();
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < magic.len() {
            match raw.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ImportError::Corrupt {
                        detail: format!("{what}: {e}"),
                    })
                }
            }
        }
        if got == 0 {
            return Err(ImportError::NotAnArchive {
                found: format!("an empty {what}"),
            });
        }
        let head = Cursor::new(magic[..got].to_vec()).chain(raw);
        let inner: Box<dyn Read + 'a> = match &magic[..got] {
            [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(head)),
            [0x28, 0xb5, 0x2f, 0xfd] => {
                Box::new(zstd::stream::read::Decoder::new(head).map_err(|e| {
                    ImportError::Corrupt {
                        detail: format!("{what}: zstd: {e}"),
                    }
                })?)
            }
            _ => Box::new(head),
        };
        let state = Rc::new(TarState {
            raw_eof,
            ..TarState::default()
        });
        let input = TarInput {
            inner,
            state: state.clone(),
            hasher: Sha256::new(),
        };
        Ok(Stream {
            archive: tar::Archive::new(input),
            classifier: Classifier {
                state,
                what: Rc::from(what),
            },
        })
    }

    pub(crate) fn classifier(&self) -> Classifier {
        self.classifier.clone()
    }

    /// Calls `f` for every entry, in order, stopping at the first error.
    pub(crate) fn for_each(
        &mut self,
        mut f: impl FnMut(&mut tar::Entry<'_, TarInput<'a>>) -> Result<(), ImportError>,
    ) -> Result<(), ImportError> {
        let c = self.classifier.clone();
        let st = c.state.clone();
        let mut entries = self.archive.entries().map_err(|e| c.error(e))?;
        loop {
            st.limit
                .set(Some(st.pos.get().saturating_add(HEADER_PHASE_LIMIT)));
            let next = entries.next();
            st.limit.set(None);
            match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(c.error(e)),
                Some(Ok(mut entry)) => f(&mut entry)?,
            }
        }
    }

    /// Checks the end of the tar stream and returns the sha256 of the uncompressed tar.
    pub(crate) fn finish(self) -> Result<String, ImportError> {
        let c = self.classifier;
        let mut input = self.archive.into_inner();
        if c.state.eof.get() {
            return Err(c.truncated("the tar stream ends without its end-of-archive blocks"));
        }
        // The tar crate stopped at the first zero block; the second one must follow.
        let mut block = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match input.read(&mut block[got..]) {
                Ok(0) => {
                    return Err(c.truncated("the tar stream ends after one end-of-archive block"))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(c.error(e)),
            }
        }
        if block.iter().any(|b| *b != 0) {
            return Err(ImportError::Corrupt {
                detail: format!("{}: a lone zero block inside the tar stream", c.what),
            });
        }
        // Read to the end so a compressed stream's trailer is checked; only padding may follow.
        let mut buf = [0u8; 8192];
        let mut rest = 0u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(c.error(e)),
            };
            rest += n as u64;
            if rest > MAX_TRAILER || buf[..n].iter().any(|b| *b != 0) {
                return Err(ImportError::Corrupt {
                    detail: format!("{}: data after the end of the tar stream", c.what),
                });
            }
        }
        Ok(format!("sha256:{}", hex::encode(input.hasher.finalize())))
    }
}
