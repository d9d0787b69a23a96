//! safetensors I/O with atomic writes.
//!
//! Files hold named tensors (`layers.0.attn.wq.weight`); values are stored as f32 by default
//! or in any [`DType`], and any of them (plus F64) loads as f32. Writes go to a temporary file
//! in the same folder, are fsynced, then renamed over the target, so a crash leaves either the
//! old file or the new one, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::dtype::{self, DType};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F8E4M3 => Dtype::F8_E4M3,
        DType::F8E5M2 => Dtype::F8_E5M2,
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same folder, fsync, rename, fsync of
/// the folder: [`ferrolab_data::files`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    ferrolab_data::write_atomic(path, bytes).map_err(|e| io_err(path, e))
}

/// Writes files that belong together (a model's config and weights): none of them changes
/// unless all are written ([`ferrolab_data::write_all_atomic`]).
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    ferrolab_data::write_all_atomic(files).map_err(|(p, e)| io_err(&p, e))
}

/// Saves named tensors to a safetensors file, each stored as `dtype`, with optional string
/// metadata.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    dtype: DType,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    write_atomic(path, &encode_safetensors(path, tensors, dtype, metadata)?)
}

/// The bytes of the safetensors file [`save_safetensors`] writes (`path` names it in errors).
pub fn encode_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    dtype: DType,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.shape().to_vec(),
                dtype::encode(&t.contig(), dtype),
            )
        })
        .collect();
    let views = bufs
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(st_dtype(dtype), s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Format {
                    path: path.display().to_string(),
                    msg: format!("tensor `{n}`: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata).map_err(|e| Error::Format {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// Loads every tensor of a safetensors file as f32, by name.
pub fn load_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = ferrolab_data::read_regular(path).map_err(|e| io_err(path, e))?;
    let tensors = parse_safetensors(&bytes, &path.display().to_string());
    drop(bytes);
    crate::release_free_memory(); // the file's bytes, freed, would stay resident
    tensors
}

/// The stored dtype of each tensor of a safetensors file (`"F32"`, `"BF16"`, `"F8_E4M3"`...),
/// read from its header alone.
pub fn safetensors_dtypes(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let format = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| io_err(path, e))?;
    let len = u64::from_le_bytes(len);
    // (the format caps its header at 100 MB)
    if len > 100_000_000 {
        return Err(format(format!(
            "header of {len} bytes: not a safetensors file"
        )));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| io_err(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format(format!("not a valid safetensors header: {e}")))?;
    let Some(o) = v.as_object() else {
        return Err(format("the safetensors header is not a JSON object".into()));
    };
    Ok(o.iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .map(|(name, t)| {
            let d = t.get("dtype").and_then(|d| d.as_str()).unwrap_or_default();
            (name.clone(), d.to_string())
        })
        .collect())
}

/// Parses safetensors bytes (`origin` names them in errors).
pub fn parse_safetensors(bytes: &[u8], origin: &str) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Format {
        path: origin.to_string(),
        msg: format!("not a valid safetensors file: {e}"),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => dtype::decode(data, DType::F32),
            Dtype::F16 => dtype::decode(data, DType::F16),
            Dtype::BF16 => dtype::decode(data, DType::BF16),
            Dtype::F8_E4M3 => dtype::decode(data, DType::F8E4M3),
            Dtype::F8_E5M2 => dtype::decode(data, DType::F8E5M2),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(Error::Format {
                    path: origin.to_string(),
                    msg: format!("tensor `{name}` has unsupported dtype {other:?}"),
                })
            }
        };
        let t = Tensor::from_vec(values, view.shape()).map_err(|e| Error::Format {
            path: origin.to_string(),
            msg: format!("tensor `{name}`: {e}"),
        })?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Loads a file into existing tensors (parameters) by name. Every named tensor must be in the
/// file with the same shape; the error names the tensor and both shapes.
pub fn load_into(path: &Path, targets: &[(String, Tensor)]) -> Result<()> {
    let file = load_safetensors(path)?;
    for (name, t) in targets {
        let src = file.get(name).ok_or_else(|| Error::MissingTensor {
            path: path.display().to_string(),
            name: name.clone(),
        })?;
        if src.shape() != t.shape() {
            return Err(Error::TensorShape {
                path: path.display().to_string(),
                name: name.clone(),
                expected: t.shape().to_vec(),
                actual: src.shape().to_vec(),
            });
        }
    }
    for (name, t) in targets {
        t.copy_from(&file[name])?;
    }
    Ok(())
}
