//! Byte vectors per shipped profile, profile validation, and property tests over the fuzz
//! harness (`fuzzing::check_frames`) and over frames interleaved with noise.

use super::fuzzing::{self, encode_frame, profiles, run};
use super::profile::SHIPPED;
use super::*;
use crate::core::{Input, TriggerCount};
use proptest::prelude::*;

fn shipped(name: &str) -> FrameProfile {
    let (_, text) = SHIPPED.iter().find(|(n, _)| *n == name).expect("shipped profile");
    FrameProfile::from_toml(text).unwrap()
}

fn parse(profile: &FrameProfile, stream: &[u8]) -> Vec<Result<Frame, FrameError>> {
    run(profile, stream, &[stream.len()]).0
}

fn read(trigger: u32, codes: &[&str]) -> Result<Frame, FrameError> {
    Ok(Frame::Read { trigger: Some(TriggerCount(trigger)), codes: codes.iter().map(|c| c.to_string()).collect() })
}

fn no_read(trigger: u32) -> Result<Frame, FrameError> {
    Ok(Frame::NoRead { trigger: Some(TriggerCount(trigger)) })
}

/// A read, a two-code read with a duplicate, a no-read and (if the profile has one) a heartbeat.
fn sample(p: &FrameProfile) -> (Vec<u8>, Vec<Result<Frame, FrameError>>) {
    let mut stream = encode_frame(p, Some(1042), &["EA123456785CN"]);
    stream.extend(encode_frame(p, Some(1043), &["EA123456785CN", " 4006381333931 ", "", "EA123456785CN"]));
    stream.extend(encode_frame(p, Some(1044), &[&p.no_read]));
    let mut want = vec![
        read(1042, &["EA123456785CN"]),
        read(1043, &["EA123456785CN", "4006381333931", "EA123456785CN"]),
        no_read(1044),
    ];
    if let Some(hb) = &p.heartbeat {
        stream.extend(encode_frame(p, None, &[hb]));
        want.push(Ok(Frame::Heartbeat));
    }
    (stream, want)
}

#[test]
fn every_shipped_profile_file_is_listed_loads_and_round_trips() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/scanners");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "profile::SHIPPED must list every file in {dir}");
    for name in files {
        let p = FrameProfile::load(&std::path::Path::new(dir).join(&name)).unwrap();
        assert_eq!(p, shipped(&name));
        let (stream, want) = sample(&p);
        let (got, stats) = run(&p, &stream, &[stream.len()]);
        assert_eq!(got, want, "{name}");
        assert_eq!((stats.reads, stats.no_reads), (2, 1), "{name}");
    }
}

#[test]
fn a_stream_split_at_every_byte_boundary_gives_the_same_frames() {
    for p in profiles() {
        let (mut stream, _) = sample(p);
        stream.splice(0..0, b"xx".iter().copied());
        let whole = run(p, &stream, &[stream.len()]);
        for at in 0..=stream.len() {
            assert_eq!(run(p, &stream, &[at, stream.len()]), whole, "split at {at}");
        }
        assert_eq!(run(p, &stream, &[1]), whole);
    }
}

#[test]
fn garbage_before_and_between_frames_is_counted_and_skipped() {
    let p = shipped("cognex-dataman.toml");
    let mut stream = b"\r\nboot v5.2\r\n".to_vec();
    stream.extend(encode_frame(&p, Some(7), &["EA123456785CN"]));
    stream.extend(b"\x03\xff junk");
    stream.extend(encode_frame(&p, Some(8), &["NOREAD"]));
    let (got, stats) = run(&p, &stream, &[5]);
    assert_eq!(
        got,
        vec![
            Err(FrameError::Garbage { bytes: 13 }),
            read(7, &["EA123456785CN"]),
            Err(FrameError::Garbage { bytes: 7 }),
            no_read(8),
        ]
    );
    assert_eq!((stats.garbage, stats.garbage_bytes, stats.reads, stats.no_reads), (2, 20, 1, 1));
}

#[test]
fn a_start_that_never_comes_still_shows_in_the_counters() {
    let p = shipped("sick-clv.toml");
    let (got, stats) = run(&p, &vec![b'a'; 2 * p.max_frame_len + 5], &[100]);
    assert_eq!(got, vec![Err(FrameError::Garbage { bytes: p.max_frame_len }); 2]);
    assert_eq!(stats.garbage_bytes, 2 * p.max_frame_len as u64);
}

#[test]
fn a_partial_frame_then_a_new_start_keeps_the_new_frame() {
    let p = shipped("sick-clv.toml");
    let mut stream = b"\x0277;EA1234".to_vec();
    stream.extend(encode_frame(&p, Some(78), &["EA123456785CN", "AA473124829GB"]));
    let (got, stats) = run(&p, &stream, &[1]);
    assert_eq!(got, vec![Err(FrameError::Partial { len: 9 }), read(78, &["EA123456785CN", "AA473124829GB"])]);
    assert_eq!(stats.partial, 1);
}

#[test]
fn an_oversize_frame_is_dropped_and_the_next_one_read() {
    for p in profiles() {
        let long = "9".repeat(p.max_frame_len + 3);
        let mut stream = encode_frame(p, Some(5), &[&long]);
        let trigger = (p.trigger_field == TriggerField::First).then_some(6);
        stream.extend(encode_frame(p, trigger, &["EA123456785CN"]));
        let got = parse(p, &stream);
        assert_eq!(got.len(), 2, "{p:?}: {got:?}");
        assert!(matches!(got[0], Err(FrameError::Oversize { len }) if len > p.max_frame_len));
        let codes = vec!["EA123456785CN".to_string()];
        assert_eq!(got[1], Ok(Frame::Read { trigger: trigger.map(TriggerCount), codes }));
    }
}

#[test]
fn a_frame_of_exactly_max_len_is_read() {
    let p = shipped("datalogic-dx.toml");
    let code = "A".repeat(p.max_frame_len - "12,".len());
    assert_eq!(parse(&p, &encode_frame(&p, Some(12), &[&code])), vec![read(12, &[&code])]);
}

#[test]
fn bad_trigger_fields_reject_the_frame() {
    let p = shipped("cognex-dataman.toml");
    for (field, shown) in
        [("x12", "x12"), ("+12", "+12"), ("4294967296", "4294967296"), ("", ""), (&"7".repeat(40) as &str, "")]
    {
        let got = parse(&p, &encode_frame(&p, None, &[field, "EA123456785CN"]));
        let shown = if shown.is_empty() { field.chars().take(32).collect() } else { shown.to_string() };
        assert_eq!(got, vec![Err(FrameError::BadTrigger { field: shown })], "{field:?}");
    }
    assert_eq!(parse(&p, &encode_frame(&p, None, &["4294967295", "X1"])), vec![read(u32::MAX, &["X1"])]);
}

#[test]
fn bad_content_is_rejected_by_kind() {
    let p = shipped("cognex-dataman.toml");
    let cases: [(&[u8], FrameError); 4] = [
        (b"\x02\x03", FrameError::Empty),
        (b"\x02 12 , , \x03", FrameError::Empty),
        (b"\x0212,EA\xc3(\x03", FrameError::NotUtf8),
        (b"\x0212,EA12\x0034\x03", FrameError::NonPrintable),
    ];
    for (bytes, err) in &cases {
        assert_eq!(parse(&p, bytes), vec![Err(err.clone())], "{bytes:?}");
    }
    let (_, stats) = run(&p, &cases.iter().flat_map(|(b, _)| b.to_vec()).collect::<Vec<u8>>(), &[1]);
    assert_eq!((stats.empty, stats.not_utf8, stats.non_printable), (2, 1, 1));
}

#[test]
fn a_no_read_token_beside_codes_is_dropped() {
    let p = shipped("sick-clv.toml");
    assert_eq!(parse(&p, b"\x029;NoRead;EA123456785CN\x03"), vec![read(9, &["EA123456785CN"])]);
    assert_eq!(parse(&p, b"\x029;NoRead;NoRead\x03"), vec![no_read(9)]);
}

#[test]
fn cr_lf_and_lf_terminators() {
    let crlf = shipped("datalogic-dx.toml");
    let lf = FrameProfile { stop: "\n".into(), ..crlf.clone() };
    let crlf_lines = b"1,EA123456785CN\r\n2,NOREAD\r\n";
    let lf_lines = b"1,EA123456785CN\n2,NOREAD\n";
    let want = vec![read(1, &["EA123456785CN"]), no_read(2)];
    assert_eq!(parse(&crlf, crlf_lines), want);
    // An LF profile takes CR LF too: the CR is trimmed.
    assert_eq!(parse(&lf, crlf_lines), want);
    assert_eq!(parse(&lf, lf_lines), want);
    // A CR LF profile never sees LF-only lines end: they show as oversize, repeatedly.
    let many: Vec<u8> = lf_lines.iter().copied().cycle().take(3 * crlf.max_frame_len).collect();
    let (got, stats) = run(&crlf, &many, &[64]);
    assert!(got.iter().all(|r| matches!(r, Err(FrameError::Oversize { .. }))));
    assert!(stats.oversize >= 2, "{stats:?}");
}

#[test]
fn frames_become_core_scans() {
    let codes = vec!["EA123456785CN".to_string()];
    let scan = Frame::Read { trigger: Some(TriggerCount(3)), codes: codes.clone() }.into_input();
    assert_eq!(scan, Some(Input::Scan { trigger: Some(TriggerCount(3)), codes: codes.clone() }));
    let none = Frame::NoRead { trigger: Some(TriggerCount(4)) }.into_input();
    assert_eq!(none, Some(Input::Scan { trigger: Some(TriggerCount(4)), codes: vec![] }));
    assert_eq!(Frame::Heartbeat.into_input(), None);
    // Without a trigger count the core matches it by the gate's time window.
    assert_eq!(
        Frame::Read { trigger: None, codes: codes.clone() }.into_input(),
        Some(Input::Scan { trigger: None, codes })
    );
}

#[test]
fn profile_errors_name_the_field() {
    let base = SHIPPED[0].1;
    let cases = [
        ("stop = \"\\u0003\"", "stop = \"\"", "stop:"),
        ("delimiter = \",\"", "delimiter = \"\\u0003\"", "delimiter:"),
        ("delimiter = \",\"", "delimiter = \"é\"", "delimiter:"),
        ("max_frame_len = 512", "max_frame_len = 8", "max_frame_len:"),
        ("max_frame_len = 512", "max_frame_len = 70000", "max_frame_len:"),
        ("no_read = \"NOREAD\"", "no_read = \"\"", "no_read:"),
        ("no_read = \"NOREAD\"", "no_read = \"NO,READ\"", "no_read:"),
        ("heartbeat = \"HEARTBEAT\"", "heartbeat = \"NOREAD\"", "heartbeat:"),
        ("heartbeat = \"HEARTBEAT\"", "heartbeat = \" HB\"", "heartbeat:"),
        ("trigger_field = \"first\"", "trigger_field = \"last\"", "trigger_field"),
        ("max_frame_len = 512", "max_frame_len = 512\nterminator = \"\\n\"", "terminator"),
    ];
    for (from, to, field) in cases {
        assert!(base.contains(from), "{from}");
        let err = FrameProfile::from_toml(&base.replacen(from, to, 1)).unwrap_err().to_string();
        assert!(err.contains(field), "{to}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, base.replacen("stop = \"\\u0003\"", "stop = \"\\u0002\"", 1)).unwrap();
    let err = FrameProfile::load(&path).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("stop:"), "{err}");
    assert!(FrameProfile::load(&dir.path().join("none.toml")).unwrap_err().to_string().contains("none.toml"));
}

#[test]
fn the_fuzz_seed_corpus_passes_the_harness() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/scanner_frames");
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        fuzzing::check_frames(&std::fs::read(entry.unwrap().path()).unwrap());
        seeds += 1;
    }
    assert!(seeds >= 3 * SHIPPED.len());
}

/// Noise that cannot form or end a frame: for start-framed profiles any byte but a marker's;
/// for terminator-only profiles, whole lines that are never valid UTF-8 (continuation bytes).
fn noise(p: &FrameProfile, raw: &[u8]) -> Vec<u8> {
    match &p.start {
        Some(start) => {
            let markers: Vec<u8> = start.bytes().chain(p.stop.bytes()).collect();
            raw.iter().copied().filter(|b| !markers.contains(b)).collect()
        }
        None if raw.is_empty() => Vec::new(),
        None => {
            let mut line: Vec<u8> = raw.iter().take(p.max_frame_len).map(|b| 0x80 | (b & 0x3f)).collect();
            line.extend(p.stop.as_bytes());
            line
        }
    }
}

proptest! {
    /// The fuzz target's harness under stable: arbitrary bytes never panic, the buffer stays
    /// bounded, and chunking never changes the result.
    #[test]
    fn frames_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::check_frames(&data);
    }

    /// The harness over streams made of real frames with bytes flipped.
    #[test]
    fn frames_mutated(pick: u8, chunking: u8, edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let p = &profiles()[usize::from(pick) % profiles().len()];
        let (stream, _) = sample(p);
        let mut data = [vec![pick, chunking], stream.clone(), stream].concat();
        for (at, b) in edits {
            let i = 2 + at % (data.len() - 2);
            data[i] = b;
        }
        fuzzing::check_frames(&data);
    }

    /// Well-formed frames interleaved with noise that holds no frame bytes all come out, in order.
    #[test]
    fn frames_between_noise_are_all_recovered(
        pick: u8,
        frames in prop::collection::vec(
            (any::<u32>(), prop::collection::vec("[A-Z0-9]{1,20}", 0..4), prop::collection::vec(any::<u8>(), 0..40)),
            0..12,
        ),
        chunk in 1usize..64,
    ) {
        let p = &profiles()[usize::from(pick) % profiles().len()];
        let with_trigger = p.trigger_field == TriggerField::First;
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (trigger, codes, raw) in &frames {
            stream.extend(noise(p, raw));
            let fields: Vec<&str> = codes.iter().map(String::as_str).collect();
            let trigger = with_trigger.then_some(*trigger);
            if fields.is_empty() {
                stream.extend(encode_frame(p, trigger, &[&p.no_read]));
                want.push(Frame::NoRead { trigger: trigger.map(TriggerCount) });
            } else {
                stream.extend(encode_frame(p, trigger, &fields));
                want.push(Frame::Read { trigger: trigger.map(TriggerCount), codes: codes.clone() });
            }
        }
        let (got, _) = run(p, &stream, &[chunk]);
        let frames: Vec<Frame> = got.into_iter().filter_map(Result::ok).collect();
        prop_assert_eq!(frames, want);
    }
}
