//! Length-prefixed frames, on the local channel and on hub-to-hub links:
//!
//! ```text
//! frame  = u32 body length (big-endian) , body
//! body   = u32 header length , header (JSON object) , { u32 length , attachment bytes }
//! ```
//!
//! The header is the message; attachments are opaque binary parts that travel beside it (so
//! binary data is never base64'd into JSON). A frame whose length exceeds the limit, that ends
//! early, or whose parts do not add up is an error: the connection that sent it is closed.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

/// One message and its attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<T> {
    pub header: T,
    pub attachments: Vec<Vec<u8>>,
}

impl<T> Frame<T> {
    pub fn new(header: T) -> Self {
        Frame {
            header,
            attachments: Vec::new(),
        }
    }

    pub fn with(header: T, attachments: Vec<Vec<u8>>) -> Self {
        Frame {
            header,
            attachments,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes is larger than the {max}-byte limit; send attachments under {max} bytes in total")]
    Oversized { len: usize, max: usize },
    #[error("the connection ended inside a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("cannot encode the message: {0}")]
    Encode(String),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends the encoded frame to `out`.
pub fn encode<T: Serialize>(frame: &Frame<T>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    serde_json::to_writer(&mut *out, &frame.header)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let header_len = out.len() - start - 8;
    for a in &frame.attachments {
        out.extend_from_slice(&(a.len() as u32).to_be_bytes());
        out.extend_from_slice(a);
    }
    let body_len = out.len() - start - 4;
    if body_len > u32::MAX as usize {
        out.truncate(start);
        return Err(CodecError::Oversized {
            len: body_len,
            max: u32::MAX as usize,
        });
    }
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&(header_len as u32).to_be_bytes());
    Ok(())
}

/// The encoded frame as a new buffer.
pub fn to_bytes<T: Serialize>(frame: &Frame<T>) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode(frame, &mut out)?;
    Ok(out)
}

fn take_u32(body: &[u8], at: usize) -> Option<usize> {
    let b = body.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Decodes a frame body (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<Frame<T>, CodecError> {
    let header_len = take_u32(body, 0)
        .ok_or_else(|| CodecError::Malformed("body shorter than its header length".into()))?;
    let header_bytes = body.get(4..4 + header_len).ok_or_else(|| {
        CodecError::Malformed(format!(
            "header length {header_len} runs past the {}-byte body",
            body.len()
        ))
    })?;
    let header: T = serde_json::from_slice(header_bytes)
        .map_err(|e| CodecError::Malformed(format!("header is not a valid message: {e}")))?;
    let mut at = 4 + header_len;
    let mut attachments = Vec::new();
    while at < body.len() {
        let len = take_u32(body, at).ok_or_else(|| {
            CodecError::Malformed("attachment length cut short at the end of the body".into())
        })?;
        let part = body.get(at + 4..at + 4 + len).ok_or_else(|| {
            CodecError::Malformed(format!("attachment of {len} bytes runs past the body"))
        })?;
        attachments.push(part.to_vec());
        at += 4 + len;
    }
    Ok(Frame {
        header,
        attachments,
    })
}

/// Reads the next frame; `Ok(None)` when the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<Option<Frame<T>>, CodecError> {
    let mut len_bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len_bytes[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(CodecError::Truncated { got, expected: 4 });
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max {
        return Err(CodecError::Oversized { len, max });
    }
    buf.clear();
    buf.reserve(len);
    // Reads straight into the spare capacity: no zero-filling of the buffer first.
    let got = (&mut *r).take(len as u64).read_to_end(buf).await?;
    if got < len {
        return Err(CodecError::Truncated { got, expected: len });
    }
    decode(buf).map(Some)
}

/// Writes the frames arriving on `rx` to `wr`, batching whatever is queued into one write,
/// until `rx` closes or the connection fails.
pub async fn write_frames<W, T>(mut wr: W, mut rx: tokio::sync::mpsc::Receiver<Frame<T>>)
where
    W: tokio::io::AsyncWrite + Unpin,
    T: Serialize,
{
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if let Err(e) = encode(&frame, &mut buf) {
                tracing::warn!(reason = %e, "frame not sent");
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        // Flush too: a TLS stream may keep records back until then.
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Msg {
        op: String,
        n: u64,
    }

    fn msg() -> Frame<Msg> {
        Frame::with(
            Msg {
                op: "call".into(),
                n: 7,
            },
            vec![vec![0, 1, 2, 255], vec![], b"x".to_vec()],
        )
    }

    async fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Option<Frame<Msg>>, String>> {
        let mut r = bytes;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let f = read_frame::<_, Msg>(&mut r, max, &mut buf).await;
            let stop = !matches!(f, Ok(Some(_)));
            out.push(f.map_err(|e| e.to_string()));
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn frames_round_trip_with_binary_attachments() {
        let mut bytes = to_bytes(&msg()).unwrap();
        encode(
            &Frame::new(Msg {
                op: "cast".into(),
                n: 1,
            }),
            &mut bytes,
        )
        .unwrap();
        let got = read_all(&bytes, 1024).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap(), &msg());
        assert_eq!(got[1].as_ref().unwrap().as_ref().unwrap().header.op, "cast");
        assert!(
            got[2].as_ref().unwrap().is_none(),
            "clean end between frames"
        );
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_body_is_read() {
        let bytes = to_bytes(&msg()).unwrap();
        let got = read_all(&bytes, 10).await;
        assert!(got[0]
            .as_ref()
            .unwrap_err()
            .contains("larger than the 10-byte limit"));
        // A length prefix claiming 4 GiB fails the same way, without allocating it.
        let got = read_all(&[0xff, 0xff, 0xff, 0xff], 1024).await;
        assert!(got[0].as_ref().unwrap_err().contains("larger than"));
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_not_a_clean_end() {
        let bytes = to_bytes(&msg()).unwrap();
        for cut in [2, 4, 10, bytes.len() - 1] {
            let got = read_all(&bytes[..cut], 1024).await;
            let e = got[0].as_ref().unwrap_err();
            assert!(e.contains("ended inside a frame"), "cut {cut}: {e}");
        }
    }

    #[tokio::test]
    async fn malformed_bodies_are_refused() {
        let frame = |body: &[u8]| {
            let mut v = (body.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(body);
            v
        };
        // Header length past the body.
        let got = read_all(&frame(&[0, 0, 0, 50, b'{', b'}']), 1024).await;
        assert!(got[0].as_ref().unwrap_err().contains("malformed"));
        // Header not JSON.
        let got = read_all(&frame(&[0, 0, 0, 3, b'a', b'b', b'c']), 1024).await;
        assert!(got[0].as_ref().unwrap_err().contains("not a valid message"));
        // Valid JSON, wrong shape.
        let got = read_all(&frame(b"\0\0\0\x02{}"), 1024).await;
        assert!(got[0].as_ref().unwrap_err().contains("not a valid message"));
        // Attachment length past the body.
        let mut body = to_bytes(&Frame::new(Msg {
            op: "x".into(),
            n: 0,
        }))
        .unwrap()[4..]
            .to_vec();
        body.extend_from_slice(&[0, 0, 0, 9, 1]);
        let got = read_all(&frame(&body), 1024).await;
        assert!(got[0].as_ref().unwrap_err().contains("runs past"));
    }
}
