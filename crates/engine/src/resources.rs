//! What one instance asks a cluster scheduler for (`resources = {...}` on a stage, or a
//! kind's defaults). A plain value type: parsing lives in `spec::resources`.

use serde::{Deserialize, Serialize};

/// What one instance asks a cluster scheduler for; `None` leaves it to the scheduler.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores (Slurm `--cpus-per-task`); also the instance's thread count there.
    pub cpus: Option<u32>,
    /// GPUs (Slurm `--gpus`).
    pub gpus: Option<u32>,
    /// Memory, e.g. `16G` (Slurm `--mem`).
    pub mem: Option<String>,
    /// Wall-clock limit, `[D-]HH:MM:SS` or minutes (Slurm `--time`).
    pub time: Option<String>,
}

impl Resources {
    /// `given` where set, else `self` (a kind's defaults).
    pub fn overridden_by(&self, given: &Resources) -> Resources {
        Resources {
            cpus: given.cpus.or(self.cpus),
            gpus: given.gpus.or(self.gpus),
            mem: given.mem.clone().or_else(|| self.mem.clone()),
            time: given.time.clone().or_else(|| self.time.clone()),
        }
    }
}
