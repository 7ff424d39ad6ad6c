use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use impasto::settings::Settings;

use crate::util::{describe, impasto, impasto_env, listing, real_weights_path, s, tempdir};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// A manifest line: `content` after `style` at `size` px for `iterations`, to `output`.
fn line(content: &str, style: &str, size: usize, iterations: usize, output: &str) -> Value {
    json!({
        "content": s(&example(content)),
        "styles": [{ "image": s(&example(style)) }],
        "config": { "size": size, "iterations": iterations },
        "output": output,
    })
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The JSON events of a batch's stderr.
fn events(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn event_of(events: &[Value], item: usize) -> Vec<String> {
    events.iter().filter(|e| e["item"] == item).map(|e| e["event"].as_str().unwrap().to_string()).collect()
}

const PAIRS: [(&str, &str); 3] =
    [("tubingen.jpg", "starry_night.jpg"), ("shipwreck.jpg", "starry_night.jpg"), ("kodim23.png", "shipwreck.jpg")];

/// A whole manifest run here: every output appears carrying its item's settings (the relative
/// output resolved against the manifest's directory); a second run skips every item; a changed
/// item runs again, alone; `--force` runs all; the log is JSON lines tagged with the item.
#[test]
fn a_manifest_runs_once_and_resumes() {
    real_weights_path();
    let dir = tempdir();
    let manifest = dir.path().join("runs.jsonl");
    let mut lines: Vec<Value> =
        PAIRS.iter().enumerate().map(|(i, (c, st))| line(c, st, 40 + 8 * i, 4, &format!("out/{i}.png"))).collect();
    write_lines(&manifest, &lines);
    let run = |extra: &[&str]| {
        let mut args = vec!["batch", s(&manifest)];
        args.extend_from_slice(extra);
        let o = impasto(&args);
        (o.status.code(), events(&o.stderr), describe(&args, &o))
    };
    let (code, ev, d) = run(&[]);
    assert_eq!(code, Some(0), "{d}");
    for (i, (content, _)) in PAIRS.iter().enumerate() {
        assert_eq!(event_of(&ev, i).first().map(String::as_str), Some("start"), "{d}");
        assert_eq!(event_of(&ev, i).last().map(String::as_str), Some("done"), "{d}");
        let out = dir.path().join(format!("out/{i}.png"));
        let recorded = Settings::read(&out).unwrap();
        assert_eq!(recorded.config.size, 40 + 8 * i);
        assert_eq!(recorded.content, std::fs::canonicalize(example(content)).unwrap());
    }
    assert_eq!(listing(&dir.path().join("out")), ["0.png", "1.png", "2.png"]);
    let (code, ev, d) = run(&[]);
    assert_eq!(code, Some(0), "{d}");
    assert!((0..3).all(|i| event_of(&ev, i) == ["skipped"]), "{d}");
    // Another style weight for item 1: only it runs.
    lines[1]["config"]["loss"] = json!({ "style_weight": 2.5e4 });
    write_lines(&manifest, &lines);
    let o = impasto(&["batch", s(&manifest), "--status"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3 items: 2 done, 1 stale, 0 failed, 0 missing");
    assert_eq!(o.status.code(), Some(1));
    let (code, ev, d) = run(&[]);
    assert_eq!(code, Some(0), "{d}");
    assert_eq!(event_of(&ev, 0), ["skipped"], "{d}");
    assert_eq!(event_of(&ev, 1).last().unwrap(), "done", "{d}");
    assert_eq!(event_of(&ev, 2), ["skipped"], "{d}");
    assert_eq!(Settings::read(&dir.path().join("out/1.png")).unwrap().config.loss.style_weight, 2.5e4);
    // Another device for every item: nothing is stale.
    let (code, ev, d) = run(&["--device", "cpu"]);
    assert_eq!(code, Some(0), "{d}");
    assert!((0..3).all(|i| event_of(&ev, i) == ["skipped"]), "{d}");
    let (_, ev, d) = run(&["--force", "--quiet"]);
    assert!(ev.is_empty(), "--quiet prints nothing: {d}");
    let o = impasto(&["batch", s(&manifest), "--status"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3 items: 3 done, 0 stale, 0 failed, 0 missing");
    // A sheet of the three.
    let sheet = dir.path().join("sheet.png");
    let o = impasto(&["batch", s(&manifest), "--sheet", s(&sheet)]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["--sheet"], &o));
    let img = impasto::image_io::load(&sheet).unwrap();
    assert_eq!((img.width, img.height), (2 * 256 + 3 * 6, 2 * 256 + 3 * 6));
}

/// One item per task: the index from `--index`, Kubernetes' `JOB_COMPLETION_INDEX`, Slurm's
/// `SLURM_ARRAY_TASK_ID` with `--offset`, or a shard; threads from `SLURM_CPUS_PER_TASK`.
#[test]
fn the_task_runs_the_item_its_scheduler_names() {
    real_weights_path();
    let dir = tempdir();
    let manifest = dir.path().join("m.jsonl");
    let lines: Vec<Value> = (0..5).map(|i| line(PAIRS[i % 3].0, PAIRS[i % 3].1, 32, 2, &format!("{i}.png"))).collect();
    write_lines(&manifest, &lines);
    let outputs = || -> Vec<String> { listing(dir.path()).into_iter().filter(|n| n.ends_with(".png")).collect() };
    let o = impasto_env(&["batch", s(&manifest)], &[("JOB_COMPLETION_INDEX", "3"), ("SLURM_CPUS_PER_TASK", "1")]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["batch"], &o));
    assert_eq!(outputs(), ["3.png"]);
    let ev = events(&o.stderr);
    assert_eq!(ev[0]["event"], "start");
    assert_eq!(ev[0]["threads"], 1, "SLURM_CPUS_PER_TASK bounds the threads");
    let o = impasto_env(&["batch", s(&manifest), "--offset", "2"], &[("SLURM_ARRAY_TASK_ID", "2")]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["batch"], &o));
    assert_eq!(outputs(), ["3.png", "4.png"]);
    assert_eq!(event_of(&events(&o.stderr), 4).last().unwrap(), "done");
    let o = impasto(&["batch", s(&manifest), "--shard", "0/2"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(outputs(), ["0.png", "2.png", "3.png", "4.png"]);
    assert_eq!(event_of(&events(&o.stderr), 4), ["skipped"]);
    let o = impasto_env(&["batch", s(&manifest)], &[("AWS_BATCH_JOB_ARRAY_INDEX", "5")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(crate::util::stderr(&o).contains("is 5, but"), "{}", crate::util::stderr(&o));
    let o = impasto(&["batch", s(&manifest), "--index", "1", "--list"]);
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(listed.starts_with("1\tmissing\t") && listed.contains("1.png"), "{listed}");
}

/// CSV manifests: the header's field paths set the settings; a grid's cross product is written
/// as a manifest in its documented order, paths relative to the manifest.
#[test]
fn csv_and_grid_manifests() {
    real_weights_path();
    let dir = tempdir();
    for name in ["tubingen.jpg", "shipwreck.jpg", "starry_night.jpg"] {
        std::fs::copy(example(name), dir.path().join(name)).unwrap();
    }
    let csv = dir.path().join("runs.csv");
    // A spreadsheet's byte-order mark and spaces in the header.
    std::fs::write(
        &csv,
        "\u{feff}content, style ,output,config.size,config.iterations,config.loss.style_weight,styles[0].blend\n\
         tubingen.jpg,starry_night.jpg,\"a, b.png\",36,2,5e3,\n\
         \n\
         shipwreck.jpg,starry_night.jpg,c.png,30,2,,1\n",
    )
    .unwrap();
    let o = impasto(&["batch", s(&csv)]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["batch"], &o));
    let a = Settings::read(&dir.path().join("a, b.png")).unwrap();
    assert_eq!((a.config.size, a.config.iterations, a.config.loss.style_weight), (36, 2, 5e3));
    let c = Settings::read(&dir.path().join("c.png")).unwrap();
    assert_eq!(c.config.loss.style_weight, impasto::LossConfig::default().style_weight);
    // An output with its write options (16 bits), in JSON Lines and in CSV.
    let deep = dir.path().join("deep.jsonl");
    let mut l = line("tubingen.jpg", "starry_night.jpg", 30, 2, "");
    l["output"] = json!({ "path": "deep.png", "sixteen_bit": true });
    write_lines(&deep, &[l]);
    let o = impasto(&["batch", s(&deep)]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["batch"], &o));
    assert!(Settings::read(&dir.path().join("deep.png")).unwrap().output.sixteen_bit);
    let deep_csv = dir.path().join("deep.csv");
    std::fs::write(
        &deep_csv,
        "content,style,output,output.sixteen_bit,config.size,config.iterations\ntubingen.jpg,shipwreck.jpg,deep2.png,true,30,2\n",
    )
    .unwrap();
    let o = impasto(&["batch", s(&deep_csv)]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["batch"], &o));
    assert!(Settings::read(&dir.path().join("deep2.png")).unwrap().output.sixteen_bit);

    let grid = dir.path().join("grid.jsonl");
    let o = impasto(&[
        "batch",
        "--contents",
        s(&dir.path().join("*.jpg")),
        "--styles",
        s(&dir.path().join("starry_night.jpg")),
        "-o",
        s(&dir.path().join("grid")),
        "--size",
        "32",
        "--iterations",
        "2",
        "--style-weight",
        "1e2,1e4",
        "--write-manifest",
        s(&grid),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["batch", "--contents"], &o));
    let text = std::fs::read_to_string(&grid).unwrap();
    let items: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let outputs: Vec<&str> = items.iter().map(|i| i["output"].as_str().unwrap()).collect();
    assert_eq!(
        outputs,
        [
            "grid/shipwreck--starry_night_style-weight-1e2.png",
            "grid/shipwreck--starry_night_style-weight-1e4.png",
            "grid/starry_night--starry_night_style-weight-1e2.png",
            "grid/starry_night--starry_night_style-weight-1e4.png",
            "grid/tubingen--starry_night_style-weight-1e2.png",
            "grid/tubingen--starry_night_style-weight-1e4.png",
        ]
    );
    assert_eq!(items[0]["content"], "shipwreck.jpg");
    assert_eq!(items[1]["config"]["loss"]["style_weight"], 1e4);
    // The manifest runs from its own directory wherever the command is run from.
    let o = Command::new(env!("CARGO_BIN_EXE_impasto"))
        .args(["batch", s(&grid), "--index", "5"])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["batch", "--index", "5"], &o));
    let recorded = Settings::read(&dir.path().join(outputs[5])).unwrap();
    assert_eq!(recorded.config.loss.style_weight, 1e4);
}

/// Two workers on one item at once (Kubernetes may start two pods for an index): one complete
/// output, no temporary file left.
#[test]
fn two_workers_on_one_item_leave_one_complete_output() {
    real_weights_path();
    let dir = tempdir();
    let manifest = dir.path().join("m.jsonl");
    write_lines(&manifest, &[line("tubingen.jpg", "starry_night.jpg", 48, 6, "out.png")]);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_impasto"))
            .args(["batch", s(&manifest), "--index", "0", "--quiet"])
            .env("RAYON_NUM_THREADS", "1")
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert_eq!(a.wait().unwrap().code(), Some(0));
    assert_eq!(b.wait().unwrap().code(), Some(0));
    assert_eq!(listing(dir.path()), ["m.jsonl", "out.png"]);
    let recorded = Settings::read(&dir.path().join("out.png")).unwrap();
    assert_eq!(recorded.config.size, 48);
    impasto::image_io::load(dir.path().join("out.png")).unwrap();
}

/// A signal stops the item without writing it (an absent output is rerun; a written one would
/// be taken as done) and exits 75, which a scheduler may retry.
#[test]
fn an_interrupted_item_writes_nothing_and_may_be_retried() {
    real_weights_path();
    let dir = tempdir();
    let manifest = dir.path().join("m.jsonl");
    write_lines(&manifest, &[line("tubingen.jpg", "starry_night.jpg", 96, 400, "out.png")]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_impasto"))
        .args(["batch", s(&manifest)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        assert!(stderr.read_line(&mut l).unwrap() > 0, "the batch ended before its first progress: {seen}");
        seen += &l;
        if l.contains("\"progress\"") {
            break;
        }
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(75), "{seen}{rest}");
    assert!(rest.contains("\"interrupted\""), "{rest}");
    assert_eq!(listing(dir.path()), ["m.jsonl"]);
}

/// Bad manifests: one line naming the line and the field, exit 2, nothing written, before any
/// work (the good items of the manifest do not run either).
#[test]
fn bad_manifests_are_refused_before_any_work() {
    let dir = tempdir();
    let good = line("tubingen.jpg", "starry_night.jpg", 32, 2, "good.png");
    let mut unknown = good.clone();
    unknown["config"]["sise"] = json!(3);
    unknown["output"] = json!("u.png");
    let mut missing = good.clone();
    missing["content"] = json!("nowhere.jpg");
    missing["output"] = json!("m.png");
    let mut no_output = good.clone();
    no_output.as_object_mut().unwrap().remove("output");
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown field", format!("{good}\n{unknown}\n"), "m.jsonl:2: config.sise: unknown field `sise`"),
        ("missing image", format!("{good}\n{missing}\n"), "m.jsonl:2: content: "),
        ("duplicate output", format!("{good}\n\n{good}\n"), "m.jsonl:3: output: "),
        ("no output", format!("{no_output}\n"), "m.jsonl:1: output: missing"),
        ("not an object", "[1]\n".into(), "m.jsonl:1: is not a JSON object"),
        ("empty", "\n\n".into(), "m.jsonl: has no items"),
        (
            "a 100 MB line",
            format!("{{\"content\": \"{}\"}}\n", "x".repeat(100 << 20)),
            "m.jsonl:1: line is longer than",
        ),
    ];
    for (what, text, expected) in &cases {
        let case = dir.path().join(what.replace(' ', "_"));
        std::fs::create_dir(&case).unwrap();
        let manifest = case.join("m.jsonl");
        std::fs::write(&manifest, text).unwrap();
        for extra in [&[][..], &["--check"][..]] {
            let mut args = vec!["batch", s(&manifest)];
            args.extend_from_slice(extra);
            let o = impasto(&args);
            let err = crate::util::stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{what}: {}", describe(&args, &o));
            assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
            assert!(err.contains(expected), "{what}: {err}");
            assert_eq!(listing(&case), ["m.jsonl"], "{what}: nothing written");
        }
    }
    // A binary file, and an index out of range.
    let binary = dir.path().join("bin.jsonl");
    let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&binary, bytes).unwrap();
    let o = impasto(&["batch", s(&binary)]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(crate::util::stderr(&o).lines().count(), 1, "{}", crate::util::stderr(&o));
    let one = dir.path().join("one.jsonl");
    write_lines(&one, &[good]);
    let o = impasto(&["batch", s(&one), "--index", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(crate::util::stderr(&o).contains("index is 1, but"), "{}", crate::util::stderr(&o));
    // A task's own item refused by its check: exit 2, and `--status` says why.
    let gone = dir.path().join("gone.jsonl");
    let mut l = line("tubingen.jpg", "starry_night.jpg", 32, 2, "gone.png");
    l["content"] = json!("gone.jpg");
    write_lines(&gone, &[l]);
    let o = impasto_env(&["batch", s(&gone)], &[("SLURM_ARRAY_TASK_ID", "0")]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&["batch"], &o));
    assert_eq!(events(&o.stderr)[0]["event"], "failed");
    let o = impasto(&["batch", s(&gone), "--status"]);
    let status = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(status.contains("gone.jpg: no such file") && status.contains("1 failed"), "{status}");
    // A grid's option with a manifest.
    let o = impasto(&["batch", s(&one), "--style-weight", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(crate::util::stderr(&o).contains("--style-weight is an option of a grid"), "{}", crate::util::stderr(&o));
}

/// `--emit k8s` is a `batch/v1` Indexed Job with what the API requires (read back by a YAML
/// parser), and `--emit slurm` an array over the items with the plan's resources.
#[test]
fn job_files_for_slurm_and_kubernetes() {
    real_weights_path();
    let dir = tempdir();
    let manifest = dir.path().join("shots.jsonl");
    let lines: Vec<Value> =
        (0..7).map(|i| line(PAIRS[i % 3].0, PAIRS[i % 3].1, 32 + i, 3, &format!("{i}.png"))).collect();
    write_lines(&manifest, &lines);
    let o = impasto(&["batch", s(&manifest), "--emit", "k8s", "--parallel", "3", "--cpus", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&["--emit", "k8s"], &o));
    let job = parse_yaml(&o.stdout);
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(
        name.len() <= 63 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{name}"
    );
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!((spec["completions"].as_u64(), spec["parallelism"].as_u64()), (Some(7), Some(3)));
    assert!(spec["backoffLimitPerIndex"].as_u64().is_some(), "FailIndex needs backoffLimitPerIndex");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never", "podFailurePolicy needs restartPolicy Never");
    let container = &pod["containers"][0];
    assert!(container["image"].is_string());
    assert_eq!(container["command"], json!(["impasto", "batch", "/work/shots.jsonl"]));
    let mib = |q: &Value| q.as_str().unwrap().strip_suffix("Mi").unwrap().parse::<u64>().unwrap();
    assert!(mib(&container["resources"]["limits"]["memory"]) > 256);
    assert_eq!(container["resources"]["requests"]["cpu"], "2");
    let rule = &spec["podFailurePolicy"]["rules"][0];
    assert_eq!(rule["action"], "FailIndex");
    assert_eq!(rule["onExitCodes"]["containerName"], container["name"]);
    assert_eq!(rule["onExitCodes"]["values"], json!([1, 2]));
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/work");
    assert_eq!(pod["volumes"][0]["name"], mount["name"]);
    assert!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"].is_string());

    let o = impasto(&["batch", s(&manifest), "--emit", "slurm", "--parallel", "2"]);
    let script = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    assert!(script.contains("#SBATCH --array=0-6%2\n"), "{script}");
    let mem: u64 = script.split("#SBATCH --mem=").nth(1).unwrap().split('M').next().unwrap().parse().unwrap();
    assert!(mem > 256, "{script}");
    assert!(script.contains("--time=") && script.contains(" batch ") && script.contains("shots.jsonl"), "{script}");
}

/// YAML as JSON, through Python's yaml module (Debian's python3-yaml, which `.ci/run` installs).
fn parse_yaml(text: &[u8]) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 to read the YAML");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text).unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "YAML that python3-yaml reads:\n{}", String::from_utf8_lossy(text));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A single-node Slurm ([`Cluster`]), stopped by its daemons' PIDs when dropped.
struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    /// `None` (with a message) without Slurm or root, unless `IMPASTO_REQUIRE_SLURM=1` (CI).
    fn start(dir: &Path) -> Option<Cluster> {
        let required = std::env::var_os("IMPASTO_REQUIRE_SLURM").is_some_and(|v| v == "1");
        let have = ["slurmctld", "slurmd", "sbatch", "munged"].iter().all(|p| {
            Command::new("sh").args(["-c", &format!("command -v {p}")]).output().is_ok_and(|o| o.status.success())
        });
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if !(have && root) {
            assert!(!required, "IMPASTO_REQUIRE_SLURM=1 but Slurm and munge are not installed, or this is not root");
            eprintln!("skipping: no Slurm here (apt-get install slurmctld slurmd slurm-client munge, as root)");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh");
        let o = Command::new("bash").arg(&script).args(["start", s(dir)]).output().unwrap();
        assert!(o.status.success(), "cluster.sh start: {}", String::from_utf8_lossy(&o.stderr));
        let conf = String::from_utf8_lossy(&o.stdout).trim().to_string();
        Some(Cluster { dir: dir.to_path_buf(), conf })
    }

    fn command(&self, program: &str, args: &[&str]) -> String {
        let o = Command::new(program).args(args).env("SLURM_CONF", &self.conf).output().unwrap();
        assert!(o.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Submits `script` and returns the job's id.
    fn submit(&self, script: &Path) -> String {
        self.command("sbatch", &["--parsable", s(script)]).trim().split(';').next().unwrap().to_string()
    }

    /// Waits until no task of `job` is pending or running.
    fn wait(&self, job: &str) {
        let start = Instant::now();
        while !self.command("squeue", &["-h", "-j", job]).trim().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(300), "job {job} still queued after 5 minutes");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh");
        let _ = Command::new("bash").arg(&script).args(["stop", s(&self.dir)]).status();
    }
}

/// A real Slurm: the generated sbatch script runs a 6-item array; cancelled part-way and
/// resubmitted, only the missing items run; one item's settings changed and resubmitted, only
/// that one runs (each told by the per-task logs).
#[test]
fn a_slurm_array_runs_resumes_and_reruns_only_what_changed() {
    real_weights_path();
    let dir = tempdir();
    let Some(cluster) = Cluster::start(&dir.path().join("slurm")) else { return };
    let manifest = dir.path().join("shots.jsonl");
    let mut lines: Vec<Value> =
        (0..6).map(|i| line(PAIRS[i % 3].0, PAIRS[i % 3].1, 64, 40, &format!("out/{i}.png"))).collect();
    write_lines(&manifest, &lines);
    let script = dir.path().join("job.sh");
    let emit = impasto(&["batch", s(&manifest), "--emit", "slurm", "--parallel", "1", "--cpus", "1"]);
    assert_eq!(emit.status.code(), Some(0), "{}", describe(&["--emit", "slurm"], &emit));
    std::fs::write(&script, &emit.stdout).unwrap();
    let logs = dir.path().join("logs");
    assert!(logs.is_dir(), "--emit slurm makes the directory Slurm writes the task logs to");
    let done = || -> Vec<usize> { (0..6).filter(|i| dir.path().join(format!("out/{i}.png")).exists()).collect() };
    let log_events = |job: &str, task: usize| -> Vec<String> {
        let text = std::fs::read_to_string(logs.join(format!("impasto-{job}_{task}.log"))).unwrap_or_default();
        let ev = events(text.as_bytes());
        event_of(&ev, task)
    };

    // Cancelled once two items are done.
    let first = cluster.submit(&script);
    let start = Instant::now();
    while done().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "two items not done after 5 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.command("scancel", &[&first]);
    cluster.wait(&first);
    let before = done();
    assert!(before.len() >= 2 && before.len() < 6, "cancelled part-way: {before:?}");
    for i in &before {
        let recorded = Settings::read(&dir.path().join(format!("out/{i}.png"))).unwrap();
        assert_eq!(recorded.config.iterations, 40, "a complete output");
    }
    let stamps = |items: &[usize]| -> Vec<std::time::SystemTime> {
        items
            .iter()
            .map(|i| std::fs::metadata(dir.path().join(format!("out/{i}.png"))).unwrap().modified().unwrap())
            .collect()
    };
    let before_stamps = stamps(&before);

    // Resubmitted: the rest run, the done ones are skipped.
    let second = cluster.submit(&script);
    cluster.wait(&second);
    assert_eq!(done(), (0..6).collect::<Vec<_>>());
    for i in 0..6 {
        let ev = log_events(&second, i);
        if before.contains(&i) {
            assert_eq!(ev, ["skipped"], "task {i} of the resubmitted array");
        } else {
            assert_eq!(ev.last().map(String::as_str), Some("done"), "task {i} of the resubmitted array: {ev:?}");
        }
    }
    assert_eq!(stamps(&before), before_stamps, "done outputs untouched");

    // Item 4's settings changed: only it runs.
    lines[4]["config"]["seed"] = json!(7);
    lines[4]["config"]["init"] = json!({ "noise": 0.5 });
    write_lines(&manifest, &lines);
    let third = cluster.submit(&script);
    cluster.wait(&third);
    for i in 0..6 {
        let ev = log_events(&third, i);
        let expected = if i == 4 { "done" } else { "skipped" };
        assert_eq!(ev.last().map(String::as_str), Some(expected), "task {i} after item 4 changed: {ev:?}");
    }
    assert_eq!(Settings::read(&dir.path().join("out/4.png")).unwrap().config.seed, 7);
    assert!(listing(&dir.path().join("out")).iter().all(|n| n.ends_with(".png")), "no leftovers");
    drop(cluster);
    assert!(!Path::new(&format!("{}/slurm/slurmctld.pid", s(dir.path()))).exists(), "the daemons are stopped");
}
