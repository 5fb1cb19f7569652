//! Reading stored files as streams.

use super::{IO_CHUNK, SMALL_BLOB, io_err};
use crate::registry::storage::{BlobBody, StorageError, StorageResult};
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Streams `len` bytes of `path` from `start` on a blocking thread, one `IO_CHUNK` at a time.
pub(super) fn stream_file(path: PathBuf, start: u64, len: u64) -> StorageResult<BlobBody> {
    let mut file = std::fs::File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StorageError::NotFound
        } else {
            io_err(&path)(e)
        }
    })?;
    if len <= SMALL_BLOB {
        let mut buf = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
        file.read_exact(&mut buf).map_err(io_err(&path))?;
        let stream = futures_util::stream::once(async move { Ok(Bytes::from(buf)) }).boxed();
        return Ok(BlobBody { len, stream });
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut remaining = len;
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        while remaining > 0 {
            let want = remaining.min(IO_CHUNK as u64);
            // Read into fresh capacity: read_to_end fills it without zeroing it first.
            let mut buf = Vec::with_capacity(want as usize);
            match (&mut file).take(want).read_to_end(&mut buf) {
                Ok(n) if n as u64 == want => {
                    remaining -= want;
                    // The receiver is gone when the client hung up: stop reading.
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Ok(_) => {
                    let _ = tx.blocking_send(Err(io::ErrorKind::UnexpectedEof.into()));
                    return;
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(BlobBody {
        len,
        stream: stream.boxed(),
    })
}
