//! What the HF `transformers` directories of both model families share: reading the tensors
//! (one `model.safetensors` or the shards of `model.safetensors.index.json`), copying them
//! into a model's parameters strictly (every parameter present with its shape, no tensor left
//! over), and refusing `config.json` settings that change the maths in ways ferrolab does not
//! implement, rather than computing something else without a word.

use std::collections::BTreeMap;
use std::path::Path;

use ferrolab_nn::Vars;
use ferrolab_tensor::{io, Error, Result, Tensor};
use serde_json::Value;

use crate::lm::{Lm, LmConfig};

fn invalid(msg: String) -> Error {
    Error::Invalid {
        op: "HF model",
        msg,
    }
}

/// Every tensor of the directory's safetensors files, by name.
pub fn read_tensors(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return io::load_safetensors(&single);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = ferrolab_data::read_regular_to_string(&index).map_err(|e| {
        invalid(format!(
            "{}: no model.safetensors or model.safetensors.index.json ({e})",
            dir.display()
        ))
    })?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", index.display())))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| invalid(format!("{}: no weight_map", index.display())))?;
    // every entry names a shard in this folder (a path could point anywhere)
    let mut files = std::collections::BTreeSet::new();
    for (name, f) in map {
        let shard = f.as_str().filter(|f| {
            let mut parts = Path::new(f).components();
            matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(_)), None)
            )
        });
        let Some(shard) = shard else {
            return Err(invalid(format!(
                "{}: weight_map maps `{name}` to {f}, not the name of a file in this folder",
                index.display()
            )));
        };
        files.insert(shard);
    }
    let mut all = BTreeMap::new();
    let mut from: BTreeMap<String, &str> = BTreeMap::new();
    for f in files {
        for (name, t) in io::load_safetensors(&dir.join(f))? {
            if let Some(other) = from.insert(name.clone(), f) {
                return Err(invalid(format!(
                    "{}: tensor `{name}` is in two shards, {other} and {f}",
                    dir.display()
                )));
            }
            all.insert(name, t);
        }
    }
    // the index and the shards agree on where each tensor is
    for (name, f) in map {
        let listed = f.as_str().unwrap_or_default();
        match from.get(name) {
            Some(&found) if found == listed => {}
            Some(&found) => {
                return Err(invalid(format!(
                    "{}: weight_map puts `{name}` in {listed}, but it is in {found}",
                    index.display()
                )))
            }
            None => {
                return Err(invalid(format!(
                    "{}: weight_map lists `{name}` in {listed}, which does not hold it",
                    index.display()
                )))
            }
        }
    }
    Ok(all)
}

/// Whether a tensor name belongs to a quantized checkpoint's extra tensors (FP8 block scales,
/// GPTQ/AWQ packs).
fn is_quantization_tensor(name: &str) -> bool {
    name.ends_with("weight_scale_inv")
        || name.ends_with(".qweight")
        || name.ends_with(".qzeros")
        || name.ends_with(".scales")
}

/// Copies `tensors` into `vars`: a parameter without a tensor, a shape that differs, or a
/// tensor no parameter takes is an error naming it. Passed over: RoPE's `inv_freq` buffers
/// (some checkpoints carry them) and the names `extra` accepts (copies of shared weights a
/// checkpoint stores again). A quantized checkpoint (FP8 block scales, GPTQ/AWQ packs) is
/// refused as such: its weights are not plain numbers.
pub fn load_into(
    vars: &Vars,
    tensors: &BTreeMap<String, Tensor>,
    dir: &Path,
    extra: &dyn Fn(&str) -> bool,
) -> Result<()> {
    if let Some(q) = tensors.keys().find(|n| is_quantization_tensor(n)) {
        return Err(invalid(format!(
            "{}: `{q}` belongs to a quantized checkpoint, which ferrolab does not read; convert \
             the weights to bf16 or f32 first",
            dir.display()
        )));
    }
    let params = vars.all();
    for (name, t) in &params {
        let Some(src) = tensors.get(name) else {
            return Err(invalid(format!(
                "{}: tensor `{name}` {:?} is missing",
                dir.display(),
                t.shape()
            )));
        };
        if src.shape() != t.shape() {
            return Err(invalid(format!(
                "{}: tensor `{name}` has shape {:?}, the config needs {:?}",
                dir.display(),
                src.shape(),
                t.shape()
            )));
        }
    }
    let taken: std::collections::HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let unused: Vec<&str> = tensors
        .keys()
        .map(String::as_str)
        // (a tensor with no elements, as `transformers` saves for `n_shared_experts: 0`, holds
        // nothing to place)
        .filter(|n| {
            !taken.contains(n)
                && !n.ends_with("rotary_emb.inv_freq")
                && !extra(n)
                && tensors[*n].numel() > 0
        })
        .collect();
    if let Some(first) = unused.first() {
        return Err(invalid(format!(
            "{}: {} tensor(s) that the config has no place for, e.g. `{first}` (a config that \
             does not match the weights?)",
            dir.display(),
            unused.len()
        )));
    }
    for (name, t) in &params {
        t.copy_from(&tensors[name])?;
    }
    Ok(())
}

/// Refuses `config.json` settings whose value is not the one ferrolab computes: `(key, the
/// only accepted value)`; a key that is absent or `null` is fine.
pub fn require(v: &Value, rules: &[(&str, Value)]) -> Result<()> {
    for (key, want) in rules {
        match v.get(*key) {
            None | Some(Value::Null) => {}
            Some(got) if got == want => {}
            Some(got) => {
                return Err(invalid(format!(
                    "config.json `{key}` is {got}: ferrolab implements only {want}"
                )))
            }
        }
    }
    Ok(())
}

/// Reads the RoPE settings as `transformers` does: `rope_parameters = rope_scaling or
/// rope_parameters` (a non-empty `rope_scaling` wins whole, and the other is not looked at),
/// with the base (`rope_theta`) inside it, else the top-level one. Moves that base to the top
/// level and refuses any RoPE other than the default, by name.
pub fn take_rope(o: &mut serde_json::Map<String, Value>) -> Result<()> {
    let chosen = ["rope_scaling", "rope_parameters"]
        .into_iter()
        .find_map(|key| {
            o.get(key)
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
                .map(|m| (key, m.clone()))
        });
    let Some((key, rp)) = chosen else {
        return Ok(());
    };
    if let Some(theta) = rp.get("rope_theta") {
        // checked here: the copy's key would name a top-level `rope_theta` the file may not have
        if !theta.is_number() {
            return Err(invalid(format!(
                "`{key}.rope_theta`: expected a number, got {theta}"
            )));
        }
        o.insert("rope_theta".into(), theta.clone());
    }
    let kind = rp
        .get("rope_type")
        .or_else(|| rp.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    if kind != "default" {
        return Err(invalid(format!(
            "`{key}`: rope_type {kind:?} is not supported (only the default RoPE)"
        )));
    }
    Ok(())
}

/// `transformers`' `LlamaConfig` defaults for the sizes a `config.json` may leave out.
pub fn llama_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("vocab_size", 32000.into()),
        ("hidden_size", 4096.into()),
        ("intermediate_size", 11008.into()),
        ("num_hidden_layers", 32.into()),
        ("num_attention_heads", 32.into()),
        ("max_position_embeddings", 2048.into()),
    ]
}

/// Puts `transformers`' default in for each of these keys that the config leaves out.
pub fn fill_defaults(o: &mut serde_json::Map<String, Value>, defaults: &[(&str, Value)]) {
    for (key, v) in defaults {
        o.entry(*key).or_insert_with(|| v.clone());
    }
}

/// `hidden_act` as the activation it names: `swish` is SiLU in `transformers`.
pub(crate) fn act_alias(o: &mut serde_json::Map<String, Value>) {
    if o.get("hidden_act").and_then(Value::as_str) == Some("swish") {
        o.insert("hidden_act".into(), "silu".into());
    }
}

impl LmConfig {
    /// Reads an HF `config.json` value of a `llama` model, refusing what ferrolab does not
    /// compute: RoPE scaling, an activation other than SiLU, attention or MLP biases, a
    /// `head_dim` other than `hidden_size / num_attention_heads`.
    pub fn from_hf(v: &Value) -> Result<LmConfig> {
        let mut v = v.clone();
        let Some(o) = v.as_object_mut() else {
            return Err(invalid("config.json is not a JSON object".into()));
        };
        take_rope(o)?;
        act_alias(o);
        // `LlamaConfig`'s defaults; no `num_key_value_heads` (or null) is multi-head attention
        fill_defaults(o, &llama_defaults());
        if o.get("num_key_value_heads").is_none_or(Value::is_null) {
            let heads = o["num_attention_heads"].clone();
            o.insert("num_key_value_heads".into(), heads);
        }
        let heads = o.get("num_attention_heads").and_then(Value::as_u64);
        let hidden = o.get("hidden_size").and_then(Value::as_u64);
        // (`pretraining_tp` only slices the products in `transformers`: the same maths)
        let mut rules = vec![
            ("hidden_act", Value::from("silu")),
            ("attention_bias", Value::from(false)),
            ("mlp_bias", Value::from(false)),
        ];
        // (a hidden_size that heads do not divide is named by `validate` below)
        if let Some((c, h)) = hidden
            .zip(heads)
            .filter(|&(c, h)| h > 0 && c > 0 && c % h == 0)
        {
            rules.push(("head_dim", Value::from(c / h)));
        }
        require(&Value::Object(o.clone()), &rules)?;
        let cfg: LmConfig =
            crate::from_json_named(v).map_err(|e| invalid(format!("config.json: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Refuses a config that describes far more parameters (`need`) than the weight files hold
/// values, before the model is built: a config far larger than its weights would allocate what
/// it describes first (or abort the process trying) and only then find the shapes wrong. (A
/// smaller gap, a tensor or two missing, is named tensor by tensor when the weights are
/// placed.)
pub(crate) fn check_weights_hold(
    dir: &Path,
    need: usize,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let have = tensors
        .values()
        .fold(0usize, |n, t| n.saturating_add(t.numel()));
    if need > have.saturating_mul(2).saturating_add(1 << 20) {
        return Err(invalid(format!(
            "{}: config.json describes {need} parameters, far more than the {have} values the \
             weight files hold: the config does not match the weights",
            dir.display()
        )));
    }
    Ok(())
}

/// Refuses FP8 weights that a `quantization_config` says are scaled when the scales are not
/// there: DeepSeek-V3's FP8 checkpoints store each weight as E4M3 codes times a per-block
/// `weight_scale_inv`, so codes read without their scales are numbers of the wrong size (the
/// logits came out finite and wrong). A checkpoint that holds scales (or other quantization
/// tensors) is left to [`load_into`], which refuses it as quantized; E4M3/E5M2 weights without
/// a `quantization_config` are plain numbers (as ferrolab writes them) and are read as such.
/// Call after [`read_tensors`] succeeded (the headers are then known to be readable).
pub(crate) fn refuse_unscaled_fp8(
    dir: &Path,
    config: &Value,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let Some(q) = config.get("quantization_config").filter(|q| !q.is_null()) else {
        return Ok(());
    };
    if tensors.keys().any(|n| is_quantization_tensor(n)) {
        return Ok(());
    }
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or("unnamed");
    let single = dir.join("model.safetensors");
    let files: Vec<std::path::PathBuf> = if single.exists() {
        vec![single]
    } else {
        let text = ferrolab_data::read_regular_to_string(&dir.join("model.safetensors.index.json"))
            .map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let mut shards: Vec<&str> = v["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        shards.sort_unstable();
        shards.dedup();
        shards.iter().map(|f| dir.join(f)).collect()
    };
    for f in files {
        let dtypes = io::safetensors_dtypes(&f)?;
        if let Some((name, dtype)) = dtypes.iter().find(|(_, d)| d.starts_with("F8")) {
            return Err(invalid(format!(
                "{}: `{name}` is stored as {dtype} and config.json has a quantization_config \
                 ({method}), but the checkpoint holds no scales (`weight_scale_inv`): read \
                 without them its values would be wrong; dequantize the weights to bf16 or \
                 f32 with their scales first, or drop quantization_config if these are plain \
                 numbers",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Whether a checkpoint stores an `lm_head.weight` that differs from its embedding. A tied
/// model's checkpoint may still store the head: a copy of the embedding is passed over, and a
/// head that differs from it is used, untied, as `transformers` does.
pub(crate) fn stored_head_differs(tensors: &BTreeMap<String, Tensor>) -> bool {
    let head = tensors.get("lm_head.weight");
    let emb = tensors.get("model.embed_tokens.weight");
    head.zip(emb)
        .is_some_and(|(h, e)| h.shape() == e.shape() && h.to_vec() != e.to_vec())
}

/// Loads an HF `llama` directory (`config.json` and `model.safetensors` or shards); returns
/// the parameters and the model.
pub fn load_llama(dir: &Path) -> Result<(Vars, Lm)> {
    load_llama_for(dir, 0)
}

/// [`load_llama`] for sequences of up to `positions` tokens, more than the config's
/// `max_position_embeddings` if need be: RoPE has no limit of its own, and `transformers`
/// computes such sequences.
pub fn load_llama_for(dir: &Path, positions: usize) -> Result<(Vars, Lm)> {
    let cfg_path = dir.join("config.json");
    let text = ferrolab_data::read_regular_to_string(&cfg_path)
        .map_err(|e| invalid(format!("{}: {e}", cfg_path.display())))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", cfg_path.display())))?;
    let mut cfg = LmConfig::from_hf(&v)?;
    cfg.max_position_embeddings = cfg.max_position_embeddings.max(positions);
    let tensors = read_tensors(dir)?;
    refuse_unscaled_fp8(dir, &v, &tensors)?;
    if cfg.tie_word_embeddings && stored_head_differs(&tensors) {
        cfg.tie_word_embeddings = false;
    }
    check_weights_hold(dir, cfg.num_params().0, &tensors)?;
    let vars = Vars::new();
    let tied = cfg.tie_word_embeddings;
    let model = Lm::new(&vars, cfg)?;
    load_into(&vars, &tensors, dir, &|n| tied && n == "lm_head.weight")?;
    Ok((vars, model))
}
