//! HF checkpoints in and out. The tensor names come from the modules themselves
//! ([`crate::hf_params`]): loading and saving are two visitors of the same walk, so the two can
//! never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand::{RngCore, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hf_params::{HfParams, Init, Leaf, NameScope, ParamVisitor};
use crate::model::QaModel;
use crate::weights::{write_safetensors, HostTensor, WeightFile};

/// What loading found: tensors the model did not use, and the ones it had to initialise.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadReport {
    pub weights: Option<PathBuf>,
    /// Checkpoint tensors the QA model has no place for (pooler, MLM head, buffers).
    pub unused: Vec<String>,
    /// Model tensors the checkpoint lacks, freshly initialised (normally only `qa_outputs.*`).
    pub initialized: Vec<String>,
}

struct Loader<'a, B: Backend> {
    file: Option<&'a WeightFile>,
    config: &'a ModelConfig,
    /// The encoder's prefix, which base-model checkpoints leave out of their names.
    prefix: &'static str,
    device: B::Device,
    rng: rand::rngs::StdRng,
    scope: NameScope,
    used: BTreeSet<String>,
    initialized: Vec<String>,
}

impl<B: Backend> Loader<'_, B> {
    /// Finds `leaf` of the current scope in the file: under its full HF name, without the
    /// encoder prefix (base checkpoints), then under its legacy spelling. Returns the name found.
    fn find(&self, leaf: &Leaf) -> Option<(String, &HostTensor)> {
        let file = self.file?;
        let mut candidates = Vec::new();
        for spelling in std::iter::once(leaf.name).chain(leaf.legacy_name) {
            let full = self.scope.full_name(spelling);
            let bare = full
                .strip_prefix(&format!("{}.", self.prefix))
                .map(str::to_string);
            candidates.push(full);
            candidates.extend(bare);
        }
        candidates
            .into_iter()
            .find_map(|c| file.tensors.get(&c).map(|t| (c, t)))
    }

    /// The tensor's values in the PyTorch layout `shape`, from the file or freshly initialised.
    fn fetch(&mut self, leaf: &Leaf, shape: &[usize]) -> Result<Vec<f32>> {
        let name = self.scope.full_name(leaf.name);
        if let Some((found, tensor)) = self.find(leaf) {
            if tensor.shape != shape {
                return Err(ModelError::Shape {
                    path: self.file.map(|f| f.path.clone()).unwrap_or_default(),
                    name: found,
                    expected: shape.to_vec(),
                    found: tensor.shape.clone(),
                });
            }
            if tensor.data.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::NonFinite {
                    path: self.file.map(|f| f.path.clone()).unwrap_or_default(),
                    name: found,
                });
            }
            let data = tensor.data.clone();
            self.used.insert(found);
            return Ok(data);
        }
        // A base encoder has no task head: start it fresh, as HF does. Anything else missing
        // from a given checkpoint means the wrong file or architecture.
        if let Some(file) = self.file {
            if self.scope.root() == Some(self.prefix) {
                return Err(ModelError::Missing {
                    path: file.path.clone(),
                    name,
                });
            }
        }
        self.initialized.push(name);
        Ok(self.initial(shape, leaf.init))
    }

    fn initial(&mut self, shape: &[usize], init: Init) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal { zero_row } => {
                let normal = Normal::new(0.0, self.config.initializer_range as f32)
                    .expect("valid standard deviation");
                // In parallel streams: one thread drawing BERT-base's 110M values took over a
                // second before the first step.
                let mut data = vec![0f32; n];
                crate::streams::fill_chunks(&mut data, self.rng.next_u64(), |chunk, rng| {
                    chunk.fill_with(|| normal.sample(rng))
                });
                if let (Some(row), [rows, cols]) = (zero_row, shape) {
                    if row < *rows {
                        data[row * cols..(row + 1) * cols].fill(0.0);
                    }
                }
                data
            }
            Init::Sinusoidal => {
                let (rows, dim) = (shape[0], shape[1]);
                let mut data = vec![0.0; n];
                for pos in 0..rows {
                    for j in 0..dim {
                        let angle = pos as f64 / 10000f64.powf(2.0 * (j / 2) as f64 / dim as f64);
                        data[pos * dim + j] =
                            if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
                    }
                }
                data
            }
        }
    }
}

impl<B: Backend> ParamVisitor<B> for Loader<'_, B> {
    fn name_scope(&mut self) -> &mut NameScope {
        &mut self.scope
    }

    fn param<const D: usize>(&mut self, leaf: Leaf, param: &mut Param<Tensor<B, D>>) -> Result<()> {
        let dims = param.dims();
        let shape = leaf.layout.torch_shape(&dims);
        let data = self.fetch(&leaf, &shape)?;
        let host = leaf.layout.convert(HostTensor::new(shape, data));
        *param = Param::from_tensor(crate::fused::tensor_from_vec(host.data, dims, &self.device));
        Ok(())
    }
}

/// Builds a model from a config and, optionally, a weight file (any tensor missing from a given
/// file is an error, except a fresh QA head). Without a file every tensor is initialised as HF
/// does, from `seed`.
/// Refuses a config whose f32 parameters alone exceed the machine's memory (an absurd config
/// would otherwise run out of memory while building, or abort). Where the memory size cannot
/// be read, nothing is refused.
fn check_fits_in_memory(config: &ModelConfig) -> Result<()> {
    const GIB: f64 = (1u64 << 30) as f64;
    let parameters = config.parameter_count();
    let bytes = parameters.saturating_mul(4);
    let Some(memory) = total_memory_bytes() else {
        return Ok(());
    };
    if bytes > u128::from(memory) {
        return Err(ModelError::TooLarge {
            parameters,
            gib: bytes as f64 / GIB,
            memory_gib: memory as f64 / GIB,
        });
    }
    Ok(())
}

/// The machine's memory (Linux `MemTotal`), if it can be read.
fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

pub fn build_model<B: Backend>(
    config: &ModelConfig,
    weights: Option<&WeightFile>,
    seed: u64,
    device: &B::Device,
) -> Result<(QaModel<B>, LoadReport)> {
    check_fits_in_memory(config)?;
    let mut model = QaModel::skeleton(config, device);
    let mut loader = Loader::<B> {
        file: weights,
        config,
        prefix: config.architecture.prefix(),
        device: device.clone(),
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        scope: NameScope::default(),
        used: BTreeSet::new(),
        initialized: Vec::new(),
    };
    model.visit_params(&mut loader)?;
    let unused = weights
        .map(|f| {
            f.tensors
                .keys()
                .filter(|k| !loader.used.contains(*k))
                .chain(&f.skipped)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Ok((
        model,
        LoadReport {
            weights: weights.map(|f| f.path.clone()),
            unused,
            initialized: loader.initialized,
        },
    ))
}

/// The weight file of an HF model folder: `model.safetensors`, else `pytorch_model.bin`.
pub fn find_weights(dir: &Path) -> Result<PathBuf> {
    ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| ModelError::Checkpoint {
            path: dir.to_path_buf(),
            what: "no model.safetensors or pytorch_model.bin in this folder".into(),
        })
}

/// Loads an HF model folder (or a config + explicit weight file) for question answering.
/// `weights` overrides the file picked in `dir`; `seed` initialises a missing QA head.
pub fn load_pretrained<B: Backend>(
    dir: &Path,
    weights: Option<&Path>,
    seed: u64,
    device: &B::Device,
) -> Result<(QaModel<B>, ModelConfig, LoadReport)> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let path = match weights {
        Some(p) => p.to_path_buf(),
        None => find_weights(dir)?,
    };
    let file = WeightFile::read(&path)?;
    let (model, report) = build_model(&config, Some(&file), seed, device)?;
    if !report.initialized.is_empty() {
        tracing::info!(
            "{}: newly initialised (not in the checkpoint): {}",
            path.display(),
            report.initialized.join(", ")
        );
    }
    if !report.unused.is_empty() {
        tracing::info!(
            "{}: {} checkpoint tensors unused by a QA model (e.g. {})",
            path.display(),
            report.unused.len(),
            report
                .unused
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok((model, config, report))
}

/// Reads every parameter into `tensors` under its full HF name, in the PyTorch layout.
struct Exporter {
    scope: NameScope,
    tensors: BTreeMap<String, HostTensor>,
}

impl<B: Backend> ParamVisitor<B> for Exporter {
    fn name_scope(&mut self) -> &mut NameScope {
        &mut self.scope
    }

    fn param<const D: usize>(&mut self, leaf: Leaf, param: &mut Param<Tensor<B, D>>) -> Result<()> {
        let t = param.val();
        let data = t
            .to_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("float tensor converts to f32");
        let host = leaf
            .layout
            .convert(HostTensor::new(t.dims().to_vec(), data));
        self.tensors.insert(self.scope.full_name(leaf.name), host);
        Ok(())
    }
}

/// The model's tensors under their HF names (`bert.…` / `distilbert.…`, `qa_outputs.…`);
/// `config` must be the one the model was built from.
pub fn export_tensors<B: Backend>(
    model: &QaModel<B>,
    config: &ModelConfig,
) -> BTreeMap<String, HostTensor> {
    debug_assert_eq!(model.encoder.architecture(), config.architecture);
    let mut exporter = Exporter {
        scope: NameScope::default(),
        tensors: BTreeMap::new(),
    };
    // The walk takes `&mut` (loading replaces parameters); a clone shares the tensors.
    model
        .clone()
        .visit_params(&mut exporter)
        .expect("export never fails");
    exporter.tensors
}

/// Tokenizer files copied next to saved weights when present in the source folder: the fast
/// tokenizer, its settings, and the slow tokenizers' vocabularies (WordPiece `vocab.txt`,
/// RoBERTa's byte-level BPE `vocab.json` + `merges.txt`, DeBERTa's `added_tokens.json`), and
/// the SentencePiece models ([`qa_data::tokenizer::SENTENCEPIECE_FILES`]).
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
];

/// Saves an HF model folder: `config.json` (with `architectures`), `model.safetensors` under HF
/// names, and the tokenizer files of `tokenizer_dir`. `transformers` loads it unchanged.
pub fn save_pretrained<B: Backend>(
    model: &QaModel<B>,
    config: &ModelConfig,
    dir: &Path,
    tokenizer_dir: Option<&Path>,
) -> Result<()> {
    let weights_path = dir.join("model.safetensors");
    // An int8/bf16 model has handed its f32 linear weights over to the prepared table.
    if model.precision() != crate::InferencePrecision::F32 {
        return Err(ModelError::LowPrecisionSave {
            path: weights_path,
            precision: model.precision(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors = export_tensors(model, config);
    // A NaN model would answer garbage without a word: never write one.
    if let Some((name, _)) = tensors
        .iter()
        .find(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
    {
        return Err(ModelError::NonFinite {
            path: weights_path,
            name: name.clone(),
        });
    }
    write_safetensors(&weights_path, &tensors)?;
    let config_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config.to_hf_json()).expect("JSON value serializes");
    qa_data::atomic::write_atomically(&config_path, |out| {
        std::io::Write::write_all(out, (text + "\n").as_bytes())
    })?;
    if let Some(src) = tokenizer_dir {
        if src != dir {
            let sentencepiece = qa_data::tokenizer::SENTENCEPIECE_FILES.iter();
            for name in TOKENIZER_FILES.iter().chain(sentencepiece) {
                let from = src.join(name);
                if from.is_file() {
                    std::fs::copy(&from, dir.join(name)).map_err(|e| ModelError::io(&from, e))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{default_device, Compute};

    fn tiny(name: &str) -> (ModelConfig, WeightFile) {
        let dir = qa_testkit::shared_dir().join("golden").join(name);
        let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let file = WeightFile::read(&dir.join("model.safetensors")).unwrap();
        (config, file)
    }

    #[test]
    fn base_checkpoints_and_legacy_layer_norm_names_load() {
        for name in ["tiny-bert-qa", "tiny-distilbert-qa"] {
            let (config, file) = tiny(name);
            let prefix = format!("{}.", config.architecture.prefix());
            // As a base checkpoint from the TensorFlow era would spell it: no encoder prefix,
            // LayerNorm `gamma`/`beta`.
            let mut legacy = file.clone();
            legacy.tensors = file
                .tensors
                .iter()
                .map(|(key, tensor)| {
                    let key = key.strip_prefix(&prefix).unwrap_or(key);
                    let key = match key.rsplit_once('.') {
                        Some((module, "weight")) if module.ends_with("LayerNorm") => {
                            format!("{module}.gamma")
                        }
                        Some((module, "bias")) if module.ends_with("LayerNorm") => {
                            format!("{module}.beta")
                        }
                        _ => key.to_string(),
                    };
                    (key, tensor.clone())
                })
                .collect();
            assert_ne!(
                legacy.tensors.keys().collect::<Vec<_>>(),
                file.tensors.keys().collect::<Vec<_>>()
            );
            let device = default_device();
            let (model, report) =
                build_model::<Compute>(&config, Some(&legacy), 0, &device).unwrap();
            assert!(
                report.initialized.is_empty(),
                "{name}: {:?}",
                report.initialized
            );
            assert!(report.unused.is_empty(), "{name}: {:?}", report.unused);
            assert_eq!(export_tensors(&model, &config), file.tensors, "{name}");
        }
    }

    #[test]
    fn fresh_models_follow_hfs_initialisation() {
        let mut config = ModelConfig::distilbert(12, 8, 1, 2, 16);
        config.pad_token_id = 3;
        config.sinusoidal_positions = true;
        let (model, report) = build_model::<Compute>(&config, None, 5, &default_device()).unwrap();
        let tensors = export_tensors(&model, &config);
        assert_eq!(report.initialized.len(), tensors.len());
        let word = &tensors["distilbert.embeddings.word_embeddings.weight"];
        assert!(word.data[3 * 8..4 * 8].iter().all(|&v| v == 0.0));
        assert!(word.data[..3 * 8].iter().all(|&v| v != 0.0));
        let position = &tensors["distilbert.embeddings.position_embeddings.weight"];
        // Row 1: sin(1), cos(1), sin(1/10000^(2/8)), ...
        assert!((position.data[8] - 1f32.sin()).abs() < 1e-6);
        assert!((position.data[9] - 1f32.cos()).abs() < 1e-6);
        let norm = &tensors["distilbert.transformer.layer.0.sa_layer_norm.weight"];
        assert!(norm.data.iter().all(|&v| v == 1.0));
        let bias = &tensors["distilbert.transformer.layer.0.ffn.lin1.bias"];
        assert!(bias.data.iter().all(|&v| v == 0.0));
        // PyTorch layout: `[out, in]`.
        assert_eq!(
            tensors["distilbert.transformer.layer.0.ffn.lin1.weight"].shape,
            [16, 8]
        );
    }
}
