//! Pages of the API's lists: every list endpoint answers at most [`PAGE_MAX`] items, ordered
//! by a key (a probe's name, an event's id), with a cursor for the next page. A list of
//! 100,000 probes is some 50 MB of JSON; a page of 1,000 is half a megabyte, built from the
//! probes after the cursor only, so a client paging through the fleet never makes the
//! coordinator hold the whole answer.

/// Items per page unless the client asks for fewer or more.
pub const PAGE_DEFAULT: usize = 1_000;
/// The most items a page holds.
pub const PAGE_MAX: usize = 10_000;

/// The validated `limit` of a list request.
pub fn limit(asked: Option<usize>) -> Result<usize, String> {
    match asked {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "limit: {n} is out of range; ask for 1 to {PAGE_MAX} items a page (default {PAGE_DEFAULT}) and follow the Link header for more"
        )),
    }
}

/// The page of `items` (keyed by name) whose names come after `after`, in name order, at most
/// `limit` long; and whether more follow. Costs one pass over the names and a sort of the
/// page, not of everything.
pub fn by_name<K: AsRef<str>, V>(
    items: impl Iterator<Item = (K, V)>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<(K, V)>, bool) {
    let mut page: Vec<(K, V)> = items
        .filter(|(name, _)| after.is_none_or(|a| name.as_ref() > a))
        .collect();
    let more = page.len() > limit;
    let order = |a: &(K, V), b: &(K, V)| a.0.as_ref().cmp(b.0.as_ref());
    if more {
        page.select_nth_unstable_by(limit, order);
        page.truncate(limit);
    }
    page.sort_unstable_by(order);
    (page, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let names: Vec<String> = (0..2_345).map(|i| format!("p{i:05}")).rev().collect();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = by_name(names.iter().map(|n| (n, ())), after.as_deref(), 1_000);
            assert!(page.len() <= 1_000);
            seen.extend(page.iter().map(|(n, _)| (*n).clone()));
            after = page.last().map(|(n, _)| (*n).clone());
            if !more {
                break;
            }
        }
        let mut want = names.clone();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn limits_out_of_range_are_refused_with_the_range() {
        assert_eq!(limit(None), Ok(PAGE_DEFAULT));
        assert_eq!(limit(Some(5)), Ok(5));
        for bad in [0, PAGE_MAX + 1] {
            let e = limit(Some(bad)).expect_err("out of range");
            assert!(e.contains("1 to 10000"), "{e}");
        }
    }
}
