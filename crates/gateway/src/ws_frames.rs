//! Where WebSocket messages start in the bytes an upstream sends (RFC 6455
//! §5.2), read incrementally: a frame may be split across any number of
//! chunks, headers included. Only the first frame of a text or binary
//! message starts one; continuation frames (fragments) and control frames
//! (close, ping, pong) do not. Masked frames and the 7-bit, 16-bit and 64-bit
//! length forms are all read.

#[derive(Debug, Default)]
pub struct FrameReader {
    /// Header bytes of the frame being read (at most 14).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: u64,
}

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;

/// Header length once its first two bytes are known.
fn header_len(b1: u8) -> usize {
    let masked = if b1 & 0x80 != 0 { 4 } else { 0 };
    match b1 & 0x7f {
        126 => 4 + masked,
        127 => 10 + masked,
        _ => 2 + masked,
    }
}

fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        n => u64::from(n),
    }
}

impl FrameReader {
    /// Reads `chunk` and appends to `starts` the offset (in `chunk`) of the
    /// first byte of every data message that starts in it.
    pub fn feed(&mut self, chunk: &[u8], starts: &mut Vec<usize>) {
        let mut i = 0;
        while i < chunk.len() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min((chunk.len() - i) as u64);
                self.payload_left -= skip;
                // `skip` fits in usize: it is at most the chunk's length.
                i += skip as usize;
                continue;
            }
            let b = chunk[i];
            if self.have == 0 && matches!(b & 0x0f, TEXT | BINARY) {
                starts.push(i);
            }
            self.header[self.have] = b;
            self.have += 1;
            i += 1;
            if self.have >= 2 && self.have == header_len(self.header[1]) {
                self.payload_left = payload_len(&self.header[..self.have]);
                self.have = 0;
            }
        }
    }
}

/// A close frame from the server (unmasked): `code`, then `reason`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    // A control frame's payload is at most 125 bytes.
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut f = Vec::with_capacity(4 + reason.len());
    f.push(0x88);
    f.push(2 + reason.len() as u8);
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tungstenite::protocol::frame::Frame;

    fn frame(opcode: OpCode, fin: bool, payload: Vec<u8>, mask: bool) -> Vec<u8> {
        let mut f = match opcode {
            OpCode::Control(Control::Ping) => Frame::ping(payload),
            OpCode::Control(Control::Pong) => Frame::pong(payload),
            OpCode::Control(_) => Frame::close(None),
            OpCode::Data(_) => Frame::message(payload, opcode, fin),
        };
        if mask {
            f.header_mut().mask = Some([1, 2, 3, 4]);
        }
        let mut out = Vec::new();
        f.format(&mut out).unwrap();
        out
    }

    fn text(len: usize) -> Vec<u8> {
        frame(OpCode::Data(Data::Text), true, vec![b'a'; len], false)
    }

    /// A stream of frames and where its messages start, built with
    /// tungstenite's own encoder: every length form, fragments, control
    /// frames between fragments, masking.
    fn stream() -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        let mut push = |f: Vec<u8>, starts_message: bool| {
            if starts_message {
                starts.push(bytes.len());
            }
            bytes.extend(f);
        };
        push(text(0), true);
        push(text(125), true); // largest 7-bit length
        push(text(126), true); // 16-bit length
        push(text(65_535), true);
        push(text(65_536), true); // 64-bit length
        push(
            frame(OpCode::Control(Control::Ping), true, vec![1; 10], false),
            false,
        );
        // A binary message in three fragments with a pong between them.
        push(
            frame(OpCode::Data(Data::Binary), false, vec![7; 300], false),
            true,
        );
        push(
            frame(OpCode::Control(Control::Pong), true, vec![], false),
            false,
        );
        push(
            frame(OpCode::Data(Data::Continue), false, vec![7; 5], false),
            false,
        );
        push(
            frame(OpCode::Data(Data::Continue), true, vec![7; 70_000], false),
            false,
        );
        push(
            frame(OpCode::Data(Data::Text), true, b"masked".to_vec(), true),
            true,
        );
        push(
            frame(OpCode::Control(Control::Close), true, vec![], false),
            false,
        );
        (bytes, starts)
    }

    fn read_in_chunks(bytes: &[u8], sizes: impl Iterator<Item = usize>) -> Vec<usize> {
        let mut r = FrameReader::default();
        let mut found = Vec::new();
        let mut at = 0;
        let mut sizes = sizes;
        while at < bytes.len() {
            let n = sizes
                .next()
                .unwrap_or(bytes.len())
                .max(1)
                .min(bytes.len() - at);
            let mut local = Vec::new();
            r.feed(&bytes[at..at + n], &mut local);
            found.extend(local.into_iter().map(|o| o + at));
            at += n;
        }
        found
    }

    #[test]
    fn finds_every_message_start_and_nothing_else() {
        let (bytes, starts) = stream();
        assert_eq!(read_in_chunks(&bytes, std::iter::empty()), starts);
        assert_eq!(starts.len(), 7);
    }

    #[test]
    fn any_split_of_the_stream_finds_the_same_starts() {
        let (bytes, starts) = stream();
        // One byte at a time: every header split at every position.
        assert_eq!(read_in_chunks(&bytes, std::iter::repeat(1)), starts);
        // Pseudo-random chunk sizes (a fixed LCG, so a failure repeats).
        for seed in 1..50u64 {
            let mut x = seed;
            let sizes = std::iter::from_fn(move || {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                Some((x >> 33) as usize % 200 + 1)
            });
            assert_eq!(read_in_chunks(&bytes, sizes), starts, "seed {seed}");
        }
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let f = close_frame(1008, "quota_exhausted");
        let (header, len) =
            tungstenite::protocol::frame::FrameHeader::parse(&mut std::io::Cursor::new(&f))
                .unwrap()
                .unwrap();
        assert_eq!(header.opcode, OpCode::Control(Control::Close));
        assert!(header.is_final);
        assert_eq!(len, 17);
        assert_eq!(&f[2..4], &1008u16.to_be_bytes());
        assert_eq!(&f[4..], b"quota_exhausted");
    }
}
