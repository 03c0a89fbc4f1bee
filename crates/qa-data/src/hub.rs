//! Models and datasets by Hugging Face Hub id, through the Hub's own cache: what
//! `from_pretrained("org/name")` and `load_dataset("org/name")` do, with the `hf-hub` crate.
//!
//! The cache is the one Python uses (`models--org--name/` and `datasets--org--name/`, each with
//! `refs/<revision>` holding a commit hash, `snapshots/<commit>/<file>` links into `blobs/`),
//! found as `huggingface_hub` finds it: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`. Online, only files missing from the snapshot of the repo's current
//! commit are downloaded; `HF_HUB_OFFLINE=1` reads the cache alone and names what is missing.
//! `HF_ENDPOINT` (a mirror) and `HF_TOKEN` (gated and private repos) are honoured.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::tokenizer::SENTENCEPIECE_FILES;

/// Where the cache is and how to reach the Hub, read once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// `HF_HOME`: the Hugging Face cache's root (`~/.cache/huggingface`).
    pub hf_home: PathBuf,
    /// The `hub` folder holding `models--*` and `datasets--*`.
    pub cache_dir: PathBuf,
    /// `HF_ENDPOINT`; `None` is `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// `HF_TOKEN`, else the token file `huggingface-cli login` wrote.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`, `HF_DATASETS_OFFLINE`) is true.
    pub offline: bool,
}

impl HubSettings {
    /// The settings `huggingface_hub` would use in this environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`HubSettings::from_env`] with the variables read by `var` (tests pass their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token_file = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("token"));

        let token = var("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(token_file)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        // huggingface_hub's `_is_true`.
        let is_true = |name: &str| {
            var(name)
                .is_some_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.to_uppercase().as_str()))
        };
        Self {
            hf_home: home,
            cache_dir,
            endpoint: var("HF_ENDPOINT").map(|e| e.trim_end_matches('/').to_string()),
            token,
            offline: is_true("HF_HUB_OFFLINE")
                || is_true("TRANSFORMERS_OFFLINE")
                || is_true("HF_DATASETS_OFFLINE"),
        }
    }
}

/// Which kind of Hub repository an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    fn hub_type(self) -> RepoType {
        match self {
            Self::Model => RepoType::Model,
            Self::Dataset => RepoType::Dataset,
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Dataset => "dataset",
        }
    }
}

/// A Hub repository at a revision (a branch, tag or commit hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub id: String,
    pub revision: String,
    pub kind: RepoKind,
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.noun(), self.id)?;
        if self.revision != DEFAULT_REVISION {
            write!(f, " (revision {})", self.revision)?;
        }
        Ok(())
    }
}

/// The revision used when none is given, as in transformers and datasets.
pub const DEFAULT_REVISION: &str = "main";

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{spec:?} is neither a local folder nor a Hugging Face Hub id (`name` or `org/name`)")]
    NotAnId { spec: String },
    #[error(
        "{repo} is not in the Hugging Face cache {} and offline mode (HF_HUB_OFFLINE=1) forbids \
         downloading it: run once online, or pass a local folder",
        cache.display()
    )]
    NotCached { repo: RepoRef, cache: PathBuf },
    #[error(
        "{repo}: the cached snapshot {} lacks {}; offline mode (HF_HUB_OFFLINE=1) forbids \
         downloading {}",
        snapshot.display(),
        missing.join(", "),
        if missing.len() == 1 { "it" } else { "them" }
    )]
    MissingOffline {
        repo: RepoRef,
        snapshot: PathBuf,
        missing: Vec<String>,
    },
    #[error("{repo} has no {what} (its files: {})", files.join(", "))]
    MissingInRepo {
        repo: RepoRef,
        what: String,
        files: Vec<String>,
    },
    #[error(
        "{repo}: cannot reach {endpoint}: {source}; with no network, set HF_HUB_OFFLINE=1 to use \
         the cache, or pass a local folder"
    )]
    Unreachable {
        repo: RepoRef,
        endpoint: String,
        #[source]
        source: Box<ApiError>,
    },
    #[error(
        "{repo}: {endpoint} answered HTTP {status}: {}",
        match status {
            401 | 403 => "gated or private: set HF_TOKEN to a token with access",
            404 => "no such repository or revision (or private: set HF_TOKEN)",
            _ => "the Hub refused the request",
        }
    )]
    Refused {
        repo: RepoRef,
        endpoint: String,
        status: u16,
    },
    #[error("{repo}: cannot download {file}: {source}")]
    Download {
        repo: RepoRef,
        file: String,
        #[source]
        source: Box<ApiError>,
    },
    #[error("{repo}: the cache at {} is unusable: {what}", cache.display())]
    Cache {
        repo: RepoRef,
        cache: PathBuf,
        what: String,
    },
    /// `refs/<revision>` is there but empty (or whitespace).
    #[error(
        "{repo}: {} is empty: it should hold the commit hash of the cached snapshot; the cache \
         is damaged: run once online, or pass a local folder",
        file.display()
    )]
    EmptyRef { repo: RepoRef, file: PathBuf },
    /// `refs/<revision>` holds something other than a 40-hex commit hash; `found` is its start,
    /// escaped.
    #[error(
        "{repo}: {} does not hold a commit hash (40 hex digits) but \"{found}\"; the cache is \
         damaged: run once online, or pass a local folder",
        file.display()
    )]
    BadRef {
        repo: RepoRef,
        file: PathBuf,
        found: String,
    },
    /// `refs/<revision>` names a commit whose `snapshots/<commit>` folder is absent.
    #[error(
        "{repo}: {} names commit {}, but there is no snapshot folder {}; the cache is \
         incomplete: run once online, or pass a local folder",
        file.display(),
        snapshot.file_name().unwrap_or_default().to_string_lossy(),
        snapshot.display()
    )]
    SnapshotMissing {
        repo: RepoRef,
        /// The ref file.
        file: PathBuf,
        /// `snapshots/<commit>`.
        snapshot: PathBuf,
    },
    /// A file or folder of the repo's cache folder that cannot be used: a link that loops or
    /// leads out of the repo's cache folder, a fifo, a folder where a file belongs.
    #[error("{repo}: the cached {} cannot be used: {what}", path.display())]
    BadCacheEntry {
        repo: RepoRef,
        path: PathBuf,
        what: String,
    },
    #[error(
        "dataset {repo} has several configurations ({}): pass --dataset-config-name",
        configs.join(", ")
    )]
    ConfigNeeded { repo: String, configs: Vec<String> },
    #[error(
        "dataset {repo} has no configuration {config:?} (it has: {})",
        configs.join(", ")
    )]
    NoSuchConfig {
        repo: String,
        config: String,
        configs: Vec<String>,
    },
}

pub type Result<T> = std::result::Result<T, HubError>;

/// The files of a model folder, by role. `config.json` is required, one weight file is, and one
/// tokenizer file the tokenizer loader reads; the rest are fetched when the repo has them.
const MODEL_CONFIG: &str = "config.json";
const MODEL_WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
const MODEL_TOKENIZERS: [&str; 2] = ["tokenizer.json", "vocab.txt"];
/// Besides these, the SentencePiece models of slow tokenizers
/// ([`crate::tokenizer::SENTENCEPIECE_FILES`]).
const MODEL_EXTRAS: [&str; 5] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
];

/// A model folder given as a local path or a Hub id: the path itself when it is a folder, else
/// the cache snapshot of the Hub repo `spec` at `revision` (downloading what is missing unless
/// offline).
pub fn resolve_model(
    spec: &str,
    revision: Option<&str>,
    settings: &HubSettings,
) -> Result<PathBuf> {
    let local = Path::new(spec);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    let repo = repo_ref(spec, revision, RepoKind::Model)?;
    let snapshot = Snapshot::open(&repo, settings, |files| model_files(&repo, files))?;
    Ok(snapshot.dir)
}

/// Which files of a model repo to have: the config, the first weight file present, and every
/// tokenizer file present; an error names what the repo lacks.
fn model_files(repo: &RepoRef, files: &BTreeSet<String>) -> Result<Vec<String>> {
    let lacks = |what: &str| HubError::MissingInRepo {
        repo: repo.clone(),
        what: what.to_string(),
        files: files.iter().cloned().collect(),
    };
    if !files.contains(MODEL_CONFIG) {
        return Err(lacks(MODEL_CONFIG));
    }
    let weights = MODEL_WEIGHTS
        .iter()
        .find(|w| files.contains(**w))
        .ok_or_else(|| lacks("model.safetensors or pytorch_model.bin"))?;
    if !MODEL_TOKENIZERS.iter().any(|t| files.contains(*t)) {
        // microsoft/deberta-v3-* ship only `spm.model`: say how to get the file we read.
        let convert = SENTENCEPIECE_FILES
            .iter()
            .find(|f| files.contains(**f))
            .map(|f| {
                format!(
                    " (it has only the SentencePiece model {f}: convert it once with \
                     transformers, `AutoTokenizer.from_pretrained(\"{}\").save_pretrained(DIR)`, \
                     and pass DIR)",
                    repo.id
                )
            })
            .unwrap_or_default();
        return Err(lacks(&format!("tokenizer.json or vocab.txt{convert}")));
    }
    let mut wanted = vec![MODEL_CONFIG.to_string(), weights.to_string()];
    wanted.extend(
        MODEL_TOKENIZERS
            .iter()
            .chain(&MODEL_EXTRAS)
            .chain(&SENTENCEPIECE_FILES)
            .filter(|f| files.contains(**f))
            .map(|f| f.to_string()),
    );
    Ok(wanted)
}

/// The dataset split names `datasets` recognises, with the file-name words that mean each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    /// The words `datasets`' default data-file patterns read as this split.
    fn words(self) -> &'static [&'static str] {
        match self {
            Self::Train => &["train", "training"],
            Self::Validation => &["validation", "valid", "dev", "val"],
            Self::Test => &["test", "testing", "eval", "evaluation"],
        }
    }
    /// Every split, in order.
    pub const ALL: [Split; 3] = [Self::Train, Self::Validation, Self::Test];
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.words()[0])
    }
}

/// A Hub dataset's data files, by split, in the cache.
#[derive(Debug, Clone)]
pub struct DatasetFiles {
    pub repo: RepoRef,
    /// The files of each split asked for that the dataset has.
    pub splits: BTreeMap<Split, Vec<PathBuf>>,
    /// Every split the dataset has.
    pub available: Vec<Split>,
}

impl DatasetFiles {
    /// The files of `split`; an error names the splits there are.
    pub fn split(&self, split: Split) -> std::result::Result<&[PathBuf], String> {
        self.splits.get(&split).map(Vec::as_slice).ok_or_else(|| {
            let have: Vec<String> = self.available.iter().map(Split::to_string).collect();
            format!(
                "{} has no {split} split (it has: {})",
                self.repo,
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )
        })
    }
}

/// The canonical datasets `run_qa.py` users name without an owner, as the Hub now files them.
const DATASET_ALIASES: [(&str, &str); 2] = [
    ("squad", "rajpurkar/squad"),
    ("squad_v2", "rajpurkar/squad_v2"),
];

/// The Hub id a dataset name means (`squad` is `rajpurkar/squad`).
pub fn dataset_id(name: &str) -> &str {
    DATASET_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, id)| id)
}

/// The data files of the `wanted` splits of Hub dataset `name` (an alias such as `squad`, or
/// `org/name`), configuration `config` (a folder of the repo; optional when it has one), as
/// `load_dataset` finds them: Parquet files (else JSON Lines, JSON or CSV) named or foldered by
/// split. Only the wanted splits' files are downloaded.
pub fn resolve_dataset(
    name: &str,
    config: Option<&str>,
    revision: Option<&str>,
    wanted: &[Split],
    settings: &HubSettings,
) -> Result<DatasetFiles> {
    let id = dataset_id(name);
    let repo = repo_ref(id, revision, RepoKind::Dataset)?;
    let mut chosen: BTreeMap<Split, Vec<String>> = BTreeMap::new();
    let mut available = Vec::new();
    let snapshot = Snapshot::open(&repo, settings, |files| {
        let all = split_files(id, files, config)?;
        available = all.keys().copied().collect();
        chosen = all
            .into_iter()
            .filter(|(s, _)| wanted.contains(s))
            .collect();
        Ok(chosen.values().flatten().cloned().collect())
    })?;
    let splits = chosen
        .into_iter()
        .map(|(split, files)| (split, files.iter().map(|f| snapshot.dir.join(f)).collect()))
        .collect();
    Ok(DatasetFiles {
        repo,
        splits,
        available,
    })
}

/// The data files of each split among a dataset repo's `files`, for configuration `config`.
/// Parquet wins over other formats when both are there (the Hub's own conversion is Parquet).
pub fn split_files(
    repo: &str,
    files: &BTreeSet<String>,
    config: Option<&str>,
) -> Result<BTreeMap<Split, Vec<String>>> {
    const FORMATS: [&[&str]; 2] = [&[".parquet"], &[".jsonl", ".json", ".csv"]];
    let data: Vec<&String> = FORMATS
        .iter()
        .map(|exts| {
            files
                .iter()
                .filter(|f| exts.iter().any(|e| f.ends_with(e)))
                .collect::<Vec<_>>()
        })
        .find(|found| !found.is_empty())
        .unwrap_or_default();
    // A configuration is a top folder that is not itself a split or the generic `data`.
    let config_of = |file: &str| {
        let (top, rest) = file.split_once('/')?;
        (top != "data" && split_of_word(top).is_none() && !rest.is_empty()).then(|| top.to_string())
    };
    let configs: BTreeSet<String> = data.iter().filter_map(|f| config_of(f)).collect();
    let config = match (config, configs.len()) {
        (Some(c), _) if configs.contains(c) => Some(c.to_string()),
        // `default` (and `plain_text` and the like) name the only configuration there is.
        (Some(_), 0) => None,
        (Some(c), _) => {
            return Err(HubError::NoSuchConfig {
                repo: repo.to_string(),
                config: c.to_string(),
                configs: configs.into_iter().collect(),
            })
        }
        (None, 0) => None,
        (None, 1) => configs.into_iter().next(),
        (None, _) => {
            return Err(HubError::ConfigNeeded {
                repo: repo.to_string(),
                configs: configs.into_iter().collect(),
            })
        }
    };
    let mut splits: BTreeMap<Split, Vec<String>> = BTreeMap::new();
    for file in data {
        if config_of(file) != config {
            continue;
        }
        if let Some(split) = split_of_path(file) {
            splits.entry(split).or_default().push(file.clone());
        }
    }
    Ok(splits)
}

/// The split a data file belongs to: the last path part (file name without extension, then its
/// folders) whose first word is a split word (`train-00000-of-00001.parquet`,
/// `plain_text/validation/0000.parquet`, `data/dev.json`).
pub(crate) fn split_of_path(file: &str) -> Option<Split> {
    let mut parts: Vec<&str> = file.split('/').collect();
    if let Some(name) = parts.last_mut() {
        *name = name.split_once('.').map_or(*name, |(stem, _)| stem);
    }
    parts.iter().rev().find_map(|part| {
        let word = part
            .split(|c: char| c == '-' || c == '_' || c == '.' || c == ' ' || c.is_ascii_digit())
            .next()
            .unwrap_or("");
        split_of_word(&word.to_lowercase())
    })
}

fn split_of_word(word: &str) -> Option<Split> {
    Split::ALL.into_iter().find(|s| s.words().contains(&word))
}

/// `spec` as a Hub repo id: `name` or `org/name`, of letters, digits, `-`, `_` and `.`.
fn repo_ref(spec: &str, revision: Option<&str>, kind: RepoKind) -> Result<RepoRef> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && !p.ends_with('.')
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let parts: Vec<&str> = spec.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) || spec.len() > 96 {
        return Err(HubError::NotAnId {
            spec: spec.to_string(),
        });
    }
    Ok(RepoRef {
        id: spec.to_string(),
        revision: revision.unwrap_or(DEFAULT_REVISION).to_string(),
        kind,
    })
}

/// A repo's snapshot folder in the cache, holding at least the files `wanted` picks from the
/// repo's file list.
struct Snapshot {
    dir: PathBuf,
}

impl Snapshot {
    fn open(
        repo: &RepoRef,
        settings: &HubSettings,
        wanted: impl FnOnce(&BTreeSet<String>) -> Result<Vec<String>>,
    ) -> Result<Self> {
        if settings.offline {
            return Self::cached(repo, settings, wanted);
        }
        let endpoint = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| "https://huggingface.co".to_string());
        let api = ApiBuilder::from_cache(Cache::new(settings.cache_dir.clone()))
            .with_endpoint(endpoint.clone())
            .with_token(settings.token.clone())
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .build()
            .map_err(|e| HubError::Unreachable {
                repo: repo.clone(),
                endpoint: endpoint.clone(),
                source: Box::new(e),
            })?;
        let api_repo = api.repo(Repo::with_revision(
            repo.id.clone(),
            repo.kind.hub_type(),
            repo.revision.clone(),
        ));
        let info = match api_repo.info() {
            Ok(info) => info,
            Err(e) => return Self::unreachable(repo, settings, wanted, &endpoint, e),
        };
        let files: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        let snapshots = snapshot_dir(settings, repo);
        let dir = snapshots.join(&info.sha);
        let folder = snapshots.parent().unwrap_or(&snapshots).to_path_buf();
        // Before the first download the repo's cache folder does not exist: all is missing.
        let root = std::fs::canonicalize(&folder).ok();
        for file in wanted(&files)? {
            let rel = Path::new("snapshots").join(&info.sha).join(&file);
            let found = match &root {
                Some(root) => RepoCache {
                    repo,
                    root,
                    folder: &folder,
                }
                .find(&rel)?,
                None => Found::Missing,
            };
            match found {
                Found::File => {}
                Found::Missing => {
                    download(&api_repo, repo, &file)?;
                }
                Found::Folder(_) | Found::Other => {
                    return Err(HubError::BadCacheEntry {
                        repo: repo.clone(),
                        path: dir.join(&file),
                        what: "it is not a regular file".to_string(),
                    })
                }
            }
        }
        Ok(Self { dir })
    }

    /// Offline: the snapshot `refs/<revision>` points at (or the folder named by a commit
    /// revision), with every wanted file present. Links are followed only inside the repo's
    /// cache folder (files) or the snapshot (folders), a bounded number of times.
    fn cached(
        repo: &RepoRef,
        settings: &HubSettings,
        wanted: impl FnOnce(&BTreeSet<String>) -> Result<Vec<String>>,
    ) -> Result<Self> {
        let snapshots = snapshot_dir(settings, repo);
        let folder = snapshots.parent().unwrap_or(&snapshots).to_path_buf();
        let not_cached = || HubError::NotCached {
            repo: repo.clone(),
            cache: settings.cache_dir.clone(),
        };
        let Ok(root) = std::fs::canonicalize(&folder) else {
            return Err(not_cached());
        };
        let cache = RepoCache {
            repo,
            root: &root,
            folder: &folder,
        };
        // A revision is one plain path part: `..` or `a/../..` never reach out of `refs/`.
        let single_part = |name: &str| {
            let mut parts = Path::new(name).components();
            matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(_)), None)
            ) && !name.contains('\\')
        };
        let plain_revision = Path::new(&repo.revision)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
            && !repo.revision.contains('\\');
        let ref_rel = Path::new("refs").join(&repo.revision);
        let from_ref = match plain_revision {
            true => cache.read_ref(&ref_rel)?,
            false => None,
        };
        let snapshot_rel = |commit: &str| Path::new("snapshots").join(commit);
        let commit = match from_ref {
            Some(commit) => {
                let rel = snapshot_rel(&commit);
                match cache.find(&rel)? {
                    Found::Folder(_) => commit,
                    Found::Missing => {
                        return Err(HubError::SnapshotMissing {
                            repo: repo.clone(),
                            file: folder.join(&ref_rel),
                            snapshot: folder.join(rel),
                        })
                    }
                    Found::File | Found::Other => {
                        return Err(cache.bad(&rel, "it is not a folder".to_string()))
                    }
                }
            }
            // No ref: the revision may be a commit hash with a snapshot folder of its own.
            None if single_part(&repo.revision) => {
                match cache.find(&snapshot_rel(&repo.revision))? {
                    Found::Folder(_) => repo.revision.clone(),
                    _ => return Err(not_cached()),
                }
            }
            None => return Err(not_cached()),
        };
        let dir = snapshots.join(&commit);
        let listing = cache
            .list(&snapshot_rel(&commit))
            .map_err(|what| HubError::Cache {
                repo: repo.clone(),
                cache: settings.cache_dir.clone(),
                what,
            })?;
        let files: BTreeSet<String> = listing.keys().cloned().collect();
        let wanted = wanted(&files).map_err(|e| match e {
            // The snapshot holds what was downloaded, not the whole repo: say what is missing.
            HubError::MissingInRepo { what, .. } => HubError::MissingOffline {
                repo: repo.clone(),
                snapshot: dir.clone(),
                missing: vec![what],
            },
            other => other,
        })?;
        let mut missing = Vec::new();
        for file in wanted {
            match listing.get(&file) {
                Some(None) => {}
                Some(Some(why)) => {
                    return Err(HubError::BadCacheEntry {
                        repo: repo.clone(),
                        path: dir.join(&file),
                        what: why.clone(),
                    })
                }
                None => missing.push(file),
            }
        }
        if !missing.is_empty() {
            return Err(HubError::MissingOffline {
                repo: repo.clone(),
                snapshot: dir,
                missing,
            });
        }
        Ok(Self { dir })
    }

    /// The Hub could not be asked: a refusal is an error; no connection falls back to the cache
    /// (as transformers does), and says so.
    fn unreachable(
        repo: &RepoRef,
        settings: &HubSettings,
        wanted: impl FnOnce(&BTreeSet<String>) -> Result<Vec<String>>,
        endpoint: &str,
        error: ApiError,
    ) -> Result<Self> {
        if let ApiError::RequestError(e) = &error {
            if let ureq::Error::Status(status, _) = e.as_ref() {
                return Err(HubError::Refused {
                    repo: repo.clone(),
                    endpoint: endpoint.to_string(),
                    status: *status,
                });
            }
        }
        match Self::cached(repo, settings, wanted) {
            Ok(found) => {
                tracing::warn!(
                    "{repo}: cannot reach {endpoint} ({error}); using the cached snapshot {}",
                    found.dir.display()
                );
                Ok(found)
            }
            Err(_) => Err(HubError::Unreachable {
                repo: repo.clone(),
                endpoint: endpoint.to_string(),
                source: Box::new(error),
            }),
        }
    }
}

fn download(api_repo: &ApiRepo, repo: &RepoRef, file: &str) -> Result<PathBuf> {
    tracing::info!("{repo}: downloading {file}");
    api_repo.download(file).map_err(|e| HubError::Download {
        repo: repo.clone(),
        file: file.to_string(),
        source: Box::new(e),
    })
}

/// `<cache>/<models|datasets>--org--name/snapshots`.
fn snapshot_dir(settings: &HubSettings, repo: &RepoRef) -> PathBuf {
    let folder = Repo::new(repo.id.clone(), repo.kind.hub_type()).folder_name();
    settings.cache_dir.join(folder).join("snapshots")
}

/// At most this many links are followed to reach one path, as Linux's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;
/// At most this many entries (files, folders, links) are looked at in one snapshot.
const MAX_ENTRIES: usize = 100_000;
/// At most this many bytes of a `refs/<revision>` file are read (a hash is 40).
const MAX_REF_BYTES: u64 = 4096;

/// What a path inside a repo's cache folder is, after following its links there.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    File,
    /// A folder, as its link-free path parts under the repo's cache folder.
    Folder(Vec<OsString>),
    Missing,
    /// A fifo, socket or device: never opened (reading a fifo would block).
    Other,
}

/// A repo's cache folder (`models--org--name/`), read without ever leaving it.
struct RepoCache<'a> {
    repo: &'a RepoRef,
    /// The folder, canonical (link-free).
    root: &'a Path,
    /// The folder as the settings name it, for messages.
    folder: &'a Path,
}

impl RepoCache<'_> {
    /// `rel` (a path under the folder) with its links followed, each one's target required to
    /// stay inside the folder, at most [`MAX_LINKS`] of them; the error names the bad link.
    fn resolve(&self, rel: &Path) -> std::result::Result<Found, String> {
        use std::path::Component;
        // Path parts still to walk, last first; `..` as its own part.
        fn push_parts(todo: &mut Vec<OsString>, path: &Path) {
            for part in path.components().rev() {
                match part {
                    Component::Normal(name) => todo.push(name.to_os_string()),
                    Component::ParentDir => todo.push(OsString::from("..")),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                }
            }
        }
        let shown = |at: &[OsString]| {
            let mut path = self.folder.to_path_buf();
            path.extend(at);
            path.display().to_string()
        };
        let mut todo = Vec::new();
        push_parts(&mut todo, rel);
        let mut at: Vec<OsString> = Vec::new();
        let mut links = 0;
        let mut last_link: Option<(String, PathBuf)> = None;
        let mut last_meta = None;
        while let Some(part) = todo.pop() {
            if part == ".." {
                if at.pop().is_none() {
                    return Err(match &last_link {
                        Some((link, target)) => self.escapes(link, target),
                        None => format!(
                            "{} leads outside the repo's cache folder",
                            self.folder.join(rel).display()
                        ),
                    });
                }
                last_meta = None;
                continue;
            }
            let mut here = self.root.to_path_buf();
            here.extend(&at);
            here.push(&part);
            let meta = match std::fs::symlink_metadata(&here) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
                Err(e) => {
                    at.push(part);
                    return Err(format!("{}: {e}", shown(&at)));
                }
            };
            if meta.file_type().is_symlink() {
                at.push(part);
                let link = shown(&at);
                at.pop();
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "the symbolic link {link} loops (more than {MAX_LINKS} links deep)"
                    ));
                }
                let target = std::fs::read_link(&here).map_err(|e| format!("{link}: {e}"))?;
                if target.is_absolute() {
                    // Absolute links count as inside when they name the folder by either path.
                    let inside = target
                        .strip_prefix(self.root)
                        .or_else(|_| target.strip_prefix(self.folder))
                        .map_err(|_| self.escapes(&link, &target))?;
                    at.clear();
                    push_parts(&mut todo, inside);
                } else {
                    push_parts(&mut todo, &target);
                }
                last_link = Some((link, target));
                last_meta = None;
            } else {
                if !todo.is_empty() && !meta.is_dir() {
                    // `file/more`: nothing is there.
                    return Ok(Found::Missing);
                }
                at.push(part);
                last_meta = Some(meta);
            }
        }
        let is_dir = match last_meta {
            Some(meta) if meta.is_file() => return Ok(Found::File),
            Some(meta) => meta.is_dir(),
            // Reached by `..` (or nothing at all): a folder the walk has been through.
            None => true,
        };
        Ok(if is_dir {
            Found::Folder(at)
        } else {
            Found::Other
        })
    }

    fn escapes(&self, link: &str, target: &Path) -> String {
        format!(
            "the symbolic link {link} points outside the repo's cache folder {} (to {})",
            self.folder.display(),
            target.display()
        )
    }

    /// A repo cache entry that cannot be used, as an error naming it.
    fn bad(&self, rel: &Path, what: String) -> HubError {
        HubError::BadCacheEntry {
            repo: self.repo.clone(),
            path: self.folder.join(rel),
            what,
        }
    }

    /// [`RepoCache::resolve`] with a bad link as an error naming `rel`.
    fn find(&self, rel: &Path) -> Result<Found> {
        self.resolve(rel).map_err(|what| self.bad(rel, what))
    }

    /// The commit hash `refs/<revision>` (`rel`) holds; `None` when there is no such ref.
    fn read_ref(&self, rel: &Path) -> Result<Option<String>> {
        match self.find(rel)? {
            Found::File => {}
            Found::Missing => return Ok(None),
            Found::Folder(_) | Found::Other => {
                return Err(self.bad(rel, "it is not a file".to_string()))
            }
        }
        let file = self.folder.join(rel);
        let mut bytes = Vec::new();
        std::fs::File::open(&file)
            .and_then(|f| f.take(MAX_REF_BYTES).read_to_end(&mut bytes))
            .map_err(|e| self.bad(rel, format!("cannot read it: {e}")))?;
        let text = bytes.trim_ascii();
        if text.is_empty() {
            return Err(HubError::EmptyRef {
                repo: self.repo.clone(),
                file,
            });
        }
        if text.len() != 40 || !text.iter().all(u8::is_ascii_hexdigit) {
            let mut found = text[..text.len().min(60)].escape_ascii().to_string();
            if text.len() > 60 {
                found.push('…');
            }
            return Err(HubError::BadRef {
                repo: self.repo.clone(),
                file,
                found,
            });
        }
        Ok(Some(String::from_utf8_lossy(text).into_owned()))
    }

    /// Every file of the snapshot folder `rel`, as repo paths (`/`-separated), each with why it
    /// cannot be used (`None` when it can). A file link must stay inside the repo's cache folder
    /// (snapshot files link into `blobs/`); a folder link must stay inside the snapshot and not
    /// lead back to a folder it is in (a loop): such folders are left out, with a warning.
    fn list(&self, rel: &Path) -> std::result::Result<BTreeMap<String, Option<String>>, String> {
        let snapshot = match self.resolve(rel)? {
            Found::Folder(parts) => parts,
            _ => {
                return Err(format!(
                    "{} is not a folder",
                    self.folder.join(rel).display()
                ))
            }
        };
        let mut out = BTreeMap::new();
        let mut entries = 0usize;
        // (repo path prefix, the folder's link-free parts, the link-free parts of the folders
        // it is in, itself included).
        let mut stack = vec![(String::new(), snapshot.clone(), vec![snapshot.clone()])];
        while let Some((prefix, parts, chain)) = stack.pop() {
            let mut real = self.root.to_path_buf();
            real.extend(&parts);
            let read = std::fs::read_dir(&real).map_err(|e| format!("{}: {e}", real.display()))?;
            for entry in read {
                let entry = entry.map_err(|e| format!("{}: {e}", real.display()))?;
                entries += 1;
                if entries > MAX_ENTRIES {
                    return Err(format!(
                        "{} holds more than {MAX_ENTRIES} entries (links included)",
                        self.folder.join(rel).display()
                    ));
                }
                let name = entry.file_name();
                let path = format!("{prefix}{}", name.to_string_lossy());
                let mut entry_rel: PathBuf = parts.iter().collect();
                entry_rel.push(&name);
                match self.resolve(&entry_rel) {
                    Ok(Found::File) => {
                        out.insert(path, None);
                    }
                    Ok(Found::Missing) => {} // A dangling link: the file is not there.
                    Ok(Found::Other) => {
                        out.insert(path, Some("it is not a regular file".to_string()));
                    }
                    Ok(Found::Folder(target)) => {
                        let skip = if !target.starts_with(&snapshot) {
                            Some("it is a link to a folder outside the snapshot")
                        } else if chain.contains(&target) {
                            Some("it is a link back to a folder it is in (a loop)")
                        } else {
                            None
                        };
                        match skip {
                            Some(why) => tracing::warn!(
                                "{}: {}/{path}: {why}; not followed",
                                self.repo,
                                self.folder.join(rel).display()
                            ),
                            None => {
                                let mut chain = chain.clone();
                                chain.push(target.clone());
                                stack.push((format!("{path}/"), target, chain));
                            }
                        }
                    }
                    Err(why) => {
                        out.insert(path, Some(why));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn settings_follow_huggingface_hub_precedence() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = HubSettings::from_vars(vars(&[("HOME", "/h")]));
        assert_eq!(s.cache_dir, Path::new("/h/.cache/huggingface/hub"));
        assert!(!s.offline && s.endpoint.is_none() && s.token.is_none());
        let s = HubSettings::from_vars(vars(&[
            ("HOME", "/h"),
            ("HF_HOME", "/hf"),
            ("HF_HUB_OFFLINE", "1"),
        ]));
        assert_eq!(s.cache_dir, Path::new("/hf/hub"));
        assert!(s.offline);
        let s = HubSettings::from_vars(vars(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/cache"),
            ("HF_ENDPOINT", "http://mirror:8080/"),
            ("HF_TOKEN", "hf_x"),
            ("TRANSFORMERS_OFFLINE", "yes"),
        ]));
        assert_eq!(s.cache_dir, Path::new("/cache"));
        assert_eq!(s.endpoint.as_deref(), Some("http://mirror:8080"));
        assert_eq!(s.token.as_deref(), Some("hf_x"));
        assert!(s.offline);
        let s = HubSettings::from_vars(vars(&[("HF_HOME", "/hf"), ("HF_HUB_OFFLINE", "0")]));
        assert!(!s.offline);
    }

    #[test]
    fn repo_ids_are_checked() {
        assert!(repo_ref("bert-base-uncased", None, RepoKind::Model).is_ok());
        assert_eq!(
            repo_ref("org/tiny", Some("v1"), RepoKind::Model)
                .unwrap()
                .revision,
            "v1"
        );
        for bad in [
            "",
            "a/b/c",
            "../x",
            "org/",
            "/abs/path",
            "has space",
            "a/..b",
        ] {
            assert!(
                matches!(
                    repo_ref(bad, None, RepoKind::Model),
                    Err(HubError::NotAnId { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn split_files_read_the_hub_layouts() {
        // rajpurkar/squad as the Hub has it.
        let squad = files(&[
            ".gitattributes",
            "README.md",
            "plain_text/train-00000-of-00001.parquet",
            "plain_text/validation-00000-of-00001.parquet",
        ]);
        let got = split_files("rajpurkar/squad", &squad, None).unwrap();
        assert_eq!(
            got[&Split::Train],
            ["plain_text/train-00000-of-00001.parquet"]
        );
        assert_eq!(
            got[&Split::Validation],
            ["plain_text/validation-00000-of-00001.parquet"]
        );
        assert_eq!(got.len(), 2);
        assert_eq!(split_files("r", &squad, Some("plain_text")).unwrap(), got);
        assert!(matches!(
            split_files("r", &squad, Some("other")),
            Err(HubError::NoSuchConfig { .. })
        ));
        // The parquet-converter layout, and generic data/ folders with shards.
        let converted = files(&[
            "default/train/0000.parquet",
            "default/train/0001.parquet",
            "default/test/0000.parquet",
        ]);
        let got = split_files("r", &converted, None).unwrap();
        assert_eq!(got[&Split::Train].len(), 2);
        assert_eq!(got[&Split::Test], ["default/test/0000.parquet"]);
        let generic = files(&[
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/dev.jsonl",
            "data/validation-00000-of-00001.parquet",
        ]);
        let got = split_files("r", &generic, Some("default")).unwrap();
        assert_eq!(got[&Split::Train].len(), 2);
        assert_eq!(
            got[&Split::Validation],
            ["data/validation-00000-of-00001.parquet"]
        );
        // JSON only when there is no Parquet.
        let json = files(&["train.json", "dev.json"]);
        let got = split_files("r", &json, None).unwrap();
        assert_eq!(got[&Split::Validation], ["dev.json"]);
        // Two configurations need a choice.
        let two = files(&["a/train.parquet", "b/train.parquet"]);
        assert!(matches!(
            split_files("r", &two, None),
            Err(HubError::ConfigNeeded { .. })
        ));
        assert_eq!(
            split_files("r", &two, Some("b")).unwrap()[&Split::Train],
            ["b/train.parquet"]
        );
    }

    #[test]
    fn model_files_name_what_a_repo_lacks() {
        let repo = repo_ref("org/m", None, RepoKind::Model).unwrap();
        let full = files(&[
            "config.json",
            "pytorch_model.bin",
            "model.safetensors",
            "vocab.txt",
            "README.md",
        ]);
        assert_eq!(
            model_files(&repo, &full).unwrap(),
            ["config.json", "model.safetensors", "vocab.txt"]
        );
        let no_weights = files(&["config.json", "tokenizer.json"]);
        let e = model_files(&repo, &no_weights).unwrap_err().to_string();
        assert!(e.contains("model.safetensors or pytorch_model.bin"), "{e}");
        // microsoft/deberta-v3-base's files: a SentencePiece model and no tokenizer.json.
        let deberta = files(&[
            "config.json",
            "pytorch_model.bin",
            "spm.model",
            "tokenizer_config.json",
        ]);
        let e = model_files(&repo, &deberta).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.json or vocab.txt")
                && e.contains("spm.model")
                && e.contains("AutoTokenizer.from_pretrained(\"org/m\").save_pretrained(DIR)"),
            "{e}"
        );
        // With tokenizer.json, the SentencePiece model and added tokens come along.
        let converted = files(&[
            "config.json",
            "model.safetensors",
            "spm.model",
            "tokenizer.json",
            "added_tokens.json",
        ]);
        assert_eq!(
            model_files(&repo, &converted).unwrap(),
            [
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "added_tokens.json",
                "spm.model"
            ]
        );
    }
}
