//! `resources = { cpus = 4, gpus = 1, mem = "16G", time = "02:00:00" }` on a stage: what a
//! cluster job of one of its instances asks for: parsing and checking the table into a
//! [`Resources`]. Resources never enter keys.

use super::node::{Node, Value};
use crate::error::{Error, suggest};
use crate::resources::Resources;

const KEYS: [&str; 4] = ["cpus", "gpus", "mem", "time"];

impl Resources {
    /// Parses and checks a stage's `resources` table.
    pub fn parse(node: &Node, path: &str) -> Result<Resources, Error> {
        let mut r = Resources::default();
        for (k, (key, v)) in node.as_table(path)? {
            let at = format!("{path}.{k}");
            let count = |min: i64| match &v.value {
                Value::Int(i) if *i >= min && *i <= 100_000 => Ok(*i as u32),
                other => Err(Error::at(
                    &v.loc,
                    &at,
                    format!(
                        "expected an integer >= {min}, found {}",
                        match other {
                            Value::Int(i) => i.to_string(),
                            o => o.type_name().to_string(),
                        }
                    ),
                )),
            };
            match k.as_str() {
                "cpus" => r.cpus = Some(count(1)?),
                "gpus" => r.gpus = Some(count(0)?),
                "mem" => {
                    let s = v.as_str(&at)?;
                    if !valid_mem(s) {
                        return Err(Error::at(
                            &v.loc,
                            &at,
                            format!("\"{s}\" is not a memory size; write e.g. \"16G\", \"512M\""),
                        ));
                    }
                    r.mem = Some(s.to_string());
                }
                "time" => {
                    let s = match &v.value {
                        Value::Int(m) if *m > 0 => m.to_string(),
                        _ => v.as_str(&at)?.to_string(),
                    };
                    if !valid_time(&s) {
                        return Err(Error::at(
                            &v.loc,
                            &at,
                            format!(
                                "\"{s}\" is not a time limit; write \"HH:MM:SS\", \"D-HH:MM:SS\" or minutes"
                            ),
                        ));
                    }
                    r.time = Some(s);
                }
                _ => {
                    return Err(Error::at(
                        &key.loc,
                        &at,
                        format!(
                            "unknown resource{}; allowed: {}",
                            suggest(k, KEYS),
                            KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(r)
    }
}

/// `16G`, `512M`, `1024` (megabytes), `2T`, `100K`.
fn valid_mem(s: &str) -> bool {
    let digits = s.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    s.len() - digits.len() <= 1 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Slurm time formats: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
fn valid_time(s: &str) -> bool {
    let num = |p: &str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, s),
    };
    if days.is_some_and(|d| !num(d)) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    parts.len() <= 3 && parts.iter().all(|p| num(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_time_formats() {
        for ok in ["16G", "512M", "1024", "2t"] {
            assert!(valid_mem(ok), "{ok}");
        }
        for bad in ["", "G", "16GB", "1.5G", "-1G"] {
            assert!(!valid_mem(bad), "{bad}");
        }
        for ok in ["02:00:00", "90", "1-12", "1-12:30:00", "5:00"] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["", "2h", "1:2:3:4", "x-1", "01:xx"] {
            assert!(!valid_time(bad), "{bad}");
        }
    }

    #[test]
    fn given_values_override_defaults() {
        let d = Resources {
            cpus: Some(2),
            gpus: Some(0),
            ..Default::default()
        };
        let g = Resources {
            gpus: Some(1),
            mem: Some("4G".into()),
            ..Default::default()
        };
        assert_eq!(
            d.overridden_by(&g),
            Resources {
                cpus: Some(2),
                gpus: Some(1),
                mem: Some("4G".into()),
                time: None
            }
        );
    }
}

/// Parses a duration: `"2h"`, `"90m"`, `"45s"`, `"1d"`, `"1h30m"`, or a number of seconds.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400.0,
            'h' => 3_600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
    }
    (num.is_empty() && total > 0.0).then(|| std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_by_hand() {
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("45s"), Some(Duration::from_secs(45)));
        for bad in ["", "2x", "h", "0", "-1", "2h5"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
