//! Job files for a manifest: an sbatch script for a Slurm job array and a Kubernetes Indexed
//! Job, with the resources a task needs from the plan (its peak memory and time, with a margin)
//! and the exit codes that say whether a retry can help.

use std::path::Path;

use serde_json::{Value, json};

use crate::settings::shell_quote;

/// Exit code of an item that cannot succeed as given (bad input): do not retry.
pub const EXIT_PERMANENT: i32 = 2;
/// Exit code of an item whose loss became NaN or infinite (its weights): do not retry.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of an item that may succeed if run again (interrupted, out of memory, device
/// lost, output not writable now): `EX_TEMPFAIL`.
pub const EXIT_RETRY: i32 = 75;
/// Slurm's default `MaxArraySize`: an array's indices are below it.
pub const SLURM_MAX_ARRAY: usize = 1001;

/// What a task needs and how many run at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    /// Items in the manifest.
    pub items: usize,
    /// Tasks running at once.
    pub parallel: usize,
    /// CPUs per task.
    pub cpus: usize,
    /// Memory per task, in MiB (the plan's peak with a margin).
    pub memory_mib: u64,
    /// Time per task, in seconds (the plan's estimate with a margin).
    pub seconds: u64,
}

impl Resources {
    /// From the plan's peak bytes and estimated seconds of the largest item: a quarter more
    /// memory and 256 MiB, twice the time and five minutes.
    pub fn with_margin(items: usize, parallel: usize, cpus: usize, peak_bytes: u64, seconds: f64) -> Self {
        let memory_mib = ((peak_bytes as f64 * 1.25 / (1u64 << 20) as f64).ceil() as u64).saturating_add(256);
        // (A cast saturates: an endless estimate is the longest time there is.)
        let seconds = ((seconds.max(0.0) * 2.0).ceil() as u64).saturating_add(300);
        Resources { items, parallel: parallel.clamp(1, items.max(1)), cpus: cpus.max(1), memory_mib, seconds }
    }
}

fn hms(seconds: u64) -> String {
    format!("{}:{:02}:{:02}", seconds / 3600, (seconds % 3600) / 60, seconds % 60)
}

/// An sbatch script running `manifest`'s items as an array (`impasto` is the program to run,
/// `logs` where the per-task logs go). Manifests longer than [`SLURM_MAX_ARRAY`] are submitted
/// once per block with `IMPASTO_OFFSET` (the script says how).
pub fn slurm(manifest: &Path, impasto: &Path, logs: &Path, r: &Resources) -> String {
    let last = r.items.min(SLURM_MAX_ARRAY - 1).saturating_sub(1);
    let name: String = manifest
        .file_stem()
        .map_or("impasto".into(), |s| s.to_string_lossy().into_owned())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("# impasto batch: {} items of {}\n", r.items, manifest.display());
    s += &format!("#SBATCH --job-name=impasto-{name}\n");
    s += &format!("#SBATCH --array=0-{last}%{}\n", r.parallel);
    s += &format!("#SBATCH --cpus-per-task={}\n", r.cpus);
    s += &format!("#SBATCH --mem={}M\n", r.memory_mib);
    s += &format!("#SBATCH --time={}\n", hms(r.seconds));
    // sbatch reads a directive's value as a shell word would be.
    s += &format!("#SBATCH --output={}\n", shell_quote(&format!("{}/impasto-%A_%a.log", logs.display())));
    if r.items > SLURM_MAX_ARRAY - 1 {
        s += &format!("# More items than one array holds: submit once per block of {}:\n", SLURM_MAX_ARRAY - 1);
        for offset in (0..r.items).step_by(SLURM_MAX_ARRAY - 1).skip(1) {
            let last = (r.items - offset).min(SLURM_MAX_ARRAY - 1) - 1;
            s += &format!(
                "#   sbatch --array=0-{last}%{} --export=ALL,IMPASTO_OFFSET={offset} THIS_SCRIPT\n",
                r.parallel
            );
        }
    }
    s += "# Exit codes: 0 done (or already done), 2 bad input (do not retry), 75 retry (interrupted,\n";
    s += "# out of memory, device lost). A resubmitted array runs only the items not yet done.\n";
    s += &format!(
        "exec {} batch {} --offset \"${{IMPASTO_OFFSET:-0}}\"\n",
        shell_quote(&impasto.to_string_lossy()),
        shell_quote(&manifest.to_string_lossy())
    );
    s
}

/// A Kubernetes Indexed Job (`batch/v1`) running `manifest`'s items with `image` (a container
/// image with impasto), the manifest, images and outputs on the persistent volume claim
/// `claim` mounted at `mount`; exit codes 1 and 2 fail the index without retrying, 75 and
/// others are retried up to three times per index.
pub fn kubernetes(manifest_in_volume: &Path, image: &str, claim: &str, mount: &str, r: &Resources) -> Value {
    let name = manifest_in_volume
        .file_stem()
        .map_or("impasto".into(), |s| s.to_string_lossy().to_ascii_lowercase())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>();
    let name = format!("impasto-{}", name.trim_matches('-'));
    let name: String = name.chars().take(52).collect::<String>().trim_end_matches('-').to_string();
    let resources = json!({
        "requests": { "cpu": r.cpus.to_string(), "memory": format!("{}Mi", r.memory_mib) },
        "limits": { "cpu": r.cpus.to_string(), "memory": format!("{}Mi", r.memory_mib) },
    });
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": {
            "completionMode": "Indexed",
            "completions": r.items,
            "parallelism": r.parallel,
            "backoffLimitPerIndex": 3,
            "activeDeadlineSeconds": r.seconds.saturating_mul(r.items.div_ceil(r.parallel.max(1)) as u64).saturating_add(600),
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailIndex",
                        "onExitCodes": { "containerName": "impasto", "operator": "In", "values": [EXIT_FAILED, EXIT_PERMANENT] }
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{ "type": "DisruptionTarget" }]
                    }
                ]
            },
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "impasto",
                        "image": image,
                        "command": ["impasto", "batch", manifest_in_volume.to_string_lossy()],
                        "env": [{ "name": "IMPASTO_HOME", "value": format!("{mount}/.impasto") }],
                        "resources": resources,
                        "volumeMounts": [{ "name": "work", "mountPath": mount }]
                    }],
                    "volumes": [{ "name": "work", "persistentVolumeClaim": { "claimName": claim } }]
                }
            }
        }
    })
}

/// `value` as YAML (block style; every string quoted as JSON quotes it, which YAML reads the
/// same).
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let nested =
        |v: &Value| matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = yaml_key(k);
                match v {
                    Value::Object(_) if nested(v) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(v, indent + 2, out);
                    }
                    Value::Array(_) if nested(v) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(v, indent, out);
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", scalar(v))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    // The first key on the dash's line, the rest under it.
                    Value::Object(_) if nested(item) => {
                        let mut inner = String::new();
                        write_yaml(item, indent + 2, &mut inner);
                        out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                    }
                    Value::Array(_) if nested(item) => {
                        out.push_str(&format!("{pad}-\n"));
                        write_yaml(item, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", scalar(item))),
                }
            }
        }
        v => out.push_str(&format!("{pad}{}\n", scalar(v))),
    }
}

/// A mapping key: as it is when it is a plain word YAML reads as that string (`apiVersion`),
/// quoted otherwise.
fn yaml_key(k: &str) -> String {
    let word = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    let reserved = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    if word && !reserved.contains(&k.to_ascii_lowercase().as_str()) {
        k.to_string()
    } else {
        scalar(&Value::String(k.into()))
    }
}

/// A scalar in YAML's double-quoted style: JSON's quoting, and `\uXXXX` for the characters
/// YAML refuses or reads as line breaks in a quoted scalar (DEL, C1 controls, U+2028/9,
/// U+FFFE/F).
fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        v => v
            .to_string()
            .chars()
            .map(|c| match c {
                '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}' => {
                    format!("\\u{:04x}", c as u32)
                }
                c => c.to_string(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_have_a_margin() {
        let r = Resources::with_margin(10, 4, 2, 1 << 30, 100.0);
        assert_eq!((r.memory_mib, r.seconds, r.parallel), (1280 + 256, 500, 4));
        assert_eq!(Resources::with_margin(3, 50, 0, 0, 0.0).parallel, 3);
        assert_eq!(hms(3725), "1:02:05");
    }

    #[test]
    fn the_script_holds_the_array_and_resources() {
        let r = Resources { items: 2500, parallel: 8, cpus: 2, memory_mib: 900, seconds: 3600 };
        let s = slurm(Path::new("/data/runs.jsonl"), Path::new("/usr/bin/impasto"), Path::new("/data/logs"), &r);
        for line in [
            "#SBATCH --array=0-999%8",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --mem=900M",
            "#SBATCH --time=1:00:00",
            "IMPASTO_OFFSET=1000 ",
            "--array=0-499%8 --export=ALL,IMPASTO_OFFSET=2000",
            "exec /usr/bin/impasto batch /data/runs.jsonl --offset \"${IMPASTO_OFFSET:-0}\"",
        ] {
            assert!(s.contains(line), "{line} in\n{s}");
        }
    }

    #[test]
    fn yaml_nests_maps_and_lists() {
        let v = json!({"a": {"b": 1, "c": [{"d": "x", "e": [2]}, "y"]}, "f": []});
        assert_eq!(yaml(&v), "a:\n  b: 1\n  c:\n  - d: \"x\"\n    e:\n    - 2\n  - \"y\"\nf: []\n");
        let v = json!({"m": [[1, [2]], []], "s": "a\u{85}b\u{2028}\u{7f}", "no": 1, "a b": 2});
        assert_eq!(
            yaml(&v),
            "\"a b\": 2\nm:\n-\n  - 1\n  -\n    - 2\n- []\n\"no\": 1\ns: \"a\\u0085b\\u2028\\u007f\"\n"
        );
    }
}
