//! A local store's new objects written past the page cache (`O_DIRECT`).
//!
//! A sealed object is written once and read again only when it is fetched or delivered, so
//! copying it into the page cache buys nothing, and the copy is what a local store's write
//! costs most: the kernel must find and fill fresh cache pages for every byte, which on a
//! virtual machine that hands free memory back to its host costs several CPU-ms per MB
//! (docs/PERFORMANCE.md, "Objects written past the page cache"). Here the object goes
//! straight from its own memory to the device when it lies aligned there (sealed pages are
//! laid out so: [`ALIGN`]), else through a small aligned buffer the store keeps; only its
//! last partial block (under 4 KiB) goes through the cache. Each write is synchronous: it returns
//! once the device has the bytes, so a busy store keeps a few writes in flight on blocking
//! threads.
//!
//! The object's file is named and published exactly as `object_store::local` does (a
//! staging file `<path>#<n>`, hard-linked into place so an existing object is never
//! replaced, then unlinked), so the two write paths mix freely, crash leftovers look the same,
//! and everything else (reads, lists, deletes, streamed uploads) stays with object_store.
//! Durability is the caller's: the batched `syncfs` that follows covers the file's size,
//! its directory entries and the cached tail ([`crate::sync`]).
//!
//! Filesystems that refuse `O_DIRECT` (older tmpfs, some FUSE filesystems) or want a larger
//! alignment answer `EINVAL`; the writer then rewrites the object through the cache and
//! stops trying for this store.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::fs::OFlags;

mod stream;
pub(crate) use stream::{blocking, DirectStream};

/// Offsets, lengths and buffer addresses of direct writes are multiples of this: the page
/// size, which covers every logical block size in use (512 B and 4 KiB).
pub(crate) const ALIGN: usize = 4096;
/// The most a direct write from a buffer moves at once, and the size of each buffer (1 MiB writes took
/// 15-25 % less time than 256 KiB ones here).
pub(crate) const CHUNK: usize = 1024 * 1024;
/// Buffers kept between writes: enough for the writes of one store that run at once, few
/// enough that idle ones cost little memory.
const IDLE_BUFFERS: usize = 4;

/// How a new object ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Stored,
    /// An object was at the path already; it is unchanged and nothing was left behind.
    AlreadyExists,
}

/// Writes new objects of one local store past the page cache.
#[derive(Debug)]
pub(crate) struct DirectWriter {
    /// Cleared for good when the filesystem refuses direct writes.
    enabled: AtomicBool,
    /// The alignment used (tests set one the kernel refuses, to reach the fallback).
    align: usize,
    /// Bytes written past the cache so far, for tests.
    direct_bytes: AtomicU64,
    /// Buffers of finished writes, kept so their memory is touched once rather than once
    /// per object (freed memory goes back to the system and is fresh again when reused).
    idle: Mutex<Vec<Vec<u8>>>,
}

impl DirectWriter {
    pub(crate) fn new() -> DirectWriter {
        DirectWriter::with_alignment(ALIGN)
    }

    pub(crate) fn with_alignment(align: usize) -> DirectWriter {
        assert!(align.is_power_of_two() && align <= CHUNK);
        DirectWriter {
            enabled: AtomicBool::new(true),
            align,
            direct_bytes: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Whether writes still go past the cache.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn direct_bytes(&self) -> u64 {
        self.direct_bytes.load(Ordering::Relaxed)
    }

    /// Writes `bytes` as a new file at `dest`, creating its directories. Blocks: call it on a
    /// blocking thread.
    pub(crate) fn put_new(&self, dest: &Path, bytes: &[u8]) -> std::io::Result<Written> {
        let (file, staging) = self.create_staging(dest)?;
        let written = self
            .write_at(&file, bytes, 0, dest)
            .and_then(|()| publish(file, &staging, dest, Publish::Create));
        if !matches!(written, Ok(Written::Stored)) {
            let _ = std::fs::remove_file(&staging);
        }
        written
    }

    /// Creates `<dest>#<n>` for the first free `n`, with `O_DIRECT` while that is in use.
    pub(crate) fn create_staging(&self, dest: &Path) -> std::io::Result<(File, PathBuf)> {
        let mut n = 1u32;
        loop {
            let mut staging = dest.as_os_str().to_owned();
            staging.push(format!("#{n}"));
            let staging = PathBuf::from(staging);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            if self.enabled() {
                options.custom_flags(OFlags::DIRECT.bits() as i32);
            }
            match options.open(&staging) {
                Ok(file) => return Ok((file, staging)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => match dest.parent() {
                    Some(dir) => std::fs::create_dir_all(dir)?,
                    None => return Err(e),
                },
                Err(e) if e.kind() == ErrorKind::InvalidInput && self.enabled() => {
                    self.give_up(dest, &e)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `bytes` into `file` at `offset` (a multiple of the alignment). While the file
    /// is open with `O_DIRECT`, the aligned part goes past the cache; a part after it, which
    /// can only be the object's last, goes through the cache and ends direct writes to this
    /// file.
    pub(crate) fn write_at(
        &self,
        file: &File,
        bytes: &[u8],
        offset: u64,
        dest: &Path,
    ) -> std::io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(file)?;
        if !flags.contains(OFlags::DIRECT) {
            return file.write_all_at(bytes, offset);
        }
        let aligned = bytes.len() & !(self.align - 1);
        let mut done = 0;
        match self.write_aligned(file, &bytes[..aligned], offset) {
            Ok(()) => {
                done = aligned;
                self.direct_bytes
                    .fetch_add(aligned as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::InvalidInput => self.give_up(dest, &e),
            Err(e) => return Err(e),
        }
        if done < bytes.len() {
            rustix::fs::fcntl_setfl(file, flags - OFlags::DIRECT)?;
            file.write_all_at(&bytes[done..], offset + done as u64)?;
        }
        Ok(())
    }

    /// Writes `bytes` (a multiple of the alignment long) at `offset`: at once if they lie
    /// aligned in memory (the pipeline lays sealed pages out so), else a chunk at a time
    /// through an aligned buffer.
    fn write_aligned(&self, file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.as_ptr().align_offset(self.align) == 0 {
            return file.write_all_at(bytes, offset);
        }
        let mut buffer = self.take_buffer();
        let aligned = buffer.aligned();
        let written = bytes.chunks(CHUNK).enumerate().try_for_each(|(i, chunk)| {
            let into = &mut aligned[..chunk.len()];
            into.copy_from_slice(chunk);
            file.write_all_at(into, offset + (i * CHUNK) as u64)
        });
        self.give_back(buffer);
        written
    }

    /// An aligned buffer of [`CHUNK`] bytes: one kept from an earlier write if there is one.
    pub(crate) fn take_buffer(&self) -> Buffer {
        let kept = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let memory = kept.unwrap_or_else(|| vec![0; CHUNK + self.align]);
        let start = memory.as_ptr().align_offset(self.align);
        Buffer { memory, start }
    }

    /// Keeps `buffer` for a later write, unless enough are kept.
    pub(crate) fn give_back(&self, buffer: Buffer) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_BUFFERS {
            idle.push(buffer.memory);
        }
    }

    /// The filesystem refused a direct write: say so once and write through the cache from
    /// now on.
    fn give_up(&self, dest: &Path, e: &std::io::Error) {
        if self.enabled.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                path = %dest.display(),
                error = %e,
                "this filesystem refuses direct writes (O_DIRECT); the local store writes \
                 through the page cache instead"
            );
        }
    }
}

/// How a finished staging file takes its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// Only where nothing is (a hard link, which fails if the name exists).
    Create,
    /// Replacing whatever is there, atomically (a rename).
    Replace,
}

/// Publishes the staging file at `dest`; a staging file that was not published is the
/// caller's to remove.
pub(crate) fn publish(
    file: File,
    staging: &Path,
    dest: &Path,
    how: Publish,
) -> std::io::Result<Written> {
    drop(file);
    if how == Publish::Replace {
        std::fs::rename(staging, dest)?;
        return Ok(Written::Stored);
    }
    match std::fs::hard_link(staging, dest) {
        Ok(()) => {
            std::fs::remove_file(staging)?;
            Ok(Written::Stored)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Written::AlreadyExists),
        Err(e) => Err(e),
    }
}

/// An aligned buffer of [`CHUNK`] bytes inside a vector.
#[derive(Debug)]
pub(crate) struct Buffer {
    memory: Vec<u8>,
    start: usize,
}

impl Buffer {
    pub(crate) fn aligned(&mut self) -> &mut [u8] {
        &mut self.memory[self.start..self.start + CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory on the checkout's filesystem (`/tmp` may be a tmpfs, which older kernels
    /// do not let write past the cache).
    pub(super) fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(".direct-test")
            .tempdir_in(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
    }

    pub(super) fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Objects of every size around the block and chunk boundaries are stored whole, the
    /// aligned part of each past the cache, and no staging file stays.
    #[test]
    fn objects_of_every_size_are_written_past_the_cache_and_read_back_whole() {
        let dir = scratch();
        let writer = DirectWriter::new();
        let sizes = [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            CHUNK - 1,
            CHUNK,
            CHUNK + ALIGN,
            3 * CHUNK + 123,
        ];
        let mut direct = 0;
        for (i, len) in sizes.into_iter().enumerate() {
            let dest = dir.path().join(format!("tenant/job/{i}"));
            let bytes = pattern(len);
            assert_eq!(writer.put_new(&dest, &bytes).unwrap(), Written::Stored);
            assert_eq!(std::fs::read(&dest).unwrap(), bytes, "size {len}");
            direct += (len / ALIGN * ALIGN) as u64;
            assert_eq!(writer.direct_bytes(), direct, "size {len}");
        }
        assert!(writer.enabled());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tenant/job"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains('#'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Bytes that lie aligned in memory are written from where they are, in one write; the
    /// same object from an unaligned place goes through the buffers; both read back whole.
    #[test]
    fn aligned_bytes_are_written_from_where_they_lie() {
        let dir = scratch();
        let writer = DirectWriter::new();
        let len = 3 * CHUNK + 4321;
        let mut memory = vec![0u8; len + 2 * ALIGN];
        let start = memory.as_ptr().align_offset(ALIGN);
        memory[start..start + len].copy_from_slice(&pattern(len));
        for (name, offset) in [("aligned", start), ("unaligned", start + 1)] {
            let bytes = &mut memory[offset..offset + len];
            bytes.copy_from_slice(&pattern(len));
            let dest = dir.path().join(name);
            assert_eq!(writer.put_new(&dest, bytes).unwrap(), Written::Stored);
            assert_eq!(std::fs::read(&dest).unwrap(), pattern(len), "{name}");
            assert_eq!(
                writer.idle.lock().unwrap().len(),
                usize::from(name == "unaligned")
            );
        }
        assert_eq!(writer.direct_bytes(), 2 * (len / ALIGN * ALIGN) as u64);
    }

    /// An object already at the path is neither replaced nor changed, and the attempt leaves
    /// no staging file.
    #[test]
    fn an_existing_object_is_never_replaced() {
        let dir = scratch();
        let writer = DirectWriter::new();
        let dest = dir.path().join("t/j/p");
        writer.put_new(&dest, &pattern(10_000)).unwrap();
        assert_eq!(
            writer.put_new(&dest, &[7; 20_000]).unwrap(),
            Written::AlreadyExists
        );
        assert_eq!(std::fs::read(&dest).unwrap(), pattern(10_000));
        assert_eq!(
            std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            1
        );
    }

    /// A staging file a crashed writer left is stepped over, not overwritten or published.
    #[test]
    fn a_crashed_writers_staging_file_is_left_to_the_cleanup() {
        let dir = scratch();
        let dest = dir.path().join("t/j/p");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let leftover = dir.path().join("t/j/p#1");
        std::fs::write(&leftover, b"half").unwrap();
        DirectWriter::new()
            .put_new(&dest, &pattern(ALIGN * 3))
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), pattern(ALIGN * 3));
        assert_eq!(std::fs::read(&leftover).unwrap(), b"half");
    }

    /// When the kernel refuses a direct write (here: an alignment it does not accept), the
    /// object is written through the cache instead, whole, and later ones skip the attempt.
    #[test]
    fn a_refused_direct_write_falls_back_to_the_cache_for_good() {
        let dir = scratch();
        let writer = DirectWriter::with_alignment(2);
        for (i, len) in [100_001, 3 * CHUNK + 5].into_iter().enumerate() {
            let dest = dir.path().join(format!("t/j/{i}"));
            assert_eq!(
                writer.put_new(&dest, &pattern(len)).unwrap(),
                Written::Stored
            );
            assert_eq!(std::fs::read(&dest).unwrap(), pattern(len));
        }
        assert!(!writer.enabled());
        assert_eq!(writer.direct_bytes(), 0);
    }
}
