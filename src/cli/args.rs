//! What a pipeline command addresses: the pipeline file, its overrides and the recorded run
//! they come from (`PipelineArgs`, `select`, `load`), and the instances `--only` and
//! `--point` select.

use std::path::{Path, PathBuf};

use pipe_engine::error::Error;
use pipe_engine::plan::Plan;
use pipe_engine::spec::Spec;
use pipe_kinds::stages;

use super::cache::{cache_dir, pipeline_cache};
use super::errln;

/// Options every pipeline command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file (TOML) [default: the file of `--run`].
    pub file: Option<PathBuf>,
    /// Override a value: `--set stage.train.epochs=40`, `--set sweep.noise=[0.0,0.5]` (VALUE is TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The cache directory [default: $PIPE_CACHE, else the file's `[cache] dir`, else found from the file's folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Use the pipeline file and overrides of a recorded run: an id (or prefix), a name,
    /// `last`, or `none` (the file alone, without its last run's overrides). `table` and
    /// `export` take it more than once, to put runs side by side.
    #[arg(long, value_name = "ID|NAME|last|none")]
    pub run: Vec<String>,
}

/// A pipeline loaded for a command: the plan, its cache, and the run it was taken from.
pub(super) struct Loaded {
    /// The plan, with every key the cache allows resolved.
    pub(super) plan: Plan,
    /// The cache.
    pub(super) store: pipe_engine::store::Store,
    /// The pipeline file.
    pub(super) file: PathBuf,
    /// The overrides applied.
    pub(super) set: Vec<String>,
    /// The recorded run whose file and overrides were used, if any.
    pub(super) run: Option<pipe_engine::runs::RunRecord>,
}

/// Which pipeline file and overrides a command uses: those given; with `--run ID|last`,
/// the run's; with `implicit` and a file without `--set`, the overrides of that file's last
/// run (said on stderr), unless `--run none`.
pub(super) fn select(
    args: &PipelineArgs,
    implicit: bool,
) -> Result<
    (
        PathBuf,
        Vec<String>,
        PathBuf,
        Option<pipe_engine::runs::RunRecord>,
    ),
    Error,
> {
    use pipe_engine::runs;
    let cache = |file: Option<&Path>| match file {
        Some(f) => pipeline_cache(&args.cache, f),
        None => cache_dir(&args.cache),
    };
    let asked = match args.run.as_slice() {
        [] => None,
        [one] => Some(one.as_str()),
        [..] => {
            return Err(Error::usage(
                "--run once here (`table` and `export` take several runs)",
            ));
        }
    };
    match asked {
        Some("none") => {
            let file = args
                .file
                .clone()
                .ok_or_else(|| Error::usage("--run none: name the pipeline file"))?;
            let dir = cache(Some(&file))?;
            Ok((file, args.set.clone(), dir, None))
        }
        Some(id) => {
            if !args.set.is_empty() {
                return Err(Error::usage(format!(
                    "--run {id} takes the run's overrides; drop --set, or drop --run"
                )));
            }
            let dir = cache(args.file.as_deref())?;
            let store = pipe_engine::store::Store::new(&dir);
            let r = runs::find_run(&store, id, args.file.as_deref())?;
            let Some(file) = r.file.clone() else {
                return Err(Error::usage(format!(
                    "run {} did not record its pipeline file",
                    r.id
                )));
            };
            if let Some(given) = &args.file
                && std::fs::canonicalize(given).ok().as_ref() != Some(&file)
            {
                return Err(Error::usage(format!(
                    "run {} ran {}, not {}",
                    r.id,
                    file.display(),
                    given.display()
                )));
            }
            let set = r.overrides.clone();
            Ok((file, set, dir, Some(r)))
        }
        None => {
            let file = args
                .file
                .clone()
                .ok_or_else(|| Error::usage("name the pipeline file, or give --run ID|last"))?;
            let dir = cache(Some(&file))?;
            if !implicit || !args.set.is_empty() {
                return Ok((file, args.set.clone(), dir, None));
            }
            let store = pipe_engine::store::Store::new(&dir);
            // A run narrowed by --only/--point does not redefine the file: the last run
            // that covered all of it does.
            let (last, full) = runs::last_runs_of(&store, &file);
            let full = full.as_ref();
            if let Some(last) = last
                && !last.only.is_empty()
                && (last.overrides != full.map_or(&[][..], |r| &r.overrides[..]))
            {
                errln!(
                    "note: this file's last run, {}, covered only {} with {}; showing the file as {}",
                    last.id,
                    last.only.join(" "),
                    super::runs::overrides(&last.overrides),
                    match full {
                        Some(r) => format!("its last full run, {}, ran it", r.id),
                        None => "written (no run covered all of it)".to_string(),
                    }
                );
            }
            match full {
                Some(r) if !r.overrides.is_empty() => {
                    errln!(
                        "note: using the overrides of run {}, this file's last full run: {} (--run none for the file alone)",
                        r.id,
                        super::runs::overrides(&r.overrides)
                    );
                    Ok((file, r.overrides.clone(), dir, Some(r.clone())))
                }
                r => Ok((file, Vec::new(), dir, r.cloned())),
            }
        }
    }
}

/// Loads the pipeline that `args` select ([`select`]) and plans it, with every key that
/// the cache allows resolved.
pub(super) fn load(args: &PipelineArgs, implicit: bool) -> Result<Loaded, Error> {
    let (file, set, dir, run) = select(args, implicit)?;
    let registry = stages::registry();
    let spec = Spec::load(&file, &set, &registry)?;
    for w in &spec.unused_vars {
        errln!("warning: {w}");
    }
    let store = pipe_engine::store::Store::new(dir);
    // Declared files whose stamp is unchanged since an earlier command are not reread.
    store.load_file_hashes(&spec.name);
    let plan = Plan::build(spec)?;
    store.save_file_hashes(&plan.spec.name);
    plan.resolve_all(&store);
    Ok(Loaded {
        plan,
        store,
        file,
        set,
        run,
    })
}

/// The runs `table` and `export` put side by side, each loaded with its file and
/// overrides: those of `--run A --run B` (two or more), or with `all_runs` every run of the
/// file (of runs with the same overrides and narrowing, the latest). `None` for one run or
/// none: the command's usual single plan.
pub(super) fn load_runs(args: &PipelineArgs, all_runs: bool) -> Result<Option<Vec<Loaded>>, Error> {
    use pipe_engine::runs;
    if !all_runs && args.run.len() < 2 {
        return Ok(None);
    }
    if !args.set.is_empty() {
        return Err(Error::usage(
            "runs side by side take each run's overrides; drop --set",
        ));
    }
    let dir = match &args.file {
        Some(f) => pipeline_cache(&args.cache, f)?,
        None => cache_dir(&args.cache)?,
    };
    let store = pipe_engine::store::Store::new(&dir);
    let mut ids: Vec<String> = Vec::new();
    if all_runs {
        let file = args
            .file
            .as_deref()
            .ok_or_else(|| Error::usage("--all-runs: name the pipeline file"))?;
        let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        let all = runs::records(&store);
        let mine: Vec<&runs::RunRecord> = all
            .iter()
            .filter(|r| r.file.as_deref() == Some(file.as_path()))
            .collect();
        if mine.is_empty() {
            return Err(Error::usage(format!(
                "--all-runs: no run of {} in {}",
                file.display(),
                runs::runs_dir(&store).display()
            )));
        }
        // Newest first, so that the latest of runs with the same settings stands for them.
        let mut seen: Vec<(&[String], &[String])> = Vec::new();
        for r in mine.iter().rev() {
            let settings = (&r.overrides[..], &r.only[..]);
            if !seen.contains(&settings) {
                seen.push(settings);
                ids.push(r.id.clone());
            }
        }
        if ids.len() < mine.len() {
            errln!(
                "note: {} of {} runs repeat a later run's overrides and are shown by it",
                mine.len() - ids.len(),
                mine.len()
            );
        }
        ids.reverse();
    } else {
        for id in &args.run {
            if id == "none" {
                return Err(Error::usage(
                    "--run none names no run; give run ids, names or `last`",
                ));
            }
            let r = runs::find_run(&store, id, args.file.as_deref())?;
            if !ids.contains(&r.id) {
                ids.push(r.id);
            }
        }
    }
    let mut loaded = Vec::with_capacity(ids.len());
    for id in ids {
        let one = PipelineArgs {
            file: args.file.clone(),
            set: Vec::new(),
            cache: Some(dir.clone()),
            run: vec![id],
        };
        loaded.push(load(&one, false)?);
    }
    Ok(Some(loaded))
}

/// The selectors of `--only` (stages or `stage[point]`) narrowed by `--point`, checked
/// against the plan; empty when neither is given (everything).
pub(super) fn selectors(
    plan: &Plan,
    only: &[String],
    point: Option<&str>,
) -> Result<Vec<pipe_engine::select::Selector>, Error> {
    use pipe_engine::select::Selector;
    let point = match point {
        Some(p) => {
            let s = Selector::parse(p).map_err(|e| Error::usage(format!("--point: {e}")))?;
            if s.stage.is_some() || s.point.is_empty() {
                return Err(Error::usage(format!(
                    "--point {p}: write VARIABLE=VALUE,... (a stage goes in --only)"
                )));
            }
            Some(s)
        }
        None => None,
    };
    let mut out = Vec::new();
    for o in only {
        let s = Selector::parse(o).map_err(|e| Error::usage(format!("--only: {e}")))?;
        out.push(match &point {
            Some(p) => s.with_point(p),
            None => s,
        });
    }
    if out.is_empty()
        && let Some(p) = point
    {
        out.push(p);
    }
    for s in &out {
        s.check(plan).map_err(Error::usage)?;
    }
    Ok(out)
}
