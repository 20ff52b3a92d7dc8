//! The history budget: Step Functions ends an execution whose history reaches
//! [`HISTORY_LIMIT`] events, so the plan sizes what one execution runs (its Map items, each
//! batch migration's invocations) from what each part of a run costs in events.

/// How many Map iterations one execution runs at most. An inline Map iteration of an item
/// that is not a batch migration costs [`ITEM_EVENTS`] history events; 2,000 of them (18,000)
/// leave [`HISTORY_RESERVE`] for retries, the rest of the run and batch loops under the
/// 25,000-event limit.
pub const DEFAULT_MAX_ITERATIONS: usize = 2000;

/// Step Functions' limit on the events of one (Standard) execution's history.
pub const HISTORY_LIMIT: usize = 25_000;
/// The events of one Map iteration that is not a batch migration's: MapIterationStarted, the
/// `Batch?` Choice (entered, exited), `ApplyOne` (TaskStateEntered, LambdaFunctionScheduled,
/// LambdaFunctionStarted, LambdaFunctionSucceeded, TaskStateExited), MapIterationSucceeded
/// (counted by the end-to-end tests).
pub const ITEM_EVENTS: usize = 9;
/// The events one more invocation of a batch migration adds: `ApplyBatch` (5), the
/// `BatchDone?` Choice (2), `BatchWait` (2) (counted by `tests/e2e/test_batch.py`).
pub const BATCH_LOOP_EVENTS: usize = 9;
/// The events of a run outside its Map iterations (about 20: start, plan, the Map's own, the
/// end), rounded up.
pub const RUN_EVENTS: usize = 50;
/// Kept free for retries (3 events each) and failure handling.
pub const HISTORY_RESERVE: usize = 2_500;

/// The events of an item on the task route: `ApplyTask` (TaskStateEntered, TaskScheduled,
/// TaskStarted, TaskSubmitted, TaskSucceeded, TaskStateExited) and `TaskOutcome` (5), on top
/// of what [`ITEM_EVENTS`] counts for the iteration and `Batch?`, less ApplyOne's 5.
pub const TASK_ITEM_EVENTS: usize = ITEM_EVENTS + 6;

/// How many invocations each batch item of a plan of `items` Map items, `batch_items` of them
/// batch migrations and `task_items` on the task route, may take: what the history budget
/// leaves after every item's own events, the run's and the reserve, shared equally; at least 1.
pub fn batch_invocation_cap(items: usize, batch_items: usize, task_items: usize) -> u32 {
    if batch_items == 0 {
        return 0;
    }
    let used = HISTORY_RESERVE
        + RUN_EVENTS
        + items * ITEM_EVENTS
        + task_items * (TASK_ITEM_EVENTS - ITEM_EVENTS);
    let left = HISTORY_LIMIT.saturating_sub(used);
    (left / BATCH_LOOP_EVENTS / batch_items).clamp(1, u32::MAX as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_loop_shares_what_the_history_budget_leaves() {
        assert_eq!(batch_invocation_cap(5, 0, 0), 0);
        // A run of a few items: thousands of invocations.
        let few = batch_invocation_cap(3, 1, 0) as usize;
        assert_eq!(
            few,
            (HISTORY_LIMIT - HISTORY_RESERVE - RUN_EVENTS - 3 * ITEM_EVENTS) / BATCH_LOOP_EVENTS
        );
        assert!(few > 2000, "{few}");
        // The largest plan still leaves each of two batch items hundreds, and the whole run
        // stays under the limit even if every one of them loops to its cap.
        let items = DEFAULT_MAX_ITERATIONS;
        let cap = batch_invocation_cap(items, 2, 0) as usize;
        assert!(cap >= 200, "{cap}");
        let worst = RUN_EVENTS + items * ITEM_EVENTS + 2 * cap * BATCH_LOOP_EVENTS;
        assert!(worst + HISTORY_RESERVE <= HISTORY_LIMIT, "{worst}");
        // Items on the task route cost more, and leave the batch items less.
        let with_tasks = batch_invocation_cap(items, 2, 100) as usize;
        assert!(with_tasks < cap, "{with_tasks} {cap}");
        let worst = RUN_EVENTS
            + (items - 100) * ITEM_EVENTS
            + 100 * TASK_ITEM_EVENTS
            + 2 * with_tasks * BATCH_LOOP_EVENTS;
        assert!(worst + HISTORY_RESERVE <= HISTORY_LIMIT, "{worst}");
        // Past what the budget allows (a larger STEPMIGRATE_MAX_ITERATIONS), still one.
        assert_eq!(batch_invocation_cap(3000, 1, 0), 1);
    }
}
