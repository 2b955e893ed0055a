//! Selectors: which instances a command means. `train` (a stage), `train[noise=0.4,seed=1]`
//! (a stage at a point), or `noise=0.4,seed=1` (a point, every stage).
//!
//! A value matches when it reads the same as the point's value (`0.40` matches `0.4`,
//! numbers compare as numbers). With a stage, every named variable must be one of the
//! stage's; without one, an instance without a variable matches on the others (a dataset
//! stage that does not depend on `noise` is part of every `noise=...` point).

use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use crate::plan::Plan;
use crate::spec::template;

/// Which instances a command means.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    /// The stage, if named.
    pub stage: Option<String>,
    /// Variable = value pairs, as written.
    pub point: Vec<(String, String)>,
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let point = self
            .point
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        match &self.stage {
            Some(s) if point.is_empty() => write!(f, "{s}"),
            Some(s) => write!(f, "{s}[{point}]"),
            None => write!(f, "{point}"),
        }
    }
}

impl Selector {
    /// Parses `stage`, `stage[var=value,...]` or `var=value,...`.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        let (stage, point) = match text.split_once('[') {
            Some((stage, rest)) => {
                let inner = rest.strip_suffix(']').ok_or_else(|| {
                    format!("`{text}`: a point in brackets must end with `]`: stage[noise=0.4]")
                })?;
                (Some(stage.trim()), inner)
            }
            None if text.contains('=') => (None, text),
            None => (Some(text), ""),
        };
        if stage.is_some_and(|s| s.is_empty()) {
            return Err(format!("`{text}`: name the stage before `[`"));
        }
        let mut pairs = Vec::new();
        for pair in point.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` in `{text}`: write VARIABLE=VALUE"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(format!("`{pair}` in `{text}`: write VARIABLE=VALUE"));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(Selector {
            stage: stage.map(str::to_string),
            point: pairs,
        })
    }

    /// Whether the instance of stage `stage` at `point` is selected.
    pub fn matches_point(&self, stage: &str, point: &Json) -> bool {
        if self.stage.as_deref().is_some_and(|s| s != stage) {
            return false;
        }
        self.point.iter().all(|(k, v)| match point.get(k) {
            Some(actual) => same_value(actual, v),
            None => self.stage.is_none(),
        })
    }

    /// Whether the instance of stage `stage` at `point` is selected for removal: as
    /// [`Selector::matches_point`], but the instance must have every named variable at the
    /// named value (a dataset without `noise` is not part of `noise=0.4` here).
    pub fn matches_exact(&self, stage: &str, point: &Json) -> bool {
        self.stage.as_deref().is_none_or(|s| s == stage)
            && self
                .point
                .iter()
                .all(|(k, v)| point.get(k).is_some_and(|a| same_value(a, v)))
    }

    /// Whether instance `n` of `plan` is selected.
    pub fn matches(&self, plan: &Plan, n: NodeIndex) -> bool {
        self.matches_point(plan.stage_name(n), &plan.point(n))
    }

    /// Checks the selector against a plan: the stage exists and has the named variables,
    /// the variables are the sweep's, and something matches.
    pub fn check(&self, plan: &Plan) -> Result<(), String> {
        if let Some(s) = &self.stage
            && plan.spec.stage(s).is_none()
        {
            let names: Vec<&str> = plan.spec.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "`{self}`: no stage {s}{}; stages: {}",
                crate::error::suggest(s, names.iter().copied()),
                names.join(", ")
            ));
        }
        for (k, _) in &self.point {
            if !plan.spec.sweep.vars.iter().any(|v| &v.name == k) {
                let vars: Vec<&str> = plan.spec.sweep.var_names();
                return Err(format!(
                    "`{self}`: no sweep variable {k}{}; variables: {}",
                    crate::error::suggest(k, vars.iter().copied()),
                    if vars.is_empty() {
                        "none".to_string()
                    } else {
                        vars.join(", ")
                    }
                ));
            }
        }
        // Something must have every named variable at the named value (a dataset that
        // matches any point does not count).
        let strict = Selector {
            stage: Some(String::new()),
            point: self.point.clone(),
        };
        if !plan
            .order
            .iter()
            .any(|&n| self.matches(plan, n) && strict.matches_point("", &plan.point(n)))
        {
            // Say which values exist, for a value the sweep does not have.
            let missing: Vec<String> = self
                .point
                .iter()
                .filter_map(|(k, v)| {
                    let var = plan.spec.sweep.vars.iter().find(|x| &x.name == k)?;
                    if var.values.iter().any(|x| same_value(x, v)) {
                        return None;
                    }
                    let values: Vec<String> = var.values.iter().map(template::display).collect();
                    Some(format!("{k} is one of {}", values.join(", ")))
                })
                .collect();
            return Err(format!(
                "`{self}` matches no instance of pipeline {}{}",
                plan.spec.name,
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(": {}", missing.join("; "))
                }
            ));
        }
        Ok(())
    }

    /// This selector narrowed to a point (`--point`): the pairs of both.
    pub fn with_point(&self, point: &Selector) -> Selector {
        let mut s = self.clone();
        s.point.extend(point.point.iter().cloned());
        s
    }
}

/// Whether a point's value reads as `text`: numbers compare as numbers, strings as
/// written, anything else as displayed.
pub fn same_value(actual: &Json, text: &str) -> bool {
    match actual {
        Json::Number(n) => match (n.as_f64(), text.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => false,
        },
        Json::String(s) => s == text || format!("{s:?}") == text,
        other => template::display(other) == text,
    }
}

/// The instances a run covers: those the selectors match (all, if there are none) and
/// everything they need.
pub fn closure(plan: &Plan, selectors: &[Selector]) -> Vec<NodeIndex> {
    if selectors.is_empty() {
        return plan.order.clone();
    }
    let mut keep = vec![false; plan.graph.node_count()];
    for &n in &plan.order {
        if selectors.iter().any(|s| s.matches(plan, n)) {
            for a in plan.ancestors_and_self(n) {
                keep[a.index()] = true;
            }
        }
    }
    plan.order
        .iter()
        .copied()
        .filter(|n| keep[n.index()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_three_forms() {
        let s = Selector::parse("train[noise=0.4, seed=1]").unwrap();
        assert_eq!(s.stage.as_deref(), Some("train"));
        assert_eq!(
            s.point,
            [("noise".into(), "0.4".into()), ("seed".into(), "1".into())]
        );
        assert_eq!(s.to_string(), "train[noise=0.4,seed=1]");
        assert_eq!(Selector::parse("train").unwrap().point, []);
        assert_eq!(Selector::parse("noise=0.4").unwrap().stage, None);
        assert!(Selector::parse("train[noise=0.4").is_err());
        assert!(Selector::parse("train[noise]").is_err());
        assert!(Selector::parse("[noise=1]").is_err());
    }

    #[test]
    fn numbers_match_as_numbers_and_stageless_selectors_skip_absent_variables() {
        let p = json!({"noise": 0.4, "seed": 1, "model": "mlp"});
        assert!(
            Selector::parse("t[noise=0.40,seed=1]")
                .unwrap()
                .matches_point("t", &p)
        );
        assert!(
            !Selector::parse("t[noise=0.5]")
                .unwrap()
                .matches_point("t", &p)
        );
        assert!(
            Selector::parse("t[model=mlp]")
                .unwrap()
                .matches_point("t", &p)
        );
        assert!(!Selector::parse("u[seed=1]").unwrap().matches_point("t", &p));
        // A dataset without `noise` is part of every noise point, unless a stage is named.
        assert!(
            Selector::parse("noise=0.4")
                .unwrap()
                .matches_point("data", &json!({}))
        );
        assert!(
            !Selector::parse("noise=0.4")
                .unwrap()
                .matches_exact("data", &json!({}))
        );
        assert!(
            Selector::parse("noise=0.4")
                .unwrap()
                .matches_exact("train", &json!({"noise": 0.40}))
        );
        assert!(
            !Selector::parse("data[noise=0.4]")
                .unwrap()
                .matches_point("data", &json!({}))
        );
    }
}
