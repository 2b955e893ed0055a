//! The report page: headings, figures and the run table as one static `index.html`
//! (no scripts, no external resources).

use std::fmt::Write as _;

use super::findings::{Figure, numbered};

/// One row of the run table.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Stage name.
    pub stage: String,
    /// Sweep point, e.g. `noise=0.4,seed=1`.
    pub point: String,
    /// Stage kind.
    pub kind: String,
    /// Artifact key.
    pub key: String,
    /// Whether the artifact is in the cache.
    pub cached: bool,
    /// When it was computed (UTC), if cached.
    pub started: Option<String>,
    /// How long it took, if cached.
    pub seconds: Option<f64>,
    /// Where it ran, if cached.
    pub host: Option<String>,
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The heading of finding `i` (1-based): the claim with the measured result of the first
/// figure that shows it, or a plain statement that the run does not show it.
pub fn heading(i: usize, name: &str, figures: &[&Figure]) -> String {
    let claims: Vec<&super::findings::Claim> =
        figures.iter().filter_map(|f| f.claim.as_ref()).collect();
    match (claims.iter().find(|c| c.shown), claims.first()) {
        (Some(c), _) => format!("{i}. {name}: {}", c.text),
        (None, Some(c)) => format!("{i}. {name}? Not shown by this run: {}", c.text),
        (None, None) => format!("{i}. {name}"),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1400px;color:#222;padding:0 1em}\
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
figure{margin:1.5em 0}img{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{font-size:.9em;color:#555}table{border-collapse:collapse;font-size:.85em}\
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f4f4f4}\
td.num{text-align:right}code{font-size:.95em}.missing{color:#a33}.note{color:#555}";

/// The whole page, with the sections of the findings numbered in `sections`; `sweep`
/// describes the sweep the figures show ("noise {0.0, 0.4} x seed {1, 2}").
#[allow(clippy::too_many_arguments)]
pub fn page(
    pipeline: &str,
    description: &str,
    generated: &str,
    sweep: &str,
    over: &[String],
    sections: &[usize],
    figures: &[Figure],
    runs: &[RunRow],
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>pipe report: {p}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Pipeline {p}</h1>\n<p>{d}</p>\n<p class=\"sweep\">Sweep shown: {s}</p>\n<p class=\"note\">Generated {g}. Lines are means over \
         {o}; shaded bands are &plusmn;1 standard deviation. The numbers behind every figure are in \
         the CSV file linked under it.</p>\n",
        p = escape(pipeline),
        d = escape(description),
        g = escape(generated),
        s = escape(sweep),
        o = if over.is_empty() {
            "nothing (no variable to average over)".to_string()
        } else {
            escape(&over.join(", "))
        },
    );
    finding_sections(&mut h, sections, figures);
    plots_section(&mut h, sections, figures);
    run_table(&mut h, runs);
    h.push_str("</table>\n</body>\n</html>\n");
    h
}

/// The sections of the findings numbered in `sections`, each with its figures.
fn finding_sections(h: &mut String, sections: &[usize], figures: &[Figure]) {
    for (n, finding) in numbered() {
        if !sections.contains(&n) {
            continue;
        }
        let mine: Vec<&Figure> = figures.iter().filter(|f| f.finding == n).collect();
        let title = heading(n, finding.title, &mine);
        let _ = write!(
            h,
            "<h2>{}</h2>\n<p>{}</p>\n",
            escape(&title),
            escape(finding.text)
        );
        if mine.is_empty() {
            let _ = writeln!(
                h,
                "<p class=\"missing\">No figure: the pipeline has no cached instance with the table this finding needs.</p>"
            );
        }
        for f in mine {
            let claim = f.claim.as_ref().map_or(String::new(), |c| {
                format!(". {}{}", if c.shown { "" } else { "Not shown: " }, c.text)
            });
            let _ = write!(
                h,
                "<figure>\n<img src=\"figures/{s}.svg\" alt=\"{t}\">\n\
                 <figcaption>{t}{c}{n} (<a href=\"figures/{s}.csv\">data</a>)</figcaption>\n</figure>\n",
                s = escape(&f.stem),
                t = escape(&f.title),
                c = escape(&claim),
                n = escape(&caption_note(&f.caption)),
            );
        }
    }
}

/// A figure's own caption as a sentence after its title and claim, or nothing.
fn caption_note(caption: &str) -> String {
    if caption.is_empty() {
        String::new()
    } else {
        format!(". {caption}")
    }
}

/// The section of the pipeline's `[[report.plot]]` figures, when `sections` holds 0.
fn plots_section(h: &mut String, sections: &[usize], figures: &[Figure]) {
    if sections.contains(&0) {
        let _ = write!(
            h,
            "<h2>The pipeline's plots</h2>\n<p>The figures its <code>[[report.plot]]</code> tables ask for.</p>\n"
        );
        let mine: Vec<&Figure> = figures.iter().filter(|f| f.finding == 0).collect();
        if mine.is_empty() {
            let _ = writeln!(
                h,
                "<p class=\"missing\">No figure: no cached instance has the tables they name.</p>"
            );
        }
        for f in mine {
            let _ = write!(
                h,
                "<figure>\n<img src=\"figures/{s}.svg\" alt=\"{t}\">\n\
                 <figcaption>{t}{n} (<a href=\"figures/{s}.csv\">data</a>)</figcaption>\n</figure>\n",
                s = escape(&f.stem),
                t = escape(&f.title),
                n = escape(&caption_note(&f.caption)),
            );
        }
    }
}

/// The run table: every instance, cached or not, with when, how long and where it ran.
fn run_table(h: &mut String, runs: &[RunRow]) {
    let cached = runs.iter().filter(|r| r.cached).count();
    let seconds: f64 = runs.iter().filter_map(|r| r.seconds).sum();
    let _ = write!(
        h,
        "<h2>The run</h2>\n<p>{} instances, {cached} cached, {} not in the cache; \
         {seconds:.1} s of compute in the cached artifacts.</p>\n<table>\n\
         <tr><th>stage</th><th>point</th><th>kind</th><th>key</th><th>state</th>\
         <th>computed (UTC)</th><th>seconds</th><th>host</th></tr>\n",
        runs.len(),
        runs.len() - cached
    );
    for r in runs {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code title=\"{k}\">{}</code></td><td>{}</td>\
             <td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&r.stage),
            escape(&r.point),
            escape(&r.kind),
            escape(pipe_engine::key::short(&r.key, 16)),
            if r.cached {
                "cached"
            } else {
                "<span class=\"missing\">not in cache</span>"
            },
            escape(r.started.as_deref().unwrap_or("")),
            r.seconds.map(|s| format!("{s:.2}")).unwrap_or_default(),
            escape(r.host.as_deref().unwrap_or("")),
            k = escape(&r.key),
        );
    }
}

/// Formats unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_by_hand() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        // 2000-03-01 is day 11017; a leap-year boundary.
        assert_eq!(utc(11_017.0 * 86_400.0 + 3_661.0), "2000-03-01 01:01:01");
        assert_eq!(utc(951_782_399.0), "2000-02-28 23:59:59");
        assert_eq!(utc(1_798_761_600.0), "2027-01-01 00:00:00");
    }

    #[test]
    fn headings_state_the_first_shown_result_or_say_it_is_not_shown() {
        use super::super::findings::Claim;
        let fig = |claim: Option<(bool, &str)>| Figure {
            finding: 4,
            claim: claim.map(|(shown, text)| Claim {
                shown,
                text: text.to_string(),
            }),
            caption: String::new(),
            stem: String::new(),
            title: String::new(),
            svg: String::new(),
            csv: String::new(),
        };
        let (a, b) = (
            fig(Some((false, "x at noise=0.0"))),
            fig(Some((true, "y at noise=0.4"))),
        );
        assert_eq!(
            heading(4, "It can be undone", &[&a, &b]),
            "4. It can be undone: y at noise=0.4"
        );
        assert_eq!(
            heading(4, "It can be undone", &[&a]),
            "4. It can be undone? Not shown by this run: x at noise=0.0"
        );
        assert_eq!(
            heading(4, "It can be undone", &[&fig(None)]),
            "4. It can be undone"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
