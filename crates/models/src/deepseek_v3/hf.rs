//! Reading and writing HF `transformers` DeepSeek-V3 directories: `config.json` plus
//! `model.safetensors` (or shards listed in `model.safetensors.index.json`), tensors named as
//! in the published checkpoints (`model.layers.N.mlp.experts.J.gate_proj.weight`, ...).
//!
//! MTP modules are read when their tensors are present (`model.layers.{L + k}`, as in the V3
//! checkpoint); `transformers` itself has no MTP, so a directory it wrote has none and loads
//! with `num_nextn_predict_layers` 0. Tensors stored in other dtypes (bf16, f16) are read as
//! f32.

use std::path::Path;

use ferrolab_nn::Vars;
use ferrolab_tensor::{io, DType, Error, Result};
use serde_json::Value;

use super::config::V3Config;
use super::model::DeepseekV3;

fn invalid(msg: String) -> Error {
    Error::Invalid {
        op: "HF deepseek_v3 model",
        msg,
    }
}

/// `transformers`' `DeepseekV3Config` defaults (DeepSeek-V3's own sizes) for the keys a
/// `config.json` may leave out; ferrolab's own files name every key.
pub fn v3_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("vocab_size", 129280.into()),
        ("hidden_size", 7168.into()),
        ("intermediate_size", 18432.into()),
        ("moe_intermediate_size", 2048.into()),
        ("num_hidden_layers", 61.into()),
        ("num_attention_heads", 128.into()),
        ("n_shared_experts", 1.into()),
        ("n_routed_experts", 256.into()),
        ("routed_scaling_factor", 2.5.into()),
        ("kv_lora_rank", 512.into()),
        ("q_lora_rank", 1536.into()),
        ("qk_rope_head_dim", 64.into()),
        ("v_head_dim", 128.into()),
        ("qk_nope_head_dim", 128.into()),
        ("n_group", 8.into()),
        ("topk_group", 4.into()),
        ("num_experts_per_tok", 8.into()),
        ("first_k_dense_replace", 3.into()),
        ("max_position_embeddings", 4096.into()),
    ]
}

impl V3Config {
    /// Reads an HF `config.json` value: `rope_theta` may sit inside `rope_parameters`
    /// (newer `transformers`); RoPE scaling (YaRN) is not supported and is refused by name.
    pub fn from_hf(v: &Value) -> Result<V3Config> {
        let mut v = v.clone();
        let Some(o) = v.as_object_mut() else {
            return Err(invalid("config.json is not a JSON object".into()));
        };
        if let Some(mt) = o.get("model_type").and_then(|m| m.as_str()) {
            if mt != "deepseek_v3" {
                return Err(invalid(format!(
                    "model_type is {mt:?}, not \"deepseek_v3\""
                )));
            }
        }
        crate::hf::take_rope(o)?;
        crate::hf::act_alias(o);
        // `DeepseekV3Config`'s defaults (DeepSeek-V3's own sizes); ferrolab's own files name
        // every key
        crate::hf::fill_defaults(o, &v3_defaults());
        // `transformers` takes `head_dim` as the RoPE width and every head as a key/value
        // head; ferrolab computes MLA with qk_rope_head_dim and no key/value head count
        let rope = o.get("qk_rope_head_dim").cloned().unwrap_or(Value::Null);
        let heads = o.get("num_attention_heads").cloned().unwrap_or(Value::Null);
        crate::hf::require(
            &Value::Object(o.clone()),
            &[
                ("hidden_act", Value::from("silu")),
                ("scoring_func", Value::from("sigmoid")),
                ("topk_method", Value::from("noaux_tc")),
                ("attention_bias", Value::from(false)),
                // every layer from first_k_dense_replace on is MoE
                ("moe_layer_freq", Value::from(1)),
                ("head_dim", rope),
                ("num_key_value_heads", heads),
            ],
        )?;
        // null is no low-rank query; `transformers` builds a rank-0 one for 0
        if o.get("q_lora_rank").and_then(Value::as_u64) == Some(0) {
            return Err(invalid(
                "config.json `q_lora_rank` is 0: give null for no low-rank query, or a rank \
                 above 0"
                    .into(),
            ));
        }
        let cfg: V3Config =
            crate::from_json_named(v).map_err(|e| invalid(format!("config.json: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The HF `config.json` value of this config (ferrolab's training switches included; HF
    /// ignores unknown keys).
    pub fn to_hf(&self) -> Value {
        let mut v = crate::json_value(self).unwrap_or(Value::Null);
        let theta = v.get("rope_theta").cloned().unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("model_type".into(), "deepseek_v3".into());
            o.insert(
                "architectures".into(),
                Value::Array(vec!["DeepseekV3ForCausalLM".into()]),
            );
            o.insert(
                "rope_parameters".into(),
                serde_json::json!({"rope_type": "default", "rope_theta": theta}),
            );
            o.insert("hidden_act".into(), "silu".into());
            o.insert("attention_bias".into(), false.into());
            o.insert(
                "num_key_value_heads".into(),
                self.num_attention_heads.into(),
            );
            o.insert("torch_dtype".into(), "float32".into());
            o.insert("topk_method".into(), "noaux_tc".into());
            o.insert("scoring_func".into(), "sigmoid".into());
            if self.n_routed_experts == 0 {
                // ferrolab's dense variant (SwiGLU in every layer): `transformers` builds an
                // MoE block from first_k_dense_replace on whatever n_routed_experts says, so
                // the same model is written as all-dense layers
                o.insert(
                    "first_k_dense_replace".into(),
                    self.num_hidden_layers.into(),
                );
            }
        }
        v
    }
}

/// Loads an HF DeepSeek-V3 directory; returns the parameters and the model.
pub fn load_hf(dir: &Path) -> Result<(Vars, DeepseekV3)> {
    load_hf_for(dir, 0)
}

/// [`load_hf`] for sequences of up to `positions` tokens, more than the config's
/// `max_position_embeddings` if need be (as `crate::hf::load_llama_for`).
pub fn load_hf_for(dir: &Path, positions: usize) -> Result<(Vars, DeepseekV3)> {
    let cfg_path = dir.join("config.json");
    let text = ferrolab_data::read_regular_to_string(&cfg_path)
        .map_err(|e| invalid(format!("{}: {e}", cfg_path.display())))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", cfg_path.display())))?;
    let mut cfg = V3Config::from_hf(&v)?;
    cfg.max_position_embeddings = cfg.max_position_embeddings.max(positions);
    let tensors = crate::hf::read_tensors(dir)?;
    crate::hf::refuse_unscaled_fp8(dir, &v, &tensors)?;
    // MTP modules only when their tensors are there
    let mtp = (0..cfg.num_nextn_predict_layers)
        .take_while(|k| {
            tensors.contains_key(&format!(
                "model.layers.{}.eh_proj.weight",
                cfg.num_hidden_layers + k
            ))
        })
        .count();
    cfg.num_nextn_predict_layers = mtp;
    if cfg.tie_word_embeddings && crate::hf::stored_head_differs(&tensors) {
        cfg.tie_word_embeddings = false;
    }
    crate::hf::check_weights_hold(dir, cfg.num_params().0, &tensors)?;
    let tied = cfg.tie_word_embeddings;
    let vars = Vars::new();
    let model = DeepseekV3::new(&vars, cfg)?;
    // the released checkpoint stores each MTP layer's copies of the shared embedding and head
    // (`model.layers.{L + k}.embed_tokens` / `.shared_head.head`); ferrolab shares them. A
    // tied model's stored copy of the embedding as the head is passed over too
    let first_mtp = model.cfg.num_hidden_layers;
    let shared_copy = |n: &str| {
        (tied && n == "lm_head.weight")
            || n.strip_prefix("model.layers.")
                .and_then(|r| r.split_once('.'))
                .is_some_and(|(layer, rest)| {
                    layer.parse::<usize>().is_ok_and(|l| l >= first_mtp)
                        && (rest == "embed_tokens.weight" || rest == "shared_head.head.weight")
                })
    };
    crate::hf::load_into(&vars, &tensors, dir, &shared_copy)?;
    Ok((vars, model))
}

/// Writes `vars` of a model with config `cfg` as an HF directory (`config.json`,
/// `model.safetensors`, f32). The MTP modules are written as DeepSeek's checkpoints hold them
/// (`model.layers.{num_hidden_layers + k}.*`), or left out (and `num_nextn_predict_layers` set
/// to 0) without `with_mtp`: `transformers` does not use them, and lists them as unexpected
/// tensors unless they sit at DeepSeek-V3's own index (61).
pub fn save_hf(dir: &Path, cfg: &V3Config, vars: &Vars, with_mtp: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
    let files = hf_files(dir, cfg, vars, with_mtp)?;
    let refs: Vec<(&Path, &[u8])> = files.iter().map(|(p, b)| (p.as_path(), &b[..])).collect();
    // all or none: an earlier export in `dir` stays whole if this one fails
    io::write_all_atomic(&refs)
}

/// The files [`save_hf`] writes into `dir`, as (path, bytes): the weights, then `config.json`.
pub fn hf_files(
    dir: &Path,
    cfg: &V3Config,
    vars: &Vars,
    with_mtp: bool,
) -> Result<Vec<(std::path::PathBuf, Vec<u8>)>> {
    let mut cfg = cfg.clone();
    let mut tensors = vars.all();
    if !with_mtp {
        let first_mtp = cfg.num_hidden_layers;
        tensors.retain(|(n, _)| {
            n.strip_prefix("model.layers.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(layer, _)| layer.parse::<usize>().ok())
                .is_none_or(|l| l < first_mtp)
        });
        cfg.num_nextn_predict_layers = 0;
    }
    let json = serde_json::to_string_pretty(&cfg.to_hf()).map_err(|e| invalid(e.to_string()))?;
    let model = dir.join("model.safetensors");
    let weights = io::encode_safetensors(&model, &tensors, DType::F32, None)?;
    Ok(vec![
        (model, weights),
        (dir.join("config.json"), json.into_bytes()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_then_load_gives_the_same_logits() {
        ferrolab_tensor::rng::manual_seed(4);
        let cfg = V3Config {
            hidden_size: 32,
            intermediate_size: 48,
            moe_intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            q_lora_rank: 12,
            kv_lora_rank: 16,
            qk_nope_head_dim: 8,
            qk_rope_head_dim: 8,
            v_head_dim: 8,
            ..V3Config::tiny(40)
        };
        let vars = Vars::new();
        let m = DeepseekV3::new(&vars, cfg.clone()).unwrap();
        m.update_bias(&[vec![5, 0, 1, 1, 1, 1, 1, 6], vec![1; 8]])
            .unwrap();
        let dir = ferrolab_data::TempFolder::new("hf").unwrap();
        save_hf(&dir, &cfg, &vars, true).unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(text.contains("\"model_type\": \"deepseek_v3\""), "{text}");
        let (_, back) = load_hf(dir.path()).unwrap();
        assert_eq!(back.cfg.num_nextn_predict_layers, 1);
        assert_eq!(back.biases(), m.biases());
        let ids = [1, 5, 7, 39, 0, 3];
        assert_eq!(
            back.forward(&ids, 1, 6).unwrap().to_vec(),
            m.forward(&ids, 1, 6).unwrap().to_vec()
        );
        // without the MTP module: no tensor of layer 2 (the MTP layer), a config that says
        // so, and the same main-model logits
        save_hf(&dir, &cfg, &vars, false).unwrap();
        let names = crate::hf::read_tensors(dir.path()).unwrap();
        assert!(!names.is_empty());
        assert!(names.keys().all(|n| !n.starts_with("model.layers.2.")));
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(text.contains("\"num_nextn_predict_layers\": 0"), "{text}");
        let (_, back) = load_hf(dir.path()).unwrap();
        assert_eq!(back.cfg.num_nextn_predict_layers, 0);
        assert_eq!(
            back.forward(&ids, 1, 6).unwrap().to_vec(),
            m.forward(&ids, 1, 6).unwrap().to_vec()
        );
        save_hf(&dir, &cfg, &vars, true).unwrap();
        // a missing tensor is named
        let all: Vec<(String, ferrolab_tensor::Tensor)> = vars
            .all()
            .into_iter()
            .filter(|(n, _)| n != "model.layers.1.mlp.experts.3.up_proj.weight")
            .collect();
        io::save_safetensors(
            &dir.path().join("model.safetensors"),
            &all,
            DType::F32,
            None,
        )
        .unwrap();
        let e = load_hf(dir.path()).err().unwrap().to_string();
        assert!(e.contains("experts.3.up_proj"), "{e}");
        // the released checkpoint's copies of the shared embedding and head in the MTP layer
        // (model.layers.2 here) are passed over; another leftover tensor is not
        let mut with_copies = vars.all();
        for n in ["embed_tokens.weight", "shared_head.head.weight"] {
            with_copies.push((
                format!("model.layers.2.{n}"),
                ferrolab_tensor::Tensor::zeros(&[40, 32]),
            ));
        }
        let path = dir.path().join("model.safetensors");
        io::save_safetensors(&path, &with_copies, DType::F32, None).unwrap();
        let (_, back) = load_hf(dir.path()).unwrap();
        assert_eq!(back.cfg.num_nextn_predict_layers, 1);
        with_copies.push((
            "model.layers.1.embed_tokens.weight".into(),
            ferrolab_tensor::Tensor::zeros(&[40, 32]),
        ));
        io::save_safetensors(&path, &with_copies, DType::F32, None).unwrap();
        let e = load_hf(dir.path()).err().unwrap().to_string();
        assert!(e.contains("model.layers.1.embed_tokens.weight"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn yarn_scaling_is_refused_by_name() {
        let mut v = V3Config::tiny(10).to_hf();
        v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 40});
        let e = V3Config::from_hf(&v).unwrap_err().to_string();
        assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
    }
}
