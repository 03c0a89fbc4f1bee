//! HF checkpoints in and out. [`walk`] is the single table of tensor names: loading and saving
//! both go through it, so the two can never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::model::QaModel;
use crate::weights::{write_safetensors, HostTensor, WeightFile};

/// How a tensor is initialised when the checkpoint does not have it.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// N(0, initializer_range); `zero_row` is the padding row of an embedding.
    Normal {
        zero_row: Option<usize>,
    },
    Zeros,
    Ones,
    /// DistilBERT's fixed sinusoidal position table.
    Sinusoidal,
}

/// What the walk does at each parameter: fill it (loading) or read it (saving).
trait Visitor<B: Backend> {
    /// `shape` is the HF (PyTorch) shape; `transpose` says Burn stores the transpose.
    fn visit(
        &mut self,
        name: &str,
        param: &mut Param<Tensor<B, 2>>,
        shape: [usize; 2],
        transpose: bool,
        init: Init,
    ) -> Result<()>;
    fn visit_1d(&mut self, name: &str, param: &mut Param<Tensor<B, 1>>, init: Init) -> Result<()>;
}

fn walk_linear<B: Backend, V: Visitor<B>>(v: &mut V, name: &str, l: &mut Linear<B>) -> Result<()> {
    let [d_in, d_out] = l.weight.dims();
    v.visit(
        &format!("{name}.weight"),
        &mut l.weight,
        [d_out, d_in],
        true,
        Init::Normal { zero_row: None },
    )?;
    if let Some(bias) = &mut l.bias {
        v.visit_1d(&format!("{name}.bias"), bias, Init::Zeros)?;
    }
    Ok(())
}

fn walk_norm<B: Backend, V: Visitor<B>>(v: &mut V, name: &str, n: &mut LayerNorm<B>) -> Result<()> {
    v.visit_1d(&format!("{name}.weight"), &mut n.gamma, Init::Ones)?;
    if let Some(beta) = &mut n.beta {
        v.visit_1d(&format!("{name}.bias"), beta, Init::Zeros)?;
    }
    Ok(())
}

fn walk_embedding<B: Backend, V: Visitor<B>>(
    v: &mut V,
    name: &str,
    e: &mut Embedding<B>,
    init: Init,
) -> Result<()> {
    let shape = e.weight.dims();
    v.visit(&format!("{name}.weight"), &mut e.weight, shape, false, init)
}

/// Every parameter of the model with its HF name (encoder names without the `bert.` /
/// `distilbert.` prefix; the head is `qa_outputs.*`).
fn walk<B: Backend, V: Visitor<B>>(
    model: &mut QaModel<B>,
    config: &ModelConfig,
    v: &mut V,
) -> Result<()> {
    let e = &mut model.embeddings;
    walk_embedding(
        v,
        "embeddings.word_embeddings",
        &mut e.word,
        Init::Normal {
            zero_row: Some(config.pad_token_id),
        },
    )?;
    let position_init = if config.sinusoidal_positions {
        Init::Sinusoidal
    } else {
        Init::Normal { zero_row: None }
    };
    walk_embedding(
        v,
        "embeddings.position_embeddings",
        &mut e.position,
        position_init,
    )?;
    if let Some(tt) = &mut e.token_type {
        walk_embedding(
            v,
            "embeddings.token_type_embeddings",
            tt,
            Init::Normal { zero_row: None },
        )?;
    }
    walk_norm(v, "embeddings.LayerNorm", &mut e.norm)?;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        match config.architecture {
            Architecture::Bert => {
                let p = format!("encoder.layer.{i}");
                walk_linear(v, &format!("{p}.attention.self.query"), &mut layer.query)?;
                walk_linear(v, &format!("{p}.attention.self.key"), &mut layer.key)?;
                walk_linear(v, &format!("{p}.attention.self.value"), &mut layer.value)?;
                walk_linear(
                    v,
                    &format!("{p}.attention.output.dense"),
                    &mut layer.attention_output,
                )?;
                walk_norm(
                    v,
                    &format!("{p}.attention.output.LayerNorm"),
                    &mut layer.attention_norm,
                )?;
                walk_linear(
                    v,
                    &format!("{p}.intermediate.dense"),
                    &mut layer.intermediate,
                )?;
                walk_linear(v, &format!("{p}.output.dense"), &mut layer.output)?;
                walk_norm(v, &format!("{p}.output.LayerNorm"), &mut layer.output_norm)?;
            }
            Architecture::DistilBert => {
                let p = format!("transformer.layer.{i}");
                walk_linear(v, &format!("{p}.attention.q_lin"), &mut layer.query)?;
                walk_linear(v, &format!("{p}.attention.k_lin"), &mut layer.key)?;
                walk_linear(v, &format!("{p}.attention.v_lin"), &mut layer.value)?;
                walk_linear(
                    v,
                    &format!("{p}.attention.out_lin"),
                    &mut layer.attention_output,
                )?;
                walk_norm(v, &format!("{p}.sa_layer_norm"), &mut layer.attention_norm)?;
                walk_linear(v, &format!("{p}.ffn.lin1"), &mut layer.intermediate)?;
                walk_linear(v, &format!("{p}.ffn.lin2"), &mut layer.output)?;
                walk_norm(v, &format!("{p}.output_layer_norm"), &mut layer.output_norm)?;
            }
        }
    }
    walk_linear(v, "qa_outputs", &mut model.qa_outputs)
}

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
    prefix: &'static str,
    device: B::Device,
    rng: rand::rngs::StdRng,
    used: BTreeSet<String>,
    initialized: Vec<String>,
}

impl<B: Backend> Loader<'_, B> {
    /// Finds a tensor under its HF name, with or without the model prefix, accepting the old
    /// `LayerNorm.gamma/beta` spellings. Returns the name found.
    fn find(&self, name: &str) -> Option<(String, &HostTensor)> {
        let file = self.file?;
        let mut candidates = vec![format!("{}.{name}", self.prefix), name.to_string()];
        for (new, old) in [(".weight", ".gamma"), (".bias", ".beta")] {
            if name.contains("LayerNorm") || name.contains("layer_norm") {
                if let Some(stem) = name.strip_suffix(new) {
                    candidates.push(format!("{}.{stem}{old}", self.prefix));
                    candidates.push(format!("{stem}{old}"));
                }
            }
        }
        candidates
            .into_iter()
            .find_map(|c| file.tensors.get(&c).map(|t| (c, t)))
    }

    fn fetch(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        if let Some((found, tensor)) = self.find(name) {
            if tensor.shape != shape {
                return Err(ModelError::Shape {
                    path: self.file.map(|f| f.path.clone()).unwrap_or_default(),
                    name: found,
                    expected: shape.to_vec(),
                    found: tensor.shape.clone(),
                });
            }
            let data = tensor.data.clone();
            self.used.insert(found);
            return Ok(data);
        }
        // A base encoder has no QA head: start it fresh, as HF does. Anything else missing
        // from a given checkpoint means the wrong file or architecture.
        if let Some(file) = self.file {
            if !name.starts_with("qa_outputs.") {
                return Err(ModelError::Missing {
                    path: file.path.clone(),
                    name: format!("{}.{name}", self.prefix),
                });
            }
        }
        self.initialized.push(name.to_string());
        Ok(self.initial(shape, init))
    }

    fn initial(&mut self, shape: &[usize], init: Init) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal { zero_row } => {
                let normal = Normal::new(0.0, self.config.initializer_range as f32)
                    .expect("valid standard deviation");
                let mut data: Vec<f32> = (0..n).map(|_| normal.sample(&mut self.rng)).collect();
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

impl<B: Backend> Visitor<B> for Loader<'_, B> {
    fn visit(
        &mut self,
        name: &str,
        param: &mut Param<Tensor<B, 2>>,
        shape: [usize; 2],
        transpose: bool,
        init: Init,
    ) -> Result<()> {
        let data = self.fetch(name, &shape, init)?;
        let host = HostTensor::new(shape.to_vec(), data);
        let host = if transpose { host.transposed() } else { host };
        let dims = [host.shape[0], host.shape[1]];
        *param = Param::from_tensor(Tensor::from_data(
            TensorData::new(host.data, dims),
            &self.device,
        ));
        Ok(())
    }

    fn visit_1d(&mut self, name: &str, param: &mut Param<Tensor<B, 1>>, init: Init) -> Result<()> {
        let shape = param.dims();
        let data = self.fetch(name, &shape, init)?;
        *param = Param::from_tensor(Tensor::from_data(
            TensorData::new(data, shape),
            &self.device,
        ));
        Ok(())
    }
}

/// Builds a model from a config and, optionally, a weight file (any tensor missing from a given
/// file is an error, except a fresh QA head). Without a file every tensor is initialised as HF
/// does, from `seed`.
pub fn build_model<B: Backend>(
    config: &ModelConfig,
    weights: Option<&WeightFile>,
    seed: u64,
    device: &B::Device,
) -> Result<(QaModel<B>, LoadReport)> {
    let mut model = QaModel::skeleton(config, device);
    let mut loader = Loader::<B> {
        file: weights,
        config,
        prefix: config.architecture.prefix(),
        device: device.clone(),
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        used: BTreeSet::new(),
        initialized: Vec::new(),
    };
    walk(&mut model, config, &mut loader)?;
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

struct Exporter {
    prefix: &'static str,
    tensors: BTreeMap<String, HostTensor>,
}

impl Exporter {
    fn key(&self, name: &str) -> String {
        if name.starts_with("qa_outputs.") {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}

fn host_data<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float tensor converts to f32")
}

impl<B: Backend> Visitor<B> for Exporter {
    fn visit(
        &mut self,
        name: &str,
        param: &mut Param<Tensor<B, 2>>,
        shape: [usize; 2],
        transpose: bool,
        _init: Init,
    ) -> Result<()> {
        let t = param.val();
        let [r, c] = t.dims();
        let host = HostTensor::new(vec![r, c], host_data(&t));
        let host = if transpose { host.transposed() } else { host };
        debug_assert_eq!(host.shape, shape.to_vec());
        self.tensors.insert(self.key(name), host);
        Ok(())
    }

    fn visit_1d(&mut self, name: &str, param: &mut Param<Tensor<B, 1>>, _init: Init) -> Result<()> {
        let t = param.val();
        self.tensors.insert(
            self.key(name),
            HostTensor::new(t.dims().to_vec(), host_data(&t)),
        );
        Ok(())
    }
}

/// The model's tensors under their HF names (`bert.…` / `distilbert.…`, `qa_outputs.…`).
pub fn export_tensors<B: Backend>(
    model: &QaModel<B>,
    config: &ModelConfig,
) -> BTreeMap<String, HostTensor> {
    let mut exporter = Exporter {
        prefix: config.architecture.prefix(),
        tensors: BTreeMap::new(),
    };
    let mut model = model.clone();
    walk(&mut model, config, &mut exporter).expect("export never fails");
    exporter.tensors
}

/// Tokenizer files copied next to saved weights when present in the source folder.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
];

/// Saves an HF model folder: `config.json` (with `architectures`), `model.safetensors` under HF
/// names, and the tokenizer files of `tokenizer_dir`. `transformers` loads it unchanged.
pub fn save_pretrained<B: Backend>(
    model: &QaModel<B>,
    config: &ModelConfig,
    dir: &Path,
    tokenizer_dir: Option<&Path>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    write_safetensors(
        &dir.join("model.safetensors"),
        &export_tensors(model, config),
    )?;
    let config_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config.to_hf_json()).expect("JSON value serializes");
    std::fs::write(&config_path, text + "\n").map_err(|e| ModelError::io(&config_path, e))?;
    if let Some(src) = tokenizer_dir {
        if src != dir {
            for name in TOKENIZER_FILES {
                let from = src.join(name);
                if from.is_file() {
                    std::fs::copy(&from, dir.join(name)).map_err(|e| ModelError::io(&from, e))?;
                }
            }
        }
    }
    Ok(())
}
