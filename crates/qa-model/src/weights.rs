//! Checkpoint tensors on the host, as f32, by name: from `model.safetensors` (f32, f16, bf16,
//! f64) or `pytorch_model.bin` (read by burn-store's pickle reader, which never executes code).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::error::{ModelError, Result};

/// A dense row-major f32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// The transpose of a 2-D tensor (PyTorch `Linear` stores `[out, in]`, Burn `[in, out]`).
    pub fn transposed(&self) -> Self {
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut data = vec![0.0; self.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Self::new(vec![cols, rows], data)
    }
}

/// All floating-point tensors of a checkpoint file, by name.
#[derive(Debug, Clone)]
pub struct WeightFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
    /// Non-float tensors (e.g. `position_ids` buffers), which a model never uses.
    pub skipped: Vec<String>,
    /// Every tensor's element type as the file stores it (`F32`, `F16`, `I64`, ...): `tensors`
    /// are converted to f32, and some readers (resuming optimizer moments) must know they were
    /// saved as f32.
    pub stored_dtypes: BTreeMap<String, String>,
}

impl WeightFile {
    /// Reads `.safetensors` or a PyTorch `.bin`/`.pt` checkpoint, by extension.
    pub fn read(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => read_safetensors(path),
            Some("bin" | "pt" | "pth") => read_pytorch(path),
            _ => Err(ModelError::Checkpoint {
                path: path.to_path_buf(),
                what: "unknown weight file type (expected .safetensors or pytorch_model.bin)"
                    .into(),
            }),
        }
    }
}

fn bad(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn read_safetensors(path: &Path) -> Result<WeightFile> {
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut stored_dtypes = BTreeMap::new();
    for (name, view) in st.tensors() {
        stored_dtypes.insert(name.clone(), format!("{:?}", view.dtype()));
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            _ => {
                skipped.push(name);
                continue;
            }
        };
        tensors.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(WeightFile {
        path: path.to_path_buf(),
        tensors,
        skipped,
        stored_dtypes,
    })
}

fn read_pytorch(path: &Path) -> Result<WeightFile> {
    let reader = burn_store::pytorch::PytorchReader::new(path)
        .map_err(|e| bad(path, format!("cannot read PyTorch checkpoint: {e}")))?;
    let mut tensors = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut stored_dtypes = BTreeMap::new();
    for (name, snapshot) in reader.into_tensors() {
        stored_dtypes.insert(name.clone(), format!("{:?}", snapshot.dtype).to_uppercase());
        if !snapshot.dtype.is_float() {
            skipped.push(name);
            continue;
        }
        let shape = snapshot.shape.clone();
        let data = snapshot
            .to_data()
            .map_err(|e| bad(path, format!("tensor {name}: {e:?}")))?
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| bad(path, format!("tensor {name}: {e:?}")))?;
        tensors.insert(name, HostTensor::new(shape, data));
    }
    skipped.sort();
    Ok(WeightFile {
        path: path.to_path_buf(),
        tensors,
        skipped,
        stored_dtypes,
    })
}

/// Writes f32 tensors as a safetensors file (temp file + rename: never half a file).
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), raw, t.shape.clone())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, raw, shape)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                    .expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    let metadata: std::collections::HashMap<String, String> =
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, Some(metadata), &tmp)
        .map_err(|e| bad(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}
