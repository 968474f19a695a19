//! The sealed object format: what every stored byte looks like. `docs/FORMAT.md` is the
//! normative description; this module is its only implementation in Rust.
//!
//! An object is a header followed by fixed-size AES-256-GCM chunks. Each object has its own
//! random data key (DEK), wrapped by the tenant's key-encryption key (KEK) and stored in the
//! header. The chunk key and a key commitment are derived from the DEK and a random salt with
//! HKDF-SHA-256. Every chunk's nonce is its index plus a final-chunk flag, and its associated
//! data is a digest of the object key and the whole header, so that chunks seal and open
//! independently (in parallel, or one alone) while truncation, reordering, splicing between
//! objects and header edits are all detected.

use bytes::{Buf, Bytes, BytesMut};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

mod keys;
pub use keys::*;
mod part;
pub use part::{open_part, part_version, seal_part};

/// First bytes of every sealed object.
pub const MAGIC: [u8; 4] = *b"QRSO";
/// The only format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Suite 1: AES-256-GCM chunks, HKDF-SHA-256 derivation, HKDF key commitment, AES-256-GCM key wrap.
pub const SUITE_AES256GCM_HKDF_SHA256: u8 = 1;
/// Bytes of authentication tag after every chunk.
pub const TAG_LEN: usize = 16;
/// Bytes of a wrapped data key: nonce (12) + ciphertext (32) + tag (16).
pub const WRAPPED_KEY_LEN: usize = 60;
/// Smallest allowed chunk size.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest allowed chunk size.
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// The chunk size Quire writes (chosen from the `seal` benchmark: large enough that the tag
/// and per-chunk setup cost nothing measurable, small enough to keep memory per page low).
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;
/// Most chunks one object may have: the counter never reaches 2^32, far inside the 2^64
/// space of the nonce counter field.
pub const MAX_CHUNKS: u64 = 1 << 32;
/// Upper bound on a header's encoded size.
pub const MAX_HEADER_LEN: usize = 512;
const FIXED_HEADER_LEN: usize = 78;

const LABEL_CHUNK_KEY: &[u8] = b"quire/1 chunk key";
const LABEL_COMMITMENT: &[u8] = b"quire/1 key commitment";
const LABEL_AAD: &[u8] = b"quire/1 chunk aad";
const LABEL_WRAP: &[u8] = b"quire/1 dek wrap";

/// Why a sealed object could not be opened. No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("not a sealed object (bad magic)")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported algorithm suite {0}")]
    UnsupportedSuite(u8),
    #[error("malformed header: {0}")]
    MalformedHeader(&'static str),
    #[error("the key commitment does not match: wrong key or tampered header")]
    CommitmentMismatch,
    #[error("the data key could not be unwrapped: wrong key-encryption key or tampered header")]
    UnwrapFailed,
    #[error(
        "chunk {0} failed authentication: tampered, reordered, truncated or from another object"
    )]
    ChunkAuthFailed(u64),
    #[error("the object ends before its final chunk")]
    Truncated,
    #[error("the object has {0} chunks, more than the format allows")]
    TooManyChunks(u64),
    #[error("bytes follow the final chunk")]
    TrailingData,
}

/// How the plaintext was compressed before sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

impl Compression {
    fn to_u8(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
    fn from_u8(v: u8) -> Result<Self, SealError> {
        match v {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            _ => Err(SealError::MalformedHeader("unknown compression id")),
        }
    }
}

/// A parsed object header. `encoded` holds its exact bytes, which every chunk authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub compression: Compression,
    pub chunk_size: u32,
    pub salt: [u8; 32],
    pub commitment: [u8; 32],
    pub kek: KekRef,
    pub wrapped_dek: [u8; WRAPPED_KEY_LEN],
    encoded: Vec<u8>,
}

impl Header {
    /// The header's bytes as stored.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Parses a header from the start of `buf`. `Ok(None)` means more bytes are needed.
    pub fn parse(buf: &[u8]) -> Result<Option<Header>, SealError> {
        if buf.len() < 8 {
            return if MAGIC.starts_with(&buf[..buf.len().min(4)]) {
                Ok(None)
            } else {
                Err(SealError::BadMagic)
            };
        }
        if buf[..4] != MAGIC {
            return Err(SealError::BadMagic);
        }
        if buf[4] != VERSION {
            return Err(SealError::UnsupportedVersion(buf[4]));
        }
        if buf[5] != SUITE_AES256GCM_HKDF_SHA256 {
            return Err(SealError::UnsupportedSuite(buf[5]));
        }
        let len = u16::from_be_bytes([buf[6], buf[7]]) as usize;
        if !(FIXED_HEADER_LEN..=MAX_HEADER_LEN).contains(&len) {
            return Err(SealError::MalformedHeader("header length out of range"));
        }
        if buf.len() < len {
            return Ok(None);
        }
        let h = &buf[..len];
        let compression = Compression::from_u8(h[8])?;
        if h[9] != 0 {
            return Err(SealError::MalformedHeader("reserved byte is not zero"));
        }
        let chunk_size = u32::from_be_bytes(h[10..14].try_into().unwrap());
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(SealError::MalformedHeader("chunk size out of range"));
        }
        let salt: [u8; 32] = h[14..46].try_into().unwrap();
        let commitment: [u8; 32] = h[46..78].try_into().unwrap();
        let mut rest = &h[FIXED_HEADER_LEN..];
        let mut take_str = |what: &'static str| -> Result<String, SealError> {
            let (&n, tail) = rest
                .split_first()
                .ok_or(SealError::MalformedHeader("header ends early"))?;
            let n = n as usize;
            if n == 0 || n > 64 || tail.len() < n {
                return Err(SealError::MalformedHeader(what));
            }
            let s = std::str::from_utf8(&tail[..n])
                .map_err(|_| SealError::MalformedHeader(what))?
                .to_owned();
            // Identifiers name files and tenants downstream (the vault's key files): only
            // the characters the protocol allows, never a path.
            crate::wire::validate_id("sealed header id", &s)
                .map_err(|_| SealError::MalformedHeader(what))?;
            rest = &tail[n..];
            Ok(s)
        };
        let tenant = take_str("bad tenant id")?;
        let kek_id = take_str("bad key id")?;
        if rest.len() != 4 + WRAPPED_KEY_LEN {
            return Err(SealError::MalformedHeader(
                "header length does not match its fields",
            ));
        }
        let version = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let wrapped_dek: [u8; WRAPPED_KEY_LEN] = rest[4..].try_into().unwrap();
        Ok(Some(Header {
            compression,
            chunk_size,
            salt,
            commitment,
            kek: KekRef {
                tenant,
                kek_id,
                version,
            },
            wrapped_dek,
            encoded: h.to_vec(),
        }))
    }

    fn encode(
        compression: Compression,
        chunk_size: u32,
        salt: [u8; 32],
        commitment: [u8; 32],
        kek: KekRef,
        wrapped_dek: [u8; WRAPPED_KEY_LEN],
    ) -> Header {
        assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size));
        assert!(!kek.tenant.is_empty() && kek.tenant.len() <= 64);
        assert!(!kek.kek_id.is_empty() && kek.kek_id.len() <= 64);
        let mut e = Vec::with_capacity(MAX_HEADER_LEN);
        e.extend_from_slice(&MAGIC);
        e.push(VERSION);
        e.push(SUITE_AES256GCM_HKDF_SHA256);
        e.extend_from_slice(&[0, 0]);
        e.push(compression.to_u8());
        e.push(0);
        e.extend_from_slice(&chunk_size.to_be_bytes());
        e.extend_from_slice(&salt);
        e.extend_from_slice(&commitment);
        e.push(kek.tenant.len() as u8);
        e.extend_from_slice(kek.tenant.as_bytes());
        e.push(kek.kek_id.len() as u8);
        e.extend_from_slice(kek.kek_id.as_bytes());
        e.extend_from_slice(&kek.version.to_be_bytes());
        e.extend_from_slice(&wrapped_dek);
        let len = e.len() as u16;
        e[6..8].copy_from_slice(&len.to_be_bytes());
        Header {
            compression,
            chunk_size,
            salt,
            commitment,
            kek,
            wrapped_dek,
            encoded: e,
        }
    }

    /// This header with its data key re-wrapped under `new_kek` (key rotation). The body is
    /// untouched: chunks do not authenticate the key-wrap section, and the commitment proves
    /// the re-wrapped key is the same data key.
    pub fn rewrap(
        &self,
        old_kek: &SecretKey,
        new_kek: &SecretKey,
        new_ref: KekRef,
    ) -> Result<Header, SealError> {
        if new_ref.tenant != self.kek.tenant {
            return Err(SealError::MalformedHeader(
                "a data key cannot move to another tenant",
            ));
        }
        let dek = unwrap_key(old_kek, &self.kek, &self.wrapped_dek)?;
        if !bool::from(derive(&dek, &self.salt).commitment.ct_eq(&self.commitment)) {
            return Err(SealError::CommitmentMismatch);
        }
        let wrapped = wrap_key(new_kek, &new_ref, &dek);
        Ok(Header::encode(
            self.compression,
            self.chunk_size,
            self.salt,
            self.commitment,
            new_ref,
            wrapped,
        ))
    }

    /// Total stored size of an object with `plaintext_len` bytes (after compression) under this header.
    pub fn sealed_size(&self, plaintext_len: u64) -> u64 {
        let cs = self.chunk_size as u64;
        let chunks = plaintext_len.div_ceil(cs).max(1);
        self.encoded.len() as u64 + plaintext_len + chunks * TAG_LEN as u64
    }
}

struct Derived {
    chunk_key: Zeroizing<[u8; 32]>,
    commitment: [u8; 32],
}

fn derive(dek: &SecretKey, salt: &[u8; 32]) -> Derived {
    let hk = Hkdf::<Sha256>::new(Some(salt), dek.expose());
    let mut chunk_key = Zeroizing::new([0u8; 32]);
    let mut commitment = [0u8; 32];
    hk.expand(LABEL_CHUNK_KEY, &mut chunk_key[..])
        .expect("32 bytes is a valid HKDF length");
    hk.expand(LABEL_COMMITMENT, &mut commitment)
        .expect("32 bytes is a valid HKDF length");
    Derived {
        chunk_key,
        commitment,
    }
}

/// Seals and opens the chunks of one object. Cheap to share between threads (`&self` only),
/// so chunks of one page can be sealed in parallel.
///
/// Chunks go through ring's AES-256-GCM, the fastest implementation on our machines (about
/// 2.5x the `aes-gcm` crate, see the `seal` bench); the tests check it byte for byte against
/// `aes-gcm`, which also wraps data keys. ring does not wipe its expanded key schedule on
/// drop; the chunk key bytes we derive are wiped (see docs/FORMAT.md, "Key hygiene").
pub struct ChunkCipher {
    aead: ring::aead::LessSafeKey,
    aad: [u8; 32],
    chunk_size: u32,
    #[cfg(test)]
    test_key: [u8; 32],
}

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCipher")
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

/// The associated data of every chunk: the object key and the header's bound part, which is
/// everything but the header length and the key-wrap section. Leaving the key-wrap section out
/// lets a key rotation re-wrap the data key without re-sealing the body; that section is
/// authenticated by the key wrap itself and tied to the chunk key by the commitment.
fn chunk_aad(object_key: &str, header: &Header) -> [u8; 32] {
    let e = &header.encoded;
    let bound_end = FIXED_HEADER_LEN + 1 + header.kek.tenant.len();
    let mut h = Sha256::new();
    h.update(LABEL_AAD);
    h.update((object_key.len() as u64).to_be_bytes());
    h.update(object_key.as_bytes());
    h.update(&e[..6]);
    h.update(&e[8..bound_end]);
    h.finalize().into()
}

/// The nonce of chunk `index`: `00 00 00 || u64be(index) || final flag`.
pub fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

fn ring_key(chunk_key: &[u8; 32]) -> ring::aead::LessSafeKey {
    ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, chunk_key)
            .expect("32 bytes is an AES-256 key"),
    )
}

impl ChunkCipher {
    /// Starts a new object: draws a data key and salt, wraps the key under `kek`, and returns
    /// the header to store first and the cipher for its chunks.
    pub fn create(
        kek: &SecretKey,
        kek_ref: KekRef,
        object_key: &str,
        compression: Compression,
        chunk_size: u32,
    ) -> (Header, ChunkCipher) {
        let dek = SecretKey::generate();
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).expect("the OS random source failed");
        let wrapped = wrap_key(kek, &kek_ref, &dek);
        Self::create_with(
            &dek,
            salt,
            wrapped,
            kek_ref,
            object_key,
            compression,
            chunk_size,
        )
    }

    /// Deterministic variant of [`ChunkCipher::create`] for test vectors: the caller supplies
    /// the data key, salt and wrapped key. Never reuse a (data key, salt) pair for two objects.
    pub fn create_with(
        dek: &SecretKey,
        salt: [u8; 32],
        wrapped_dek: [u8; WRAPPED_KEY_LEN],
        kek_ref: KekRef,
        object_key: &str,
        compression: Compression,
        chunk_size: u32,
    ) -> (Header, ChunkCipher) {
        let d = derive(dek, &salt);
        let header = Header::encode(
            compression,
            chunk_size,
            salt,
            d.commitment,
            kek_ref,
            wrapped_dek,
        );
        let cipher = ChunkCipher {
            aead: ring_key(&d.chunk_key),
            aad: chunk_aad(object_key, &header),
            chunk_size,
            #[cfg(test)]
            test_key: *d.chunk_key,
        };
        (header, cipher)
    }

    /// Prepares to open an object: unwraps its data key with `kek` and checks the commitment.
    pub fn open(
        kek: &SecretKey,
        header: &Header,
        object_key: &str,
    ) -> Result<ChunkCipher, SealError> {
        let dek = unwrap_key(kek, &header.kek, &header.wrapped_dek)?;
        let d = derive(&dek, &header.salt);
        if !bool::from(d.commitment.ct_eq(&header.commitment)) {
            return Err(SealError::CommitmentMismatch);
        }
        Ok(ChunkCipher {
            aead: ring_key(&d.chunk_key),
            aad: chunk_aad(object_key, header),
            chunk_size: header.chunk_size,
            #[cfg(test)]
            test_key: *d.chunk_key,
        })
    }

    /// The chunk key and associated data, for cross-checking against another AES-GCM
    /// implementation in tests. Never call this outside tests.
    #[cfg(test)]
    fn dangerous_export_for_tests(&self) -> ([u8; 32], [u8; 32]) {
        (self.test_key, self.aad)
    }

    /// Plaintext bytes per chunk (the final chunk holds 0 to this many).
    pub fn chunk_size(&self) -> usize {
        self.chunk_size as usize
    }

    /// Encrypts `buf` in place and appends the tag. `buf` must hold exactly `chunk_size`
    /// bytes unless `last`.
    pub fn seal_chunk(&self, index: u64, last: bool, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[0; TAG_LEN]);
        self.seal_chunk_in_place(index, last, buf);
    }

    /// As [`ChunkCipher::seal_chunk`] for a chunk laid out where the sealed object will hold
    /// it: `chunk` is the plaintext followed by `TAG_LEN` bytes of room for the tag.
    pub fn seal_chunk_in_place(&self, index: u64, last: bool, chunk: &mut [u8]) {
        assert!(index < MAX_CHUNKS, "object exceeds the chunk limit");
        assert!(chunk.len() >= TAG_LEN, "no room for the tag");
        let (plain, tag_room) = chunk.split_at_mut(chunk.len() - TAG_LEN);
        assert!(plain.len() <= self.chunk_size() && (last || plain.len() == self.chunk_size()));
        // Unique per key: one chunk key per object, one index per chunk (docs/FORMAT.md).
        let nonce = ring::aead::Nonce::assume_unique_for_key(chunk_nonce(index, last));
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(&self.aad), plain)
            .expect("chunk within AES-GCM limits");
        tag_room.copy_from_slice(tag.as_ref());
    }

    /// Verifies and decrypts a sealed chunk in place, removing the tag.
    pub fn open_chunk(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), SealError> {
        let max = self.chunk_size() + TAG_LEN;
        if buf.len() < TAG_LEN || buf.len() > max || (!last && buf.len() != max) {
            return Err(SealError::ChunkAuthFailed(index));
        }
        let nonce = ring::aead::Nonce::assume_unique_for_key(chunk_nonce(index, last));
        let plain_len = match self.aead.open_in_place(
            nonce,
            ring::aead::Aad::from(&self.aad),
            buf.as_mut_slice(),
        ) {
            Ok(plain) => plain.len(),
            Err(_) => {
                buf.zeroize();
                buf.clear();
                return Err(SealError::ChunkAuthFailed(index));
            }
        };
        buf.truncate(plain_len);
        Ok(())
    }
}

/// Splits a plaintext stream into chunks of exactly `chunk_size` bytes and a final chunk of
/// 0 to `chunk_size` bytes. A chunk is released as non-final only once at least one byte
/// beyond it has arrived, so the final flag is always right.
#[derive(Debug)]
pub struct Chunker {
    chunk_size: usize,
    /// The chunk being filled, allocated with room for its tag so sealing never reallocates.
    current: Vec<u8>,
    next_index: u64,
}

/// A plaintext chunk ready to seal.
#[derive(Debug)]
pub struct PlainChunk {
    pub index: u64,
    pub last: bool,
    pub data: Vec<u8>,
}

impl Chunker {
    pub fn new(chunk_size: u32) -> Self {
        Chunker {
            chunk_size: chunk_size as usize,
            current: Vec::with_capacity(chunk_size as usize + TAG_LEN),
            next_index: 0,
        }
    }

    /// Appends plaintext; returns the chunks it completed.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<PlainChunk> {
        let mut out = Vec::new();
        while !data.is_empty() {
            if self.current.len() == self.chunk_size {
                // More bytes follow, so the full chunk is not the last one.
                let fresh = Vec::with_capacity(self.chunk_size + TAG_LEN);
                let full = std::mem::replace(&mut self.current, fresh);
                out.push(self.emit(full, false));
            }
            let n = (self.chunk_size - self.current.len()).min(data.len());
            self.current.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        out
    }

    /// Ends the stream: returns the final chunk.
    pub fn finish(mut self) -> PlainChunk {
        let rest = std::mem::take(&mut self.current);
        self.emit(rest, true)
    }

    fn emit(&mut self, data: Vec<u8>, last: bool) -> PlainChunk {
        let c = PlainChunk {
            index: self.next_index,
            last,
            data,
        };
        self.next_index += 1;
        c
    }
}

impl Drop for Chunker {
    fn drop(&mut self) {
        self.current.zeroize();
    }
}

/// Incremental reader of a sealed object: feed stored bytes, take sealed chunks to open.
#[derive(Debug, Default)]
pub struct SealedReader {
    buf: BytesMut,
    header: Option<Header>,
    next_index: u64,
    done: bool,
}

/// A sealed chunk cut from the stored bytes, with its position.
#[derive(Debug)]
pub struct SealedChunk {
    pub index: u64,
    pub last: bool,
    pub data: Vec<u8>,
}

impl SealedReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the store.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The header, once enough bytes arrived; errors if they are not a valid header.
    pub fn header(&mut self) -> Result<Option<&Header>, SealError> {
        if self.header.is_none() {
            match Header::parse(&self.buf)? {
                Some(h) => {
                    self.buf.advance(h.encoded.len());
                    self.header = Some(h);
                }
                None => return Ok(None),
            }
        }
        Ok(self.header.as_ref())
    }

    /// The next complete sealed chunk. Pass `eof = true` once the store has no more bytes:
    /// only then can the final chunk be recognised.
    pub fn next_chunk(&mut self, eof: bool) -> Result<Option<SealedChunk>, SealError> {
        let Some(h) = self.header()? else {
            return if eof {
                Err(SealError::Truncated)
            } else {
                Ok(None)
            };
        };
        let full = h.chunk_size as usize + TAG_LEN;
        if self.done {
            return if self.buf.is_empty() {
                Ok(None)
            } else {
                Err(SealError::TrailingData)
            };
        }
        let (take, last) = if self.buf.len() > full {
            (full, false)
        } else if eof {
            if self.buf.len() < TAG_LEN {
                return Err(SealError::Truncated);
            }
            (self.buf.len(), true)
        } else {
            return Ok(None);
        };
        if self.next_index >= MAX_CHUNKS {
            return Err(SealError::TooManyChunks(self.next_index));
        }
        let data = self.buf.split_to(take).to_vec();
        let c = SealedChunk {
            index: self.next_index,
            last,
            data,
        };
        self.next_index += 1;
        self.done = last;
        Ok(Some(c))
    }

    /// Whether the final chunk has been taken.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Seals a whole small object in one call (manifests, tests). Large pages go through
/// [`Chunker`] and [`ChunkCipher`] in the pipeline instead.
pub fn seal_all(
    kek: &SecretKey,
    kek_ref: KekRef,
    object_key: &str,
    compression: Compression,
    chunk_size: u32,
    plaintext: &[u8],
) -> Bytes {
    let (header, cipher) = ChunkCipher::create(kek, kek_ref, object_key, compression, chunk_size);
    let mut out = header.encoded().to_vec();
    let mut chunker = Chunker::new(chunk_size);
    let mut chunks = chunker.push(plaintext);
    chunks.push(chunker.finish());
    for mut c in chunks {
        cipher.seal_chunk(c.index, c.last, &mut c.data);
        out.extend_from_slice(&c.data);
    }
    Bytes::from(out)
}

/// Opens a whole sealed object in one call; `kek_for` supplies the KEK the header names.
pub fn open_all(
    sealed: &[u8],
    object_key: &str,
    kek_for: impl FnOnce(&KekRef) -> Option<SecretKey>,
) -> Result<(Header, Vec<u8>), SealError> {
    let mut r = SealedReader::new();
    r.feed(sealed);
    let header = r.header()?.ok_or(SealError::Truncated)?.clone();
    let kek = kek_for(&header.kek).ok_or(SealError::UnwrapFailed)?;
    let cipher = ChunkCipher::open(&kek, &header, object_key)?;
    let mut out = Vec::with_capacity(sealed.len());
    while let Some(mut c) = r.next_chunk(true)? {
        cipher.open_chunk(c.index, c.last, &mut c.data)?;
        out.extend_from_slice(&c.data);
    }
    Ok((header, out))
}

#[cfg(test)]
mod tests;
