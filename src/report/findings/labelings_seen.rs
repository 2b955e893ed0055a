//! The three labelings, seen: a 2-D embedding of one layer's representation of the probe
//! set per epoch (the study's Figure 1), with neighbour agreement.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use pipe_kinds::tables::Embedding;

use super::{
    Acc, CSV_HEADER, Claim, Figure, FigureData, Finding, at_group, csv_rows, mean_at, push, slug,
};
use crate::report::chart::{self};
use crate::report::stats::Stat;

/// The finding, for the registry.
pub(super) const FINDING: Finding = Finding {
    title: "The three labelings, seen",
    text: "A 2-D view (t-SNE or PCA) of one layer's representation of the probe set per epoch, each \
     dot an example colored by class: unpermuted (clean examples, their label), permuted \
     (corrupted examples, their training label) and restored (the same examples, their true \
     label). Neighbour agreement is the share of an example's 10 nearest neighbours in 2-D \
     that carry its label.",
    shown_for: super::always,
    figures,
};

/// The three labelings of the embedding figure: which group's examples, colored by which label.
const VIEWS: [(&str, &str, bool); 3] = [
    ("unpermuted", "clean", true),
    ("permuted", "corrupted", false),
    ("restored", "corrupted", true),
];

/// The share of neighbours (training label, among corrupted examples) above which the
/// permuted clusters count as formed.
const CLUSTERED: f64 = 0.5;

/// The figures (the study's Figure 1): for one layer, rows = epochs, columns = the three
/// labelings, each dot a probe-set example colored by class; t-SNE where computed, else
/// PCA. Dots are one instance's (the first of the averaged group); the agreement numbers
/// are means over the group.
fn figures(data: &FigureData<'_>, n: usize) -> Result<Vec<Figure>> {
    let tables = data.tables::<Embedding>()?;
    let Some(layer) = shown_layer(data.embed_layer, &tables)? else {
        return Ok(Vec::new());
    };
    let mut figures = Vec::new();
    for ((stage, group), g) in group_embeddings(data, tables, &layer) {
        if let Some(figure) = group_figure(n, &stage, &group, &layer, g)? {
            figures.push(figure);
        }
    }
    Ok(figures)
}

/// One (stage, group)'s embeddings: the first instance's table, the method shown (`tsne`
/// where that instance has it, else `pca`) and the neighbour agreement over the group
/// (series -> epoch -> values).
struct GroupEmbedding {
    /// The first instance's table (its dots are drawn).
    table: Embedding,
    /// Its classes' names, by label, from its data set (`None`: not known).
    class_names: Option<Vec<String>>,
    /// `tsne` or `pca`.
    method: String,
    /// Neighbour agreement: series -> epoch -> values, one per instance.
    agreement: Acc,
}

/// The layer shown: `--embed-layer` if embedded, else the last layer embedded; none when
/// nothing is embedded. An `--embed-layer` that is not embedded is an error naming those
/// that are.
fn shown_layer(
    embed_layer: Option<&str>,
    tables: &[(NodeIndex, Embedding)],
) -> Result<Option<String>> {
    let mut layers: Vec<String> = Vec::new();
    for (_, t) in tables {
        for l in &t.layer {
            if !layers.contains(l) {
                layers.push(l.clone());
            }
        }
    }
    Ok(match embed_layer {
        Some(l) if layers.iter().any(|x| x == l) => Some(l.to_string()),
        Some(l) if !layers.is_empty() => anyhow::bail!(
            "--embed-layer {l}: no embedding of layer `{l}`; embedded layers: {}",
            layers.join(", ")
        ),
        _ => layers.last().cloned(),
    })
}

/// The embeddings grouped by (stage, group), in the order first seen, each group's
/// agreement accumulated from every instance's rows of `layer` and the group's method.
fn group_embeddings(
    data: &FigureData<'_>,
    tables: Vec<(NodeIndex, Embedding)>,
    layer: &str,
) -> IndexMap<(String, String), GroupEmbedding> {
    let mut by: IndexMap<(String, String), GroupEmbedding> = IndexMap::new();
    for (node, t) in tables {
        let method = if t.method.iter().any(|m| m == "tsne") {
            "tsne"
        } else {
            "pca"
        };
        let entry = by
            .entry(data.stage_and_group(node))
            .or_insert_with(|| GroupEmbedding {
                table: t.clone(),
                class_names: crate::report::class_names::of_instance(data.plan, data.store, node),
                method: method.to_string(),
                agreement: Acc::new(),
            });
        add_agreement(&mut entry.agreement, &t, layer, &entry.method);
    }
    by
}

/// Adds one instance's neighbour agreement, averaged per epoch over its examples of
/// `layer` and `method`: unpermuted (clean examples, true label), permuted (corrupted
/// examples, training label) and restored (corrupted examples, true label).
fn add_agreement(agreement: &mut Acc, t: &Embedding, layer: &str, method: &str) {
    let mut sums: BTreeMap<(i64, &str), (f64, usize)> = BTreeMap::new();
    for i in 0..t.epoch.len() {
        if t.layer[i] != layer || t.method[i] != method {
            continue;
        }
        let e = t.epoch[i];
        let mut add = |series: &'static str, v: f64| {
            let s = sums.entry((e, series)).or_default();
            s.0 += v;
            s.1 += 1;
        };
        if t.group[i] == "clean" {
            add("unpermuted", t.true_label_agreement[i]);
        } else {
            add("permuted", t.train_label_agreement[i]);
            add("restored", t.true_label_agreement[i]);
        }
    }
    for ((e, series), (sum, n)) in sums {
        push(agreement, series, e, Some(sum / n as f64));
    }
}

/// The embedding figure of one (stage, group), none if it has no rows of the layer and
/// method shown.
fn group_figure(
    n: usize,
    stage: &str,
    group: &str,
    layer: &str,
    g: GroupEmbedding,
) -> Result<Option<Figure>> {
    let GroupEmbedding {
        table: t,
        class_names,
        method,
        agreement,
    } = g;
    let epochs: BTreeSet<i64> = (0..t.epoch.len())
        .filter(|&i| t.layer[i] == layer && t.method[i] == method)
        .map(|i| t.epoch[i])
        .collect();
    if epochs.is_empty() {
        return Ok(None);
    }
    let classes = t
        .true_label
        .iter()
        .chain(&t.train_label)
        .copied()
        .max()
        .unwrap_or(0);
    // Without corrupted examples only the unpermuted view has points.
    let has_corrupted = t.group.iter().any(|g| g == "corrupted");
    let views: Vec<_> = VIEWS
        .iter()
        .filter(|v| has_corrupted || v.1 == "clean")
        .collect();
    let cells = scatter_cells(&t, layer, &method, &epochs, &views);
    let method_name = if method == "tsne" { "t-SNE" } else { "PCA" };
    let mut csv = CSV_HEADER.to_string();
    csv_rows(&mut csv, "neighbour agreement", &agreement, |x| {
        x.to_string()
    });
    let claim = has_corrupted
        .then(|| permuted_clusters(&agreement, layer, method_name, group))
        .flatten();
    let title = format!("{method_name} of layer {layer}: stage {stage}, {group}");
    let grid = chart::ScatterGrid {
        title: title.clone(),
        rows: epochs.iter().map(|e| format!("epoch {e}")).collect(),
        cols: views.iter().map(|v| v.0.to_string()).collect(),
        cells,
        classes: (0..=classes)
            .map(|c| crate::report::class_names::legend_name(class_names.as_deref(), c as usize))
            .collect(),
    };
    Ok(Some(Figure {
        finding: n,
        claim,
        caption: String::new(),
        stem: format!("{n}-embedding-{}-{}", slug(stage), slug(group)),
        svg: chart::scatter_svg(&grid)?,
        title,
        csv,
    }))
}

/// The scatter grid's cells: per epoch (rows), per view (columns), the points (x, y,
/// class) of that view's examples of `layer` and `method`, colored by the view's label.
fn scatter_cells(
    t: &Embedding,
    layer: &str,
    method: &str,
    epochs: &BTreeSet<i64>,
    views: &[&(&str, &str, bool)],
) -> Vec<Vec<Vec<(f64, f64, usize)>>> {
    let mut cells = Vec::new();
    for &e in epochs {
        let mut row = Vec::new();
        for &&(_, wanted, by_true) in views {
            let points: Vec<(f64, f64, usize)> = (0..t.epoch.len())
                .filter(|&i| {
                    t.epoch[i] == e
                        && t.layer[i] == layer
                        && t.method[i] == method
                        && t.group[i] == wanted
                })
                .map(|i| {
                    let label = if by_true {
                        t.true_label[i]
                    } else {
                        t.train_label[i]
                    };
                    (t.x[i], t.y[i], label.max(0) as usize)
                })
                .collect();
            row.push(points);
        }
        cells.push(row);
    }
    cells
}

/// The claim, from the neighbour agreement of one (stage, group): the first epoch at which
/// corrupted examples' neighbours mostly share their training label.
fn permuted_clusters(agreement: &Acc, layer: &str, method: &str, group: &str) -> Option<Claim> {
    let permuted = agreement.get("permuted")?;
    let means: Vec<(i64, f64)> = permuted
        .iter()
        .filter_map(|(e, v)| Stat::of(v).map(|s| (*e, s.mean)))
        .collect();
    let (&(first_e, first), &(last_e, last)) = (means.first()?, means.last()?);
    let restored = |e: i64| mean_at(agreement, "restored", e).unwrap_or(f64::NAN);
    let numbers = format!(
        "in {layer} ({method}){}, corrupted examples' neighbours sharing their training label {first:.2} (epoch {first_e}) -> {last:.2} (epoch {last_e}), their true label {:.2} -> {:.2}",
        at_group(group),
        restored(first_e),
        restored(last_e)
    );
    match means.iter().find(|(_, m)| *m >= CLUSTERED) {
        Some(&(e, m)) if e > first_e => Claim::new(
            true,
            format!("permuted clusters appear at epoch {e} (agreement {m:.2}): {numbers}"),
        ),
        Some(_) => Claim::new(
            false,
            format!(
                "the corrupted examples cluster by training label from the first epoch shown: {numbers}"
            ),
        ),
        None => Claim::new(
            false,
            format!("no permuted clusters (agreement stays below {CLUSTERED}): {numbers}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::findings::acc;

    #[test]
    fn permuted_clusters_appear_at_the_first_epoch_past_half() {
        let a = acc(&[
            ("permuted", &[(0, 0.1), (10, 0.35), (40, 0.62), (80, 0.9)]),
            ("restored", &[(0, 0.4), (80, 0.2)]),
        ]);
        let c = permuted_clusters(&a, "logits", "t-SNE", "noise=0.4").unwrap();
        assert!(c.shown);
        assert_eq!(
            c.text,
            "permuted clusters appear at epoch 40 (agreement 0.62): in logits (t-SNE) at noise=0.4, \
             corrupted examples' neighbours sharing their training label 0.10 (epoch 0) -> 0.90 (epoch 80), \
             their true label 0.40 -> 0.20"
        );
        let never = acc(&[("permuted", &[(0, 0.1), (80, 0.3)])]);
        let c = permuted_clusters(&never, "fc1", "PCA", "all").unwrap();
        assert!(
            !c.shown
                && c.text
                    .starts_with("no permuted clusters (agreement stays below 0.5)")
        );
    }
}
