//! A large object streamed to a local store past the page cache: the bytes gather in one
//! aligned buffer, each full buffer is written on a blocking thread while the caller waits
//! (its backpressure), and the staging file takes its place at the end.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::{publish, Buffer, DirectWriter, Publish, Written, CHUNK};

/// An object being streamed. Dropped without [`DirectStream::finish`], it removes its
/// staging file.
#[derive(Debug)]
pub(crate) struct DirectStream {
    writer: Arc<DirectWriter>,
    /// Shared with the blocking thread of a write in progress.
    file: Option<Arc<File>>,
    staging: PathBuf,
    dest: PathBuf,
    how: Publish,
    /// `None` only while a write has it, or after a write was cancelled.
    buffer: Option<Buffer>,
    /// Bytes in the buffer.
    filled: usize,
    /// Bytes of the object in the file so far.
    offset: u64,
}

impl DirectStream {
    /// Creates the staging file of an object to be published at `dest` as `how` says.
    pub(crate) async fn begin(
        writer: Arc<DirectWriter>,
        dest: PathBuf,
        how: Publish,
    ) -> std::io::Result<DirectStream> {
        let (file, staging, writer, dest) = blocking(move || {
            let (file, staging) = writer.create_staging(&dest)?;
            Ok((file, staging, writer, dest))
        })
        .await?;
        Ok(DirectStream {
            buffer: Some(writer.take_buffer()),
            writer,
            file: Some(Arc::new(file)),
            staging,
            dest,
            how,
            filled: 0,
            offset: 0,
        })
    }

    /// Appends `bytes`, writing each buffer that fills.
    pub(crate) async fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let buffer = self.buffer.as_mut().ok_or_else(cancelled)?;
            let n = (CHUNK - self.filled).min(bytes.len());
            buffer.aligned()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Writes what the buffer holds at the end of the file.
    async fn flush(&mut self) -> std::io::Result<()> {
        let mut buffer = self.buffer.take().ok_or_else(cancelled)?;
        let file = self.file.clone().ok_or_else(cancelled)?;
        let (writer, dest) = (self.writer.clone(), self.dest.clone());
        let (filled, offset) = (self.filled, self.offset);
        let buffer = blocking(move || {
            writer.write_at(&file, &buffer.aligned()[..filled], offset, &dest)?;
            Ok(buffer)
        })
        .await?;
        self.buffer = Some(buffer);
        self.offset += filled as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes the rest and publishes the object. The staging file is gone either way.
    pub(crate) async fn finish(mut self) -> std::io::Result<Written> {
        if self.filled > 0 {
            self.flush().await?;
        }
        let file = self.file.take().ok_or_else(cancelled)?;
        let file = Arc::try_unwrap(file).map_err(|_| cancelled())?;
        let (staging, dest, how) = (self.staging.clone(), self.dest.clone(), self.how);
        let written = blocking(move || publish(file, &staging, &dest, how)).await;
        if matches!(written, Ok(Written::Stored)) {
            // Published: no staging file left for `drop` to remove.
            self.staging = PathBuf::new();
        }
        written
    }
}

impl Drop for DirectStream {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.writer.give_back(buffer);
        }
        if !self.staging.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.staging);
        }
    }
}

/// A write of this stream was cancelled half-way (its caller gave up waiting).
fn cancelled() -> std::io::Error {
    std::io::Error::other("an earlier write of this upload was cancelled")
}

/// Runs file I/O on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(format!("the writing thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::super::tests::{pattern, scratch};
    use super::super::ALIGN;
    use super::*;

    /// Streamed in pieces of awkward sizes, objects of every size around the buffer's
    /// boundaries are stored whole, all but the last partial block past the cache.
    #[tokio::test]
    async fn streamed_objects_of_every_size_are_stored_whole() {
        let dir = scratch();
        let writer = Arc::new(DirectWriter::new());
        let mut direct = 0;
        for len in [
            0,
            ALIGN + 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + ALIGN,
            5 * CHUNK + 777,
        ] {
            let dest = dir.path().join(format!("t/j/{len}"));
            let object = pattern(len);
            let mut stream = DirectStream::begin(writer.clone(), dest.clone(), Publish::Create)
                .await
                .unwrap();
            for piece in object.chunks(300_007) {
                stream.write(piece).await.unwrap();
            }
            assert_eq!(stream.finish().await.unwrap(), Written::Stored);
            assert!(std::fs::read(&dest).unwrap() == object, "{len} bytes");
            direct += (len / ALIGN * ALIGN) as u64;
            assert_eq!(writer.direct_bytes(), direct, "{len} bytes");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path().join("t/j"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
    }

    /// A stream that would create an object finds one there at the end: the object stays
    /// as it was. One that replaces does replace it.
    #[tokio::test]
    async fn a_stream_creates_only_where_nothing_is_or_replaces_when_asked() {
        let dir = scratch();
        let writer = Arc::new(DirectWriter::new());
        let dest = dir.path().join("t/j/p");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, b"first").unwrap();
        for (how, expected) in [
            (Publish::Create, Written::AlreadyExists),
            (Publish::Replace, Written::Stored),
        ] {
            let mut stream = DirectStream::begin(writer.clone(), dest.clone(), how)
                .await
                .unwrap();
            stream.write(&pattern(2 * CHUNK + 5)).await.unwrap();
            assert_eq!(stream.finish().await.unwrap(), expected);
        }
        assert!(std::fs::read(&dest).unwrap() == pattern(2 * CHUNK + 5));
        assert_eq!(
            std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            1
        );
    }

    /// A stream given up half-way leaves no staging file and no object.
    #[tokio::test]
    async fn an_abandoned_stream_leaves_nothing() {
        let dir = scratch();
        let writer = Arc::new(DirectWriter::new());
        let dest = dir.path().join("t/j/p");
        let mut stream = DirectStream::begin(writer, dest.clone(), Publish::Create)
            .await
            .unwrap();
        stream.write(&pattern(CHUNK + 10)).await.unwrap();
        drop(stream);
        assert_eq!(
            std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            0
        );
    }
}
