//! The thin IO shell around the sans-IO codec: frames in and out of QUIC streams.

use bytes::{Bytes, BytesMut};
use quire_codecs::lists::Reassembler;
use quire_codecs::wire::{self, Decoder, Frame, WireError, MAX_DATA_LEN};

/// Bytes asked of QUIC per read; QUIC hands back at most what has arrived.
const READ_CHUNK: usize = 256 * 1024;

/// Reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    #[error("stream failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
}

/// Reads frames from one QUIC receive stream. A client's reader joins a list split over
/// several frames into one frame; the server's does not (requests carry no lists, so a
/// stream can never make the server hold more than one control frame).
#[derive(Debug)]
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: Decoder,
    lists: Option<Reassembler>,
    finished: bool,
    /// Adds every byte read, for the server's receive windows (see `FrameReader::counting`).
    consumed: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl FrameReader {
    /// A reader of answers: split lists are joined.
    pub fn new(recv: quinn::RecvStream) -> Self {
        FrameReader {
            recv,
            decoder: Decoder::new(),
            lists: Some(Reassembler::new()),
            finished: false,
            consumed: None,
        }
    }

    /// A reader of requests: every frame comes out as it was sent.
    pub fn requests(recv: quinn::RecvStream) -> Self {
        FrameReader {
            lists: None,
            ..Self::new(recv)
        }
    }

    /// Adds what this reader takes from its stream to `consumed` (shared by a connection's
    /// streams): the server grows a connection's receive window by what is read from it.
    pub fn counting(mut self, consumed: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.consumed = Some(consumed);
        self
    }

    /// The next frame; `None` when the peer finished the stream cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, StreamError> {
        loop {
            if let Some(f) = self.lists.as_mut().and_then(Reassembler::take_ready) {
                return Ok(Some(f));
            }
            if let Some(f) = self.decoder.next_frame()? {
                let Some(lists) = self.lists.as_mut() else {
                    return Ok(Some(f));
                };
                match lists.push(f)? {
                    Some(done) => return Ok(Some(done)),
                    None => continue,
                }
            }
            if self.finished {
                self.decoder.finish()?;
                return Ok(self.lists.as_mut().and_then(Reassembler::finish));
            }
            match self.recv.read_chunk(READ_CHUNK, true).await? {
                Some(chunk) => {
                    if let Some(c) = &self.consumed {
                        c.fetch_add(
                            chunk.bytes.len() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                    self.decoder.feed(chunk.bytes)
                }
                None => self.finished = true,
            }
        }
    }

    /// Tells the peer to stop sending (we have what we need, or refused the request).
    pub fn stop(&mut self) {
        let _ = self.recv.stop(0u32.into());
    }
}

/// Writes one control frame.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), StreamError> {
    let b = wire::encode_to_bytes(frame);
    let stopped = send.stopped();
    unless_stopped(stopped, send.write_chunk(b)).await
}

/// Writes page bytes as `Data` frames without copying them.
pub async fn write_data(send: &mut quinn::SendStream, mut data: Bytes) -> Result<(), StreamError> {
    while !data.is_empty() {
        let part = data.split_to(data.len().min(MAX_DATA_LEN as usize));
        let mut head = BytesMut::with_capacity(wire::FRAME_HEADER_LEN);
        wire::encode_data_header(part.len() as u32, &mut head);
        let stopped = send.stopped();
        unless_stopped(stopped, send.write_all_chunks(&mut [head.freeze(), part])).await?;
    }
    Ok(())
}

/// Runs `write` until it is done or the peer stops the stream. quinn 0.11 looks at the
/// connection's credit before a stream's stop: a write the connection holds back, on a
/// stream whose own credit is spent, is not woken when the peer stops that stream, and would
/// wait for good (a page the server refused as busy hung its scanner's push).
async fn unless_stopped(
    stopped: impl std::future::Future<Output = Result<Option<quinn::VarInt>, quinn::StoppedError>>,
    write: impl std::future::Future<Output = Result<(), quinn::WriteError>>,
) -> Result<(), StreamError> {
    tokio::select! {
        biased;
        written = write => Ok(written?),
        Ok(Some(code)) = stopped => Err(quinn::WriteError::Stopped(code).into()),
    }
}
