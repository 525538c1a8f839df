//! The frame-parsing harness shared by the fuzz target (`fuzz/fuzz_targets/scanner_frames.rs`,
//! cargo fuzz on nightly) and property tests (stable, so CI runs it). It panics when an
//! invariant breaks; that is its purpose.

use super::frame::{Frame, FrameError, FrameParser, FrameStats};
use super::profile::{FrameProfile, TriggerField, SHIPPED};
use std::sync::OnceLock;

/// The shipped profiles, then one more the shipped ones do not cover: LF lines, no trigger
/// count, a heartbeat.
pub fn profiles() -> &'static [FrameProfile] {
    static PROFILES: OnceLock<Vec<FrameProfile>> = OnceLock::new();
    PROFILES.get_or_init(|| {
        let mut all: Vec<FrameProfile> = SHIPPED
            .iter()
            .map(|(name, text)| FrameProfile::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect();
        all.push(FrameProfile {
            start: None,
            stop: "\n".into(),
            delimiter: "\t".into(),
            no_read: "?".into(),
            trigger_field: TriggerField::None,
            heartbeat: Some("ALIVE".into()),
            max_frame_len: 128,
        });
        all
    })
}

/// One frame as a scanner set up per `profile` sends it.
pub fn encode_frame(profile: &FrameProfile, trigger: Option<u32>, fields: &[&str]) -> Vec<u8> {
    let trigger = trigger.map(|t| t.to_string());
    let fields: Vec<&str> = trigger.as_deref().into_iter().chain(fields.iter().copied()).collect();
    let mut out = Vec::new();
    out.extend(profile.start.as_deref().unwrap_or("").as_bytes());
    out.extend(fields.join(&profile.delimiter).as_bytes());
    out.extend(profile.stop.as_bytes());
    out
}

pub type Output = Vec<Result<Frame, FrameError>>;

/// Feeds `stream` in chunks of the given sizes (cycled; 0 counts as 1), checking after every
/// push that the buffer stays within its bound.
pub fn run(profile: &FrameProfile, stream: &[u8], chunks: &[usize]) -> (Output, FrameStats) {
    let mut parser = FrameParser::new(profile.clone());
    let bound = profile.max_frame_len + profile.marker_window();
    let mut out = Vec::new();
    for piece in pieces(stream, chunks) {
        parser.push(piece, &mut out);
        assert!(parser.buffered() <= bound, "buffer {} over its bound {bound}", parser.buffered());
    }
    (out, parser.stats().clone())
}

/// `stream` cut into pieces of the given sizes (cycled; 0 counts as 1), as a link delivers it:
/// what the parsers' invariants are checked over (the X-ray stream's too).
pub fn pieces<'a>(stream: &'a [u8], chunks: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = stream;
    chunks.iter().cycle().map_while(move |&size| {
        if rest.is_empty() {
            return None;
        }
        let (now, later) = rest.split_at(size.clamp(1, rest.len()));
        rest = later;
        Some(now)
    })
}

/// Input layout: byte 0 picks the profile, byte 1 the chunk sizes, the rest is the stream.
/// Checks that the stream gives the same results whole, byte by byte and in chunks, that the
/// counters match the results, and that every frame is well formed for its profile.
pub fn check_frames(data: &[u8]) {
    let [pick, chunking, stream @ ..] = data else { return };
    let all = profiles();
    let profile = &all[usize::from(*pick) % all.len()];
    let whole = run(profile, stream, &[stream.len()]);
    assert_eq!(run(profile, stream, &[1]), whole, "byte by byte differs from whole");
    let sizes = [usize::from(chunking & 0x0f), usize::from(chunking >> 4), 3];
    assert_eq!(run(profile, stream, &sizes), whole, "chunked differs from whole");
    let (out, stats) = whole;
    let mut counted = FrameStats::default();
    for result in &out {
        counted.count(result);
        check_result(profile, result);
    }
    assert_eq!(counted, stats, "counters do not match the results");
}

fn check_result(profile: &FrameProfile, result: &Result<Frame, FrameError>) {
    let with_trigger = profile.trigger_field == TriggerField::First;
    match result {
        Ok(Frame::Read { trigger, codes }) => {
            assert_eq!(trigger.is_some(), with_trigger);
            assert!(!codes.is_empty(), "a read without codes");
            for code in codes {
                assert!(!code.is_empty() && code.trim() == code, "code {code:?} not trimmed");
                assert!(!code.chars().any(char::is_control), "control character in {code:?}");
                assert!(*code != profile.no_read && !code.contains(&profile.delimiter), "{code:?} kept a token");
            }
        }
        Ok(Frame::NoRead { trigger }) => assert_eq!(trigger.is_some(), with_trigger),
        Ok(Frame::Heartbeat) => assert!(profile.heartbeat.is_some()),
        Err(FrameError::Garbage { bytes }) => assert!(profile.start.is_some() && *bytes > 0),
        Err(FrameError::Partial { .. }) => assert!(profile.start.is_some()),
        Err(FrameError::Oversize { len }) => assert!(*len > 0),
        Err(FrameError::BadTrigger { field }) => assert!(with_trigger && field.chars().count() <= 32),
        Err(FrameError::NotUtf8 | FrameError::NonPrintable | FrameError::Empty) => {}
    }
}
