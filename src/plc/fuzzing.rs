//! The register-decoding harness shared by the fuzz target (`fuzz/fuzz_targets/registers.rs`,
//! cargo fuzz on nightly) and a property test (stable, so CI runs it): arbitrary register
//! blocks into the [`EventReader`]. It panics when an invariant breaks; that is its purpose.

use super::codec::Header;
use super::map::RegisterMap;
use super::protocol::{EventReader, SlotSpan};
use super::RingFault;

/// The shipped register map, parsed once.
pub fn shipped_map() -> &'static RegisterMap {
    sortline_plc_contract::shipped_map()
}

/// Big-endian words from bytes; an odd last byte is dropped.
fn words(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect()
}

/// Encodes one poll as the harness reads it (seed corpus, tests): the header block, a control
/// word (0: read the span the reader plans), then the slot words.
pub fn encode_poll(header: &[u16], slots: &[u16]) -> Vec<u8> {
    header.iter().chain([0u16].iter()).chain(slots).flat_map(|w| w.to_be_bytes()).collect()
}

/// Runs `data` as polls: `[header words][control][span first][span count][slot words...]`
/// repeated, where control bit 0 set means "use the span given" (a stale or wrong plan) and
/// bits 8.. cap the slots planned. Checks, for every poll:
/// - an event comes from a well-formed slot: the words at its own position decode to it, at
///   its own ring index;
/// - events come out consecutively from where the reader stood: none repeated or skipped,
///   unless the poll declares a resync or an index jump.
pub fn check_register_polls(data: &[u8]) {
    let map = shipped_map();
    let w = words(data);
    let (_, header_words) = map.header_span();
    let header_words = usize::from(header_words);
    let slot_words = map.event_slot.words;
    let mut reader = EventReader::new(map, 64);
    let mut at = 0;
    // Bounded like everything else: at most 64 polls per input.
    for _ in 0..64 {
        let Some(block) = w.get(at..at + header_words + 1) else { break };
        at += header_words + 1;
        let Some(header) = Header::decode(map, &block[..header_words]) else { break };
        let control = block[header_words];
        let max_slots = (control >> 8).max(1);
        let planned = reader.plan(&header, max_slots);
        let span = if control & 1 == 1 {
            let Some(s) = w.get(at..at + 2) else { break };
            at += 2;
            Some(SlotSpan { first_index: s[0], count: s[1] % (map.event_ring.slots + 8) })
        } else {
            planned
        };
        let want = span.map_or(0, |s| usize::from(s.count) * slot_words);
        let got = &w[at.min(w.len())..(at + want).min(w.len())];
        at += want;
        let before = reader.read_index();
        let poll = reader.handle(&header, span.map(|s| (s, got)));

        let declared =
            poll.resync.is_some() || poll.faults.iter().any(|f| matches!(f, RingFault::EventIndexJump { .. }));
        assert!(poll.events.len() <= span.map_or(0, |s| usize::from(s.count)), "more events than slots read");
        if let Some(first) = poll.events.first() {
            assert_eq!(Some(first.index), span.map(|s| s.first_index), "events start at the span");
            if !declared {
                assert_eq!(first.index, before, "events continue where the reader stood");
            }
            let unread = header.event_write_index.wrapping_sub(first.index);
            assert!(poll.events.len() <= usize::from(unread), "an event past the write index");
        }
        for (k, ev) in poll.events.iter().enumerate() {
            let index = poll.events[0].index.wrapping_add(k as u16);
            assert_eq!(ev.index, index, "events are consecutive");
            assert_eq!(ev.boot, header.boot_count);
            let slot = &got[k * slot_words..(k + 1) * slot_words];
            assert_eq!(map.event_slot.decode(slot, index), Ok(ev.raw), "event not from a well-formed slot");
        }
        match poll.events.last() {
            Some(last) => assert_eq!(poll.read_index, last.index.wrapping_add(1)),
            None if !declared => assert_eq!(poll.read_index, before, "read index moved without events"),
            None => {}
        }
    }
}
