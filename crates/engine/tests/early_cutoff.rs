//! Early cutoff through the engine alone, with toy kinds: a kind's code version goes up but
//! its output does not change, so nothing below it reruns; and an analysis-like kind that
//! reads only some parts of its input keeps its key when the input grows more parts.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use pipe_engine::exec::{Outcome, RunOptions, Silent, local};
use pipe_engine::plan::Plan;
use pipe_engine::stage::{
    InputInfo, Inputs, KeyInputs, Kind, Part, Registry, RunContext, Slot, StageKind,
};
use pipe_engine::status::{self, State};
use pipe_engine::store::{Parts, Store};

pipe_engine::stage_params! {
    /// A source: writes `text`, and one part per number in `parts`.
    pub struct SourceParams {
        text: String, required, "what it writes";
        parts: Vec<i64>, default "[]", "parts it stores (named `part N`)";
    }
}

pipe_engine::stage_params! {
    /// A sink: copies its input; with `only`, reads just those parts of it.
    pub struct SinkParams {
        only: Vec<i64>, default "[]", "parts read (none: the whole input)";
    }
}

/// How many times each sink instance ran, over the whole test binary.
static SINK_RUNS: AtomicUsize = AtomicUsize::new(0);

fn source_parts(p: &SourceParams, keys: &KeyInputs<'_>) -> Vec<Part> {
    p.parts
        .iter()
        .map(|n| {
            // Keyed on the source's parameters (all but the list of parts) and the number.
            let mut params = keys.key_params(
                <SourceParams as pipe_engine::stage::KindParams>::specs(),
                &["parts"],
            );
            params.insert("n".into(), serde_json::json!(n));
            Part {
                name: format!("part {n}"),
                key: pipe_engine::key::compute_key("source-part", 1, &params, keys.input_keys, &[]),
            }
        })
        .collect()
}

fn run_source(p: &SourceParams, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
    std::fs::write(ctx.out.join("out.txt"), &p.text)?;
    write_parts(p, ctx.parts, ctx)
}

fn write_parts(p: &SourceParams, parts: &Parts, ctx: &RunContext<'_>) -> anyhow::Result<()> {
    let keys = KeyInputs {
        values: ctx.params,
        input_keys: &[],
        input_parts: &[],
    };
    for part in source_parts(p, &keys) {
        let name = part.name.clone();
        parts.put(
            &part.key,
            "source-part",
            &serde_json::json!({}),
            &mut |dir: &Path| Ok(std::fs::write(dir.join("part.txt"), &name)?),
        )?;
    }
    Ok(())
}

macro_rules! source_kind {
    ($name:ident, $version:literal) => {
        struct $name;
        impl Kind for $name {
            type Params = SourceParams;
            const NAME: &'static str = "source";
            const VERSION: u32 = $version;
            const ABOUT: &'static str = "writes a text";
            fn inputs(&self) -> Inputs {
                Inputs::Slots(&[])
            }
            fn parts(&self, p: &SourceParams, keys: &KeyInputs<'_>) -> Vec<Part> {
                source_parts(p, keys)
            }
            fn run(&self, p: &SourceParams, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
                run_source(p, ctx)
            }
        }
    };
}
source_kind!(SourceV1, 1);
source_kind!(SourceV2, 2);

struct Sink;
impl Kind for Sink {
    type Params = SinkParams;
    const NAME: &'static str = "sink";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "copies its input";
    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[Slot {
            name: "source",
            kinds: &["source"],
            optional: false,
            refuses: &[],
        }])
    }
    fn reads(&self, p: &SinkParams, _slot: &str, _up: &InputInfo<'_>) -> Option<Vec<String>> {
        (!p.only.is_empty()).then(|| p.only.iter().map(|n| format!("part {n}")).collect())
    }
    fn run(&self, _p: &SinkParams, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        SINK_RUNS.fetch_add(1, Ordering::SeqCst);
        let text = std::fs::read(ctx.input("source")?.join("out.txt"))?;
        std::fs::write(ctx.out.join("copy.txt"), text)?;
        Ok(())
    }
}

static V1: SourceV1 = SourceV1;
static V2: SourceV2 = SourceV2;
static SINK: Sink = Sink;

fn plan(text: &str, source: &'static dyn StageKind, dir: &Path) -> Plan {
    let registry = Registry::new(vec![source, &SINK]);
    let spec = pipe_engine::spec::Spec::parse("p.toml", text, dir, &[], &registry).unwrap();
    let plan = Plan::build(spec).unwrap();
    plan.resolve_all(&Store::new(dir.join("cache")));
    plan
}

fn run(plan: &Plan, dir: &Path) -> Vec<(String, Outcome)> {
    let opts = RunOptions {
        jobs: 2,
        fail_fast: false,
        only: Vec::new(),
        remote: None,
        gpus: Vec::new(),
        per_gpu: 1,
    };
    let report = local::run(plan, &Store::new(dir.join("cache")), &opts, &Silent).unwrap();
    report
        .outcomes
        .into_iter()
        .map(|(n, o)| (plan.label(n), o))
        .collect()
}

fn executed(outcomes: &[(String, Outcome)]) -> Vec<&str> {
    outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Executed { .. }))
        .map(|(l, _)| l.as_str())
        .collect()
}

const PIPELINE: &str = r#"
[pipeline]
name = "cutoff"
[stage.src]
kind = "source"
text = "same bytes"
parts = PARTS
[stage.whole]
kind = "sink"
inputs = ["src"]
[stage.some]
kind = "sink"
inputs = ["src"]
only = [1]
"#;

#[test]
fn a_version_bump_with_identical_output_reruns_nothing_below_and_parts_readers_keep_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("cache"));
    let text = PIPELINE.replace("PARTS", "[1]");
    let first = run(&plan(&text, &V1, dir.path()), dir.path());
    assert_eq!(executed(&first), ["src", "whole", "some"]);
    let runs = SINK_RUNS.load(Ordering::SeqCst);

    // Version 2 of the source writes the same bytes: it reruns, the sinks do not. Before
    // the run, `whole` may run (its key waits for src's output) and `some`, which reads
    // only part 1 (keyed on src's parameters, not its code), is known and cached.
    let p2 = plan(&text, &V2, dir.path());
    let index = store.read_index("cutoff");
    let st = status::status(&p2, &store, &index);
    let state = |name: &str| st.iter().find(|s| p2.label(s.node) == name).unwrap();
    assert_eq!(state("src").state, State::Stale);
    assert_eq!(state("whole").state, State::MayRun);
    assert_eq!(state("whole").reason, "depends on src's output");
    assert_eq!(state("some").state, State::Cached);
    let second = run(&p2, dir.path());
    assert_eq!(executed(&second), ["src"]);
    assert!(matches!(second[1].1, Outcome::Cached), "{second:?}");
    assert_eq!(SINK_RUNS.load(Ordering::SeqCst), runs);

    // More parts: `whole` reads everything, and src's output is unchanged; `some` reads
    // part 1, which is unchanged too. Neither reruns.
    let text3 = PIPELINE.replace("PARTS", "[1, 2]");
    let third = run(&plan(&text3, &V2, dir.path()), dir.path());
    assert_eq!(executed(&third), ["src"]);
    assert_eq!(SINK_RUNS.load(Ordering::SeqCst), runs);

    // Other bytes: both sinks rerun (`some` because its parts are keyed on src's params).
    let text4 = text3.replace("same bytes", "other bytes");
    let fourth = run(&plan(&text4, &V2, dir.path()), dir.path());
    assert_eq!(executed(&fourth), ["src", "whole", "some"]);
    assert_eq!(SINK_RUNS.load(Ordering::SeqCst), runs + 2);
}
