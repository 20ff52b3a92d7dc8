//! Where each pending migration runs, and which of them share an item: a runner that applies
//! migrations item by item (the state machine's Map) bounds how many items one run may have,
//! so a long backlog is grouped, while a migration that needs its own loop or its own runner
//! is never grouped with others.

use std::ops::Range;
use std::time::Duration;

use crate::migration::MigrationSet;
use crate::plan::Entry;

/// How an item's migrations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// In one ordinary invocation, with the neighbours grouped into its item.
    Inline,
    /// A batch migration: invoked again and again, each invocation within a time budget,
    /// until its batches are done.
    Batch,
    /// A migration whose statements may outlast an invocation's deadline
    /// ([`crate::migration::Migration::runs_as_task`]): run by a task with no deadline.
    Task,
}

impl Route {
    /// Whether its migration must be alone in its item: its outcome, loop or runner is its own.
    pub fn alone(self) -> bool {
        self != Route::Inline
    }
}

/// One item: consecutive migrations (indexes into the pending list) and how they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub range: Range<usize>,
    pub route: Route,
}

/// The pending migrations as items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// How many migrations an item holds at most: 1 unless the backlog is longer than the
    /// items allowed.
    pub per_item: usize,
    pub items: Vec<Item>,
}

impl Routing {
    pub fn count(&self, route: Route) -> usize {
        self.items.iter().filter(|i| i.route == route).count()
    }
}

/// More migrations must be alone in their item than items are allowed: no grouping fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyAlone {
    /// How many must be alone.
    pub alone: usize,
}

/// The items of `pending` (in the order they apply), at most `max_items` of them (at least
/// 1), for a runner whose invocations give a statement `task_threshold` at most.
pub fn route(
    set: &MigrationSet,
    pending: &[&Entry],
    task_threshold: Duration,
    max_items: usize,
) -> Result<Routing, TooManyAlone> {
    let routes: Vec<Route> = pending
        .iter()
        .map(|e| match set.get(&e.version) {
            Some(m) if m.runs_as_task(task_threshold) => Route::Task,
            // A batch migration run as a task runs all its batches there: no loop.
            Some(m) if m.is_batch() => Route::Batch,
            _ => Route::Inline,
        })
        .collect();
    let alone: Vec<bool> = routes.iter().map(|r| r.alone()).collect();
    let (per_item, groups) = group_pending(&alone, max_items).ok_or(TooManyAlone {
        alone: alone.iter().filter(|a| **a).count(),
    })?;
    Ok(Routing {
        per_item,
        items: groups
            .into_iter()
            .map(|range| Item {
                route: routes[range.start],
                range,
            })
            .collect(),
    })
}

/// The items of `alone.len()` migrations (`alone[i]`: the i-th must be alone in its item), as
/// index ranges, at most `max_items` of them, and how many migrations an item holds at most:
/// consecutive migrations grouped `per_item` at a time (1 unless the backlog is longer than
/// `max_items`). None when even that cannot fit.
fn group_pending(alone: &[bool], max_items: usize) -> Option<(usize, Vec<Range<usize>>)> {
    let n = alone.len();
    let max_items = max_items.max(1);
    let fits = |per: usize| groups_of(alone, per).len() <= max_items;
    let mut low = n.div_ceil(max_items).max(1);
    if !fits(low) {
        // The count only falls as items grow: the smallest that fits, by bisection.
        let mut high = n.max(1);
        if !fits(high) {
            return None;
        }
        while low + 1 < high {
            let mid = (low + high) / 2;
            if fits(mid) {
                high = mid;
            } else {
                low = mid;
            }
        }
        low = high;
    }
    Some((low, groups_of(alone, low)))
}

fn groups_of(alone: &[bool], per: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, &is_alone) in alone.iter().enumerate() {
        if is_alone {
            if let Some(s) = start.take() {
                out.push(s..i);
            }
            out.push(i..i + 1);
            continue;
        }
        let s = *start.get_or_insert(i);
        if i + 1 - s == per {
            out.push(s..i + 1);
            start = None;
        }
    }
    if let Some(s) = start {
        out.push(s..alone.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::migration::test_set;
    use crate::plan::Plan;

    /// The Lambda side's item limit by default (its `DEFAULT_MAX_ITERATIONS`): the backlog
    /// sizes below were chosen against it.
    const DEFAULT_MAX_ITERATIONS: usize = 2000;

    fn ranges(batch: &[bool], max: usize) -> (usize, Vec<(usize, usize)>) {
        let (per, groups) = group_pending(batch, max).unwrap();
        (per, groups.iter().map(|g| (g.start, g.end)).collect())
    }

    #[test]
    fn a_batch_migration_is_alone_in_its_item() {
        // One item each below the limit, as before.
        assert_eq!(
            ranges(&[false, true, false], 10),
            (1, vec![(0, 1), (1, 2), (2, 3)])
        );
        // Grouped past it (3 at a time here), but never with a batch migration: the group
        // before it ends there.
        let batch = [false, false, true, false, false, false, false, false];
        assert_eq!(ranges(&batch, 4), (3, vec![(0, 2), (2, 3), (3, 6), (6, 8)]));
        // Without batch migrations, the same chunks as ever.
        let plain = vec![false; 10_000];
        let (per, groups) = group_pending(&plain, DEFAULT_MAX_ITERATIONS).unwrap();
        assert_eq!((per, groups.len()), (5, 2000));
        assert!(groups.iter().all(|g| g.len() == 5));
        // Batch migrations split groups: items grow until the count fits again.
        let mut mixed = vec![false; 10_000];
        for i in (0..10_000).step_by(100) {
            mixed[i] = true;
        }
        let (per, groups) = group_pending(&mixed, DEFAULT_MAX_ITERATIONS).unwrap();
        assert!(groups.len() <= DEFAULT_MAX_ITERATIONS, "{}", groups.len());
        assert_eq!(per, 6);
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 10_000);
        for g in &groups {
            if g.clone().any(|i| mixed[i]) {
                assert_eq!(g.len(), 1, "{g:?}");
            }
        }
        // More batch migrations than items allowed cannot be planned; none pending is none.
        assert!(group_pending(&[true, true, true], 2).is_none());
        assert_eq!(ranges(&[], 5), (1, vec![]));
    }

    const PLAIN: &str = "CREATE TABLE p (id int);";
    const BATCH: &str = "-- stepmigrate: batch\nUPDATE t SET x = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL LIMIT :batch_size);";
    const LONG: &str = "-- stepmigrate: statement_timeout = 2h\nCREATE INDEX i ON t (x);";
    const TASK_BATCH: &str = "-- stepmigrate: batch\n-- stepmigrate: runner = task\nUPDATE t SET x = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL LIMIT :batch_size);";

    /// A routing as `per_item` and `(first, last, route)` per item.
    type Routed = Result<(usize, Vec<(usize, usize, Route)>), TooManyAlone>;

    /// The routing of a fresh database's migrations, one file per text in `sqls`.
    fn routed(sqls: &[&str], threshold: Duration, max_items: usize) -> Routed {
        let names: Vec<String> = (1..=sqls.len()).map(|i| format!("{i:03}_m.sql")).collect();
        let files: Vec<(&str, &str)> = names
            .iter()
            .map(String::as_str)
            .zip(sqls.iter().copied())
            .collect();
        let set = test_set(&files);
        let plan = Plan::new(&set, &Ledger::empty(), None).unwrap();
        let pending: Vec<&Entry> = plan.pending().collect();
        let routing = route(&set, &pending, threshold, max_items)?;
        Ok((
            routing.per_item,
            routing
                .items
                .iter()
                .map(|i| (i.range.start, i.range.end - 1, i.route))
                .collect(),
        ))
    }

    #[test]
    fn each_pending_migration_takes_the_route_its_header_and_the_threshold_give() {
        use Route::*;
        let ten_minutes = Duration::from_secs(600);
        let three_hours = Duration::from_secs(3 * 3600);
        let cases: [(&str, &[&str], Duration, usize, Routed); 8] = [
            ("nothing pending", &[], ten_minutes, 5, Ok((1, vec![]))),
            (
                "below the limit, one item each",
                &[PLAIN, PLAIN, PLAIN],
                ten_minutes,
                5,
                Ok((1, vec![(0, 0, Inline), (1, 1, Inline), (2, 2, Inline)])),
            ),
            (
                "past it, grouped",
                &[PLAIN, PLAIN, PLAIN, PLAIN, PLAIN],
                ten_minutes,
                2,
                Ok((3, vec![(0, 2, Inline), (3, 4, Inline)])),
            ),
            (
                "a batch migration loops alone",
                &[PLAIN, BATCH, PLAIN],
                ten_minutes,
                5,
                Ok((1, vec![(0, 0, Inline), (1, 1, Batch), (2, 2, Inline)])),
            ),
            (
                "a statement longer than the threshold runs as a task",
                &[PLAIN, LONG],
                ten_minutes,
                5,
                Ok((1, vec![(0, 0, Inline), (1, 1, Task)])),
            ),
            (
                "and inline under a threshold longer than it",
                &[PLAIN, LONG],
                three_hours,
                5,
                Ok((1, vec![(0, 0, Inline), (1, 1, Inline)])),
            ),
            (
                "a batch migration on the task runner runs all its batches there",
                &[TASK_BATCH, PLAIN, PLAIN, PLAIN],
                ten_minutes,
                2,
                Ok((3, vec![(0, 0, Task), (1, 3, Inline)])),
            ),
            (
                "more alone than items allowed",
                &[BATCH, LONG, BATCH],
                ten_minutes,
                2,
                Err(TooManyAlone { alone: 3 }),
            ),
        ];
        for (why, sqls, threshold, max_items, expected) in cases {
            assert_eq!(routed(sqls, threshold, max_items), expected, "{why}");
        }
    }
}
