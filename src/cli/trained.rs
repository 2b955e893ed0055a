//! The trained runs of a plan, as `table` and `serve` show them: its `train` and `import`
//! instances (those with a `metrics` table) with their states, and each one's metrics so
//! far: the artifact's when it is cached, else the live file beside its log while it runs
//! (and after it failed).

use pipe_engine::plan::Plan;
use pipe_engine::select::Selector;
use pipe_engine::status::{self, InstanceStatus, State};
use pipe_engine::store::Store;
use pipe_engine::table::{StoredTable, Table};
use pipe_kinds::tables::Metrics;

/// The state of every `train` and `import` instance of `plan` that every filter matches,
/// in plan order.
pub(super) fn trained_states(
    plan: &Plan,
    store: &Store,
    filters: &[Selector],
) -> Vec<InstanceStatus> {
    let index = store.read_index(&plan.spec.name);
    status::status(plan, store, &index)
        .into_iter()
        .filter(|s| {
            let kind = plan.spec.stages[plan.graph[s.node].stage].kind.name();
            pipe_kinds::stages::slots::TRAINED.kinds.contains(&kind)
        })
        .filter(|s| filters.iter().all(|f| f.matches(plan, s.node)))
        .collect()
}

/// The metrics rows of the instance with key `key` (in state `state`) so far: every
/// epoch from its artifact when that is complete; while it runs, or after it failed, the
/// epochs done, from `CACHE/logs/KEY.metrics.parquet` (opened once, as it is replaced
/// atomically); no rows otherwise, or while that file is not written yet. An error names
/// the file that could not be read.
pub(super) fn metrics_so_far(
    store: &Store,
    key: Option<&str>,
    state: State,
) -> Result<Metrics, String> {
    let Some(key) = key else {
        return Ok(Metrics::default());
    };
    let path = if store.is_complete(key) {
        Metrics::path_in(&store.artifact_dir(key))
    } else if matches!(state, State::Running | State::Failed) {
        store.live_table(key, Metrics::NAME)
    } else {
        return Ok(Metrics::default());
    };
    match Metrics::read(&path) {
        Ok(m) => Ok(m),
        // Not written yet (the first epoch is not done), or removed as the run finished
        // between the state and this read: the next read sees the artifact.
        Err(_) if !path.exists() => Ok(Metrics::default()),
        Err(e) => Err(format!("{e:#}")),
    }
}
