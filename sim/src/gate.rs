//! The reading gate's photo-eye as the PLC sees it: raw beam edges through a debounce filter.
//!
//! Both bounce (a short off/on glitch inside one parcel) and merge (two parcels closer than
//! the eye can separate) are not special cases here: they fall out of the same filter, as on
//! a real line.

use crate::Ms;

/// A raw level change of the beam at `at_ms`: blocked (a parcel in front of it) or clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Edge {
    pub at_ms: Ms,
    pub blocked: bool,
}

/// Debounced blocked intervals `[start, end)` in raw time.
///
/// A level change counts only when the new level holds for at least `debounce_ms`; the PLC
/// confirms it `debounce_ms` later and back-dates it to the raw edge (its encoder position).
/// `edges` must be in time order.
pub(crate) fn debounce(edges: &[Edge], debounce_ms: Ms) -> Vec<(Ms, Ms)> {
    let mut intervals = Vec::new();
    let mut blocked = false;
    let mut start_ms = 0;
    for (i, edge) in edges.iter().enumerate() {
        if edge.blocked == blocked {
            continue;
        }
        let holds = edges.get(i + 1).is_none_or(|next| next.at_ms.saturating_sub(edge.at_ms) >= debounce_ms);
        if !holds {
            continue;
        }
        blocked = edge.blocked;
        if blocked {
            start_ms = edge.at_ms;
        } else {
            intervals.push((start_ms, edge.at_ms));
        }
    }
    intervals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(levels: &[(Ms, bool)]) -> Vec<Edge> {
        levels.iter().map(|&(at_ms, blocked)| Edge { at_ms, blocked }).collect()
    }

    #[test]
    fn one_clean_parcel_is_one_interval() {
        assert_eq!(debounce(&edges(&[(100, true), (500, false)]), 20), vec![(100, 500)]);
    }

    #[test]
    fn a_bounce_inside_a_parcel_is_filtered() {
        // 5 ms glitch: clear at 300, blocked again at 305.
        let e = edges(&[(100, true), (300, false), (305, true), (500, false)]);
        assert_eq!(debounce(&e, 20), vec![(100, 500)]);
    }

    #[test]
    fn without_debounce_a_bounce_would_be_two_parcels() {
        let e = edges(&[(100, true), (300, false), (305, true), (500, false)]);
        assert_eq!(debounce(&e, 0), vec![(100, 300), (305, 500)]);
    }

    #[test]
    fn parcels_closer_than_the_debounce_merge() {
        let e = edges(&[(100, true), (500, false), (510, true), (900, false)]);
        assert_eq!(debounce(&e, 20), vec![(100, 900)]);
    }

    #[test]
    fn parcels_with_a_real_gap_stay_apart() {
        let e = edges(&[(100, true), (500, false), (1000, true), (1300, false)]);
        assert_eq!(debounce(&e, 20), vec![(100, 500), (1000, 1300)]);
    }

    #[test]
    fn a_flash_shorter_than_the_debounce_is_nothing() {
        let e = edges(&[(100, true), (110, false)]);
        assert!(debounce(&e, 20).is_empty());
    }
}
