//! Modbus RTU for the simulated PLC: a slave-side framer (pure, over bytes) and a server on the
//! master side of a pseudo-terminal, whose slave side the host opens as a serial port.
//!
//! tokio-modbus's RTU server takes only a `SerialStream`, which a pty master is not; hence this
//! small framer. It knows the request lengths of function codes 01–06, 15 and 16; requests for
//! another unit id are ignored (an RTU slave must stay silent); a bad CRC or an unknown function
//! code drops one byte and resynchronises on the next; a partial frame waits for more bytes,
//! and is discarded after a silence (the RTU inter-frame gap).

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::errno::Errno;
use sortline_plc_contract::crc16_bytes;
use tokio::io::unix::AsyncFd;

use tokio_modbus::{ExceptionCode, Request, Response};

/// One request addressed to this unit, or a function code it does not serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Request(Request<'static>),
    /// A well-formed request of a function this PLC does not implement: answer IllegalFunction.
    Unsupported {
        function: u8,
    },
    /// A write whose byte count does not match its register count: answer IllegalDataValue.
    Malformed {
        function: u8,
    },
}

/// Accumulates bytes from the line and cuts them into request frames for `unit`.
#[derive(Debug)]
pub struct Framer {
    unit: u8,
    buf: Vec<u8>,
}

impl Framer {
    pub fn new(unit: u8) -> Framer {
        Framer { unit, buf: Vec::new() }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes of an incomplete frame, waiting for the rest.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The line was silent: whatever partial frame is buffered will never complete.
    pub fn silence(&mut self) {
        self.buf.clear();
    }

    /// The next complete frame for this unit, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let len = match request_len(&self.buf) {
                Len::Need => return None,
                Len::Unknown => {
                    self.buf.remove(0);
                    continue;
                }
                Len::Frame(n) => n,
            };
            if self.buf.len() < len {
                return None;
            }
            let crc = crc16_bytes(self.buf[..len - 2].iter().copied());
            if crc.to_le_bytes() != [self.buf[len - 2], self.buf[len - 1]] {
                // Not a frame boundary after all (or a line error): slide one byte and retry.
                self.buf.remove(0);
                continue;
            }
            let frame: Vec<u8> = self.buf.drain(..len).collect();
            if frame[0] != self.unit {
                continue;
            }
            return Some(decode(&frame));
        }
    }
}

enum Len {
    Need,
    Unknown,
    Frame(usize),
}

/// The length of the request frame starting at `buf[0]`, unit id and CRC included.
fn request_len(buf: &[u8]) -> Len {
    let Some(&function) = buf.get(1) else { return Len::Need };
    match function {
        // unit, fc, address, count or value, CRC
        0x01..=0x06 => Len::Frame(8),
        // unit, fc, address, quantity, byte count, data, CRC
        0x0F | 0x10 => buf.get(6).map_or(Len::Need, |&n| Len::Frame(9 + usize::from(n))),
        _ => Len::Unknown,
    }
}

fn word(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

fn decode(frame: &[u8]) -> Frame {
    let (function, address) = (frame[1], word(frame, 2));
    match function {
        0x03 => Frame::Request(Request::ReadHoldingRegisters(address, word(frame, 4))),
        0x06 => Frame::Request(Request::WriteSingleRegister(address, word(frame, 4))),
        0x10 => {
            let data = &frame[7..frame.len() - 2];
            if data.len() != 2 * usize::from(word(frame, 4)) {
                return Frame::Malformed { function };
            }
            let words: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            Frame::Request(Request::WriteMultipleRegisters(address, words.into()))
        }
        _ => Frame::Unsupported { function },
    }
}

/// The reply frame, CRC included.
pub fn encode(unit: u8, function: u8, reply: &Result<Response, ExceptionCode>) -> Vec<u8> {
    let mut out = vec![unit];
    match reply {
        Ok(Response::ReadHoldingRegisters(words)) => {
            out.extend([0x03, (words.len() * 2) as u8]);
            out.extend(words.iter().flat_map(|w| w.to_be_bytes()));
        }
        Ok(Response::WriteSingleRegister(a, w)) => {
            out.push(0x06);
            out.extend(a.to_be_bytes().into_iter().chain(w.to_be_bytes()));
        }
        Ok(Response::WriteMultipleRegisters(a, n)) => {
            out.push(0x10);
            out.extend(a.to_be_bytes().into_iter().chain(n.to_be_bytes()));
        }
        Ok(_) => out.extend([function | 0x80, u8::from(ExceptionCode::ServerDeviceFailure)]),
        Err(e) => out.extend([function | 0x80, u8::from(*e)]),
    }
    let crc = crc16_bytes(out.iter().copied());
    out.extend(crc.to_le_bytes());
    out
}

/// While no one has the slave open, reads on the master fail with EIO: wait this long and retry.
const NO_PEER_RETRY: Duration = Duration::from_millis(5);
/// A partial frame older than this is dropped: RTU frames are sent without gaps.
const FRAME_GAP: Duration = Duration::from_millis(50);

/// What one read of the master gave.
enum Read {
    Bytes(usize),
    /// Nothing yet (a spurious wake-up).
    Nothing,
    /// The slave side is closed (EIO, end of file), or was since the last read.
    NoPeer,
}

fn register(master: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor, and the AsyncFd owns it until dropped.
    Ok(unsafe { AsyncFd::register(master) }?)
}

async fn read_master(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<Read> {
    let mut guard = fd.readable().await?;
    // A hangup is sticky in tokio's readiness (a "final" state), though a pty's slave can be
    // opened again: it is noticed here and the fd registered anew by the caller.
    let hung_up = guard.ready().is_read_closed();
    match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
        Ok(Ok(0)) => Ok(Read::NoPeer),
        Ok(Ok(n)) => Ok(Read::Bytes(n)),
        Ok(Err(e)) if no_peer(&e) => Ok(Read::NoPeer),
        Ok(Err(e)) => Err(e),
        Err(_would_block) if hung_up => Ok(Read::NoPeer),
        Err(_would_block) => Ok(Read::Nothing),
    }
}

/// Serves RTU requests for `unit` on the pty master until the task is aborted. `answer` runs
/// one request (with the simulator's fault knobs); `dropped` says the next request is to be
/// swallowed (the simulated link drop).
pub(crate) async fn serve<F, Fut>(
    master: OwnedFd,
    unit: u8,
    answer: F,
    mut dropped: impl FnMut() -> bool,
) -> io::Result<()>
where
    F: Fn(Request<'static>) -> Fut,
    Fut: Future<Output = Result<Response, ExceptionCode>>,
{
    let mut fd = register(master)?;
    let mut framer = Framer::new(unit);
    let mut buf = [0u8; 512];
    loop {
        let read = if framer.pending() > 0 {
            match tokio::time::timeout(FRAME_GAP, read_master(&fd, &mut buf)).await {
                Ok(r) => r?,
                Err(_silence) => {
                    framer.silence();
                    continue;
                }
            }
        } else {
            read_master(&fd, &mut buf).await?
        };
        let n = match read {
            Read::Bytes(n) => n,
            Read::Nothing => continue,
            Read::NoPeer => {
                // No host on the slave side (closed, or not yet opened) until it opens again:
                // not an error, and not a reason to spin.
                framer.silence();
                let master = fd.into_inner();
                tokio::time::sleep(NO_PEER_RETRY).await;
                fd = register(master)?;
                continue;
            }
        };
        framer.push(&buf[..n]);
        while let Some(frame) = framer.next_frame() {
            if dropped() {
                // The simulated link drop: this request is lost, the host times out and reopens.
                framer.silence();
                break;
            }
            let (function, reply) = match frame {
                Frame::Request(req) => (req.function_code().value(), answer(req).await),
                Frame::Unsupported { function } => (function, Err(ExceptionCode::IllegalFunction)),
                Frame::Malformed { function } => (function, Err(ExceptionCode::IllegalDataValue)),
            };
            match write_all(&fd, &encode(unit, function, &reply)).await {
                Err(e) if no_peer(&e) => framer.silence(),
                r => r?,
            }
        }
    }
}

/// The error a pty master gives while its slave side is closed.
fn no_peer(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::EIO as i32)
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut guard = fd.writable().await?;
        let hung_up = guard.ready().is_write_closed();
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(io::Error::from)) {
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) => return Err(e),
            // Full, and the sticky hangup would wake us at once again: give the reply up.
            Err(_would_block) if hung_up => return Err(Errno::EIO.into()),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.extend(crc16_bytes(bytes.iter().copied()).to_le_bytes());
        v
    }

    fn read(unit: u8, address: u16, count: u16) -> Vec<u8> {
        let [a, b] = address.to_be_bytes();
        let [c, d] = count.to_be_bytes();
        frame(&[unit, 0x03, a, b, c, d])
    }

    fn write_multiple(unit: u8, address: u16, words: &[u16]) -> Vec<u8> {
        let mut v = vec![unit, 0x10];
        v.extend(address.to_be_bytes());
        v.extend((words.len() as u16).to_be_bytes());
        v.push((words.len() * 2) as u8);
        v.extend(words.iter().flat_map(|w| w.to_be_bytes()));
        frame(&v)
    }

    fn all(framer: &mut Framer) -> Vec<Frame> {
        std::iter::from_fn(|| framer.next_frame()).collect()
    }

    #[test]
    fn reference_frame_crc() {
        // The Modbus spec's example: read 2 holding registers at 0x0000 of unit 1 = ... C4 0B.
        assert_eq!(read(1, 0, 2), [0x01, 0x03, 0x00, 0x00, 0x00, 0x02, 0xC4, 0x0B]);
    }

    #[test]
    fn frames_split_at_every_byte_boundary() {
        let stream: Vec<u8> =
            [read(1, 10, 4), write_multiple(1, 20, &[1, 0xBEEF, 3]), frame(&[1, 0x06, 0, 5, 0, 9])].concat();
        let expect = vec![
            Frame::Request(Request::ReadHoldingRegisters(10, 4)),
            Frame::Request(Request::WriteMultipleRegisters(20, vec![1, 0xBEEF, 3].into())),
            Frame::Request(Request::WriteSingleRegister(5, 9)),
        ];
        for cut in 0..=stream.len() {
            let mut f = Framer::new(1);
            f.push(&stream[..cut]);
            let mut got = all(&mut f);
            f.push(&stream[cut..]);
            got.extend(all(&mut f));
            assert_eq!(got, expect, "cut at {cut}");
            assert_eq!(f.pending(), 0);
        }
        // One byte at a time.
        let mut f = Framer::new(1);
        let mut got = Vec::new();
        for b in &stream {
            f.push(&[*b]);
            got.extend(all(&mut f));
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn crc_errors_and_garbage_are_dropped_and_the_framer_resyncs() {
        let mut bad = read(1, 10, 4);
        bad[7] ^= 0xFF;
        let stream = [vec![0x00, 0xFF, 0x42], bad, read(1, 11, 2)].concat();
        let mut f = Framer::new(1);
        f.push(&stream);
        assert_eq!(all(&mut f), vec![Frame::Request(Request::ReadHoldingRegisters(11, 2))]);
    }

    #[test]
    fn other_units_are_ignored() {
        let stream = [read(2, 10, 4), write_multiple(7, 1, &[5]), read(1, 12, 1)].concat();
        let mut f = Framer::new(1);
        f.push(&stream);
        assert_eq!(all(&mut f), vec![Frame::Request(Request::ReadHoldingRegisters(12, 1))]);
    }

    #[test]
    fn a_partial_frame_waits_and_silence_discards_it() {
        let r = read(1, 10, 4);
        let mut f = Framer::new(1);
        f.push(&r[..5]);
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.pending(), 5);
        f.silence();
        f.push(&r);
        assert_eq!(all(&mut f), vec![Frame::Request(Request::ReadHoldingRegisters(10, 4))]);
    }

    #[test]
    fn unsupported_functions_get_an_exception() {
        let mut f = Framer::new(1);
        f.push(&frame(&[1, 0x04, 0, 0, 0, 1]));
        let got = f.next_frame().unwrap();
        assert_eq!(got, Frame::Unsupported { function: 0x04 });
        let reply = encode(1, 0x04, &Err(ExceptionCode::IllegalFunction));
        assert_eq!(reply, frame(&[1, 0x84, 0x01]));
    }

    #[test]
    fn a_write_whose_byte_count_disagrees_is_malformed() {
        let mut f = Framer::new(1);
        f.push(&frame(&[1, 0x10, 0, 1, 0, 2, 2, 0xAB, 0xCD]));
        assert_eq!(f.next_frame(), Some(Frame::Malformed { function: 0x10 }));
    }

    #[test]
    fn replies_encode_as_rtu() {
        let reply = encode(1, 0x03, &Ok(Response::ReadHoldingRegisters(vec![0x1234, 0x0001])));
        assert_eq!(reply, frame(&[1, 0x03, 4, 0x12, 0x34, 0x00, 0x01]));
        let reply = encode(9, 0x10, &Ok(Response::WriteMultipleRegisters(0x20, 3)));
        assert_eq!(reply, frame(&[9, 0x10, 0x00, 0x20, 0x00, 0x03]));
    }
}
