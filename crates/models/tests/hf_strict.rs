//! HF directories are read strictly: settings that change the maths and that ferrolab does not
//! implement are refused by name, weights must match the config exactly, and sharded `llama`
//! directories load like single-file ones.

use std::path::Path;

use ferrolab_models::{hf, LmConfig, V3Config};
use ferrolab_nn::Vars;
use ferrolab_tensor::{io, no_grad, DType, Tensor};
use serde_json::{json, Value};

/// A scratch folder, removed when the test ends.
fn dir(name: &str) -> ferrolab_data::TempFolder {
    ferrolab_data::TempFolder::new(&format!("hf-{name}")).unwrap()
}

fn llama_cfg() -> LmConfig {
    LmConfig {
        vocab_size: 30,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        max_position_embeddings: 16,
        ..LmConfig::tiny(30)
    }
}

/// A `llama` directory as `transformers` writes it, with random weights; returns its logits
/// for a few ids.
fn write_llama(d: &Path) -> Vec<f32> {
    ferrolab_tensor::rng::manual_seed(9);
    let vars = Vars::new();
    let m = ferrolab_models::Lm::new(&vars, llama_cfg()).unwrap();
    let mut v = serde_json::to_value(llama_cfg()).unwrap();
    v["model_type"] = "llama".into();
    v["hidden_act"] = "silu".into();
    v["attention_bias"] = false.into();
    v["mlp_bias"] = false.into();
    v["head_dim"] = 8.into();
    v["pretraining_tp"] = 1.into();
    v["rope_scaling"] = Value::Null;
    std::fs::write(d.join("config.json"), v.to_string()).unwrap();
    io::save_safetensors(&d.join("model.safetensors"), &vars.all(), DType::F32, None).unwrap();
    logits_of(&m)
}

fn logits_of(m: &ferrolab_models::Lm) -> Vec<f32> {
    no_grad(|| m.forward(&[1, 7, 3], 1, 3)).unwrap().to_vec()
}

fn edit_config(d: &Path, f: impl Fn(&mut Value)) {
    let p = d.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn llama_settings_ferrolab_does_not_compute_are_refused_by_name() {
    let d = dir("llama-keys");
    let want = write_llama(&d);
    let (_, m) = hf::load_llama(&d).unwrap();
    assert_eq!(logits_of(&m), want);
    let original = std::fs::read_to_string(d.join("config.json")).unwrap();
    let cases: Vec<(&str, Value)> = vec![
        (
            "rope_scaling",
            json!({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8}),
        ),
        ("hidden_act", json!("gelu")),
        ("attention_bias", json!(true)),
        ("mlp_bias", json!(true)),
        ("head_dim", json!(32)),
    ];
    for (key, value) in cases {
        std::fs::write(d.join("config.json"), &original).unwrap();
        edit_config(&d, |v| v[key] = value.clone());
        let e = hf::load_llama(&d).err().unwrap().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

/// Keys that `transformers` reads its own way: a `tie_word_embeddings` contradicted by a stored
/// head that differs from the embedding (HF unties and uses the head), a `rope_theta` in
/// `rope_parameters` beside a top-level one (HF takes the inner one), a V3 config without
/// `q_lora_rank` (HF's default, 1536).
#[test]
fn keys_transformers_reads_its_own_way_are_read_the_same() {
    let d = dir("llama-hf-ways");
    let want = write_llama(&d);
    edit_config(&d, |v| v["tie_word_embeddings"] = true.into());
    let (_, m) = hf::load_llama(&d).unwrap();
    assert!(!m.cfg.tie_word_embeddings);
    assert_eq!(logits_of(&m), want);
    // a head that is a copy of the embedding: tied as the config says
    let mut t = io::load_safetensors(&d.join("model.safetensors")).unwrap();
    let emb = t["model.embed_tokens.weight"].clone();
    t.insert("lm_head.weight".into(), emb);
    let all: Vec<(String, Tensor)> = t.into_iter().collect();
    io::save_safetensors(&d.join("model.safetensors"), &all, DType::F32, None).unwrap();
    let (_, m) = hf::load_llama(&d).unwrap();
    assert!(m.cfg.tie_word_embeddings);
    // rope_theta: the one in rope_parameters
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    v["rope_theta"] = 10000.0.into();
    v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 50000.0});
    assert_eq!(LmConfig::from_hf(&v).unwrap().rope_theta, 50000.0);
    let mut v3 = V3Config::tiny(40).to_hf();
    v3["rope_theta"] = 10000.0.into();
    v3["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 50000.0});
    assert_eq!(V3Config::from_hf(&v3).unwrap().rope_theta, 50000.0);
    // q_lora_rank: null is no LoRA; absent is transformers' default
    v3["q_lora_rank"] = Value::Null;
    assert_eq!(V3Config::from_hf(&v3).unwrap().q_lora_rank, 0);
    v3.as_object_mut().unwrap().remove("q_lora_rank");
    assert_eq!(V3Config::from_hf(&v3).unwrap().q_lora_rank, 1536);
}

#[test]
fn weights_must_match_the_config_exactly_and_shards_load() {
    let d = dir("llama-weights");
    let want = write_llama(&d);
    let tensors = io::load_safetensors(&d.join("model.safetensors")).unwrap();
    let all: Vec<(String, Tensor)> = tensors.clone().into_iter().collect();

    // an extra layer's tensor (weights of a deeper model): refused, naming it
    let mut extra = all.clone();
    extra.push((
        "model.layers.5.mlp.up_proj.weight".into(),
        Tensor::zeros(&[32, 16]),
    ));
    io::save_safetensors(&d.join("model.safetensors"), &extra, DType::F32, None).unwrap();
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(e.contains("model.layers.5.mlp.up_proj.weight"), "{e}");
    // a RoPE inv_freq buffer is not a weight and is passed over
    let mut buffers = all.clone();
    buffers.push((
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        Tensor::zeros(&[4]),
    ));
    io::save_safetensors(&d.join("model.safetensors"), &buffers, DType::F32, None).unwrap();
    hf::load_llama(&d).unwrap();
    // a quantized checkpoint is named as such
    let mut quant = all.clone();
    quant.push((
        "model.layers.0.mlp.up_proj.weight_scale_inv".into(),
        Tensor::zeros(&[1, 1]),
    ));
    io::save_safetensors(&d.join("model.safetensors"), &quant, DType::F32, None).unwrap();
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(
        e.contains("quantized") && e.contains("weight_scale_inv"),
        "{e}"
    );
    // a missing one
    let missing: Vec<(String, Tensor)> = all
        .iter()
        .filter(|(n, _)| n != "model.norm.weight")
        .cloned()
        .collect();
    io::save_safetensors(&d.join("model.safetensors"), &missing, DType::F32, None).unwrap();
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(
        e.contains("model.norm.weight") && e.contains("missing"),
        "{e}"
    );

    // two shards and an index, as `save_pretrained` writes large models
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let (a, b) = all.split_at(all.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        io::save_safetensors(&d.join(file), part, DType::F32, None).unwrap();
        for (n, _) in part {
            map.insert(n.clone(), file.into());
        }
    }
    std::fs::write(
        d.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let (_, m) = hf::load_llama(&d).unwrap();
    assert_eq!(logits_of(&m), want);

    // an index that does not describe its shards, or points outside the folder, is refused
    let write_index = |map: &serde_json::Map<String, Value>| {
        let index = json!({"metadata": {}, "weight_map": map}).to_string();
        std::fs::write(d.join("model.safetensors.index.json"), index).unwrap();
    };
    let (first, second) = (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    );
    let name = a[0].0.clone();
    for (value, says) in [
        (
            json!("../model-00001-of-00002.safetensors"),
            "not the name of a file in this folder",
        ),
        (
            json!("/tmp/model-00001-of-00002.safetensors"),
            "not the name of a file in this folder",
        ),
        (json!(7), "not the name of a file in this folder"),
        (json!(second), "but it is in"),
    ] {
        let mut bad = map.clone();
        bad.insert(name.clone(), value.clone());
        write_index(&bad);
        let e = hf::load_llama(&d).err().unwrap().to_string();
        assert!(e.contains(&name) && e.contains(says), "{value}: {e}");
    }
    // a tensor listed that no shard holds
    let mut extra = map.clone();
    extra.insert("model.layers.9.mlp.up_proj.weight".into(), first.into());
    write_index(&extra);
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(e.contains("does not hold it"), "{e}");
    // a tensor in two shards
    write_index(&map);
    let mut b_and_one = b.to_vec();
    b_and_one.push(a[0].clone());
    io::save_safetensors(&d.join(second), &b_and_one, DType::F32, None).unwrap();
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(e.contains(&name) && e.contains("two shards"), "{e}");
}

#[test]
fn v3_scoring_routing_and_activation_settings_are_refused_by_name() {
    let base = V3Config::tiny(40).to_hf();
    V3Config::from_hf(&base).unwrap();
    // DeepSeek-V3's own value is taken
    let mut every_layer = base.clone();
    every_layer["moe_layer_freq"] = json!(1);
    V3Config::from_hf(&every_layer).unwrap();
    for (key, value) in [
        ("scoring_func", json!("softmax")),
        ("topk_method", json!("greedy")),
        ("hidden_act", json!("gelu")),
        ("attention_bias", json!(true)),
        ("moe_layer_freq", json!(2)),
        // `transformers` reads these as the RoPE width and a key/value head count (they were
        // passed over, and its logits differed)
        ("head_dim", json!(3)),
        ("num_key_value_heads", json!(1)),
        ("q_lora_rank", json!(0)),
    ] {
        let mut v = base.clone();
        v[key] = value;
        let e = V3Config::from_hf(&v).err().unwrap().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
    // the values `transformers` derives itself are taken
    let mut same = base.clone();
    same["head_dim"] = base["qk_rope_head_dim"].clone();
    same["num_key_value_heads"] = base["num_attention_heads"].clone();
    V3Config::from_hf(&same).unwrap();
}

/// FP8 weights under a `quantization_config` are refused when the checkpoint has no scales for
/// them (they were read as unscaled codes, and the logits were finite and wrong); the same
/// weights without a `quantization_config` are plain E4M3 numbers, and f32 weights under one
/// (a dequantized copy that kept its config) are read as they are.
#[test]
fn fp8_weights_a_quantization_config_scales_are_refused_without_their_scales() {
    let d = dir("fp8-unscaled");
    write_llama(&d);
    let vars = hf::load_llama(&d).unwrap().0;
    let quant = json!({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]});
    // f32 weights under a quantization_config: read as they are
    edit_config(&d, |v| v["quantization_config"] = quant.clone());
    hf::load_llama(&d).unwrap();
    // E4M3 weights under it, with no `weight_scale_inv`: refused, naming a tensor and its dtype
    io::save_safetensors(
        &d.join("model.safetensors"),
        &vars.all(),
        DType::F8E4M3,
        None,
    )
    .unwrap();
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(
        e.contains("F8_E4M3")
            && e.contains("quantization_config")
            && e.contains("weight_scale_inv"),
        "{e}"
    );
    assert!(e.contains("`model.") || e.contains("`lm_head"), "{e}");
    // the same weights without it: plain E4M3 numbers
    edit_config(&d, |v| {
        v.as_object_mut().unwrap().remove("quantization_config");
    });
    hf::load_llama(&d).unwrap();
    edit_config(&d, |v| v["quantization_config"] = Value::Null);
    hf::load_llama(&d).unwrap();
    // with its scales there, the checkpoint is refused as the quantized one it is
    edit_config(&d, |v| v["quantization_config"] = quant.clone());
    let mut with_scales = vars.all();
    with_scales.push((
        "model.layers.0.mlp.up_proj.weight_scale_inv".into(),
        ferrolab_tensor::Tensor::from_vec(vec![1.0], &[1, 1]).unwrap(),
    ));
    io::save_safetensors(
        &d.join("model.safetensors"),
        &with_scales,
        DType::F8E4M3,
        None,
    )
    .unwrap();
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(e.contains("belongs to a quantized checkpoint"), "{e}");
    // DeepSeek-V3 directories are checked the same way
    let d = dir("fp8-unscaled-v3");
    let cfg = V3Config::tiny(40);
    let vars = Vars::new();
    ferrolab_models::DeepseekV3::new(&vars, cfg.clone()).unwrap();
    ferrolab_models::deepseek_v3::save_hf(&d, &cfg, &vars, false).unwrap();
    ferrolab_models::deepseek_v3::load_hf(&d).unwrap();
    edit_config(&d, |v| v["quantization_config"] = quant.clone());
    let tensors: Vec<(String, ferrolab_tensor::Tensor)> =
        io::load_safetensors(&d.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    io::save_safetensors(&d.join("model.safetensors"), &tensors, DType::F8E4M3, None).unwrap();
    let e = ferrolab_models::deepseek_v3::load_hf(&d)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("F8_E4M3") && e.contains("weight_scale_inv"),
        "{e}"
    );
}

/// A value of the wrong type is refused with its key: `serde_json` alone said only "invalid
/// type: string \"64\", expected usize", leaving the user to search the file.
#[test]
fn values_of_the_wrong_type_are_refused_by_key() {
    let llama = serde_json::to_value(llama_cfg()).unwrap();
    let v3 = V3Config::tiny(40).to_hf();
    for (key, value) in [
        ("hidden_size", json!("16")),
        ("num_hidden_layers", json!(1.5)),
        ("rms_norm_eps", json!("small")),
        ("tie_word_embeddings", json!("no")),
    ] {
        let mut v = llama.clone();
        v[key] = value.clone();
        let e = LmConfig::from_hf(&v).err().unwrap().to_string();
        assert!(e.contains(&format!("`{key}`")), "llama {key}: {e}");
        assert!(e.contains("invalid type"), "llama {key}: {e}");
        let mut v = v3.clone();
        v[key] = value;
        let e = V3Config::from_hf(&v).err().unwrap().to_string();
        assert!(e.contains(&format!("`{key}`")), "v3 {key}: {e}");
    }
    let mut v = v3.clone();
    v["n_routed_experts"] = json!([4]);
    let e = V3Config::from_hf(&v).err().unwrap().to_string();
    assert!(e.contains("`n_routed_experts`"), "{e}");
    // a value the reader moves to the top level is named where the file has it
    let mut v = llama.clone();
    v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": "big"});
    let e = LmConfig::from_hf(&v).err().unwrap().to_string();
    assert!(e.contains("`rope_parameters.rope_theta`"), "{e}");
}

/// A config far larger than its weights is refused before the model is built (one with a
/// 4M-token vocabulary and 4096 wide aborted the process allocating 64 GiB); a hidden_size
/// of 0 is named as such (the message blamed head_dim).
#[test]
fn a_config_far_larger_than_its_weights_is_refused_before_building() {
    let d = dir("llama-huge");
    write_llama(&d);
    let original = std::fs::read_to_string(d.join("config.json")).unwrap();
    edit_config(&d, |v| {
        v["vocab_size"] = json!(4_194_304);
        v["hidden_size"] = json!(4096);
        v["num_attention_heads"] = json!(512);
        v["num_key_value_heads"] = json!(512);
        v["head_dim"] = json!(8);
    });
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(
        e.contains("far more than") && e.contains("config.json"),
        "{e}"
    );
    std::fs::write(d.join("config.json"), &original).unwrap();
    edit_config(&d, |v| v["hidden_size"] = json!(0));
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(e.contains("hidden_size") && !e.contains("head_dim"), "{e}");
    // the same for a DeepSeek-V3 folder
    let v3 = dir("v3-huge");
    let cfg = V3Config::tiny(40);
    let vars = Vars::new();
    let _m = ferrolab_models::DeepseekV3::new(&vars, cfg.clone()).unwrap();
    ferrolab_models::deepseek_v3::save_hf(&v3, &cfg, &vars, true).unwrap();
    edit_config(&v3, |v| {
        v["vocab_size"] = json!(4_194_304);
        v["hidden_size"] = json!(4096);
    });
    let e = ferrolab_models::deepseek_v3::load_hf(&v3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("far more than"), "{e}");
}

/// ferrolab's dense V3 variant (no routed experts) is exported as all-dense layers, which
/// `transformers` builds as such (it would build MoE blocks from first_k_dense_replace on).
#[test]
fn a_v3_without_routed_experts_exports_as_all_dense_layers() {
    let dense = V3Config {
        n_routed_experts: 0,
        ..V3Config::tiny(40)
    };
    assert!(dense.first_k_dense_replace < dense.num_hidden_layers);
    let v = dense.to_hf();
    assert_eq!(v["first_k_dense_replace"], json!(dense.num_hidden_layers));
    let back = V3Config::from_hf(&v).unwrap();
    assert_eq!(back.num_params(), dense.num_params());
    // with routed experts the value is kept
    let moe = V3Config::tiny(40);
    assert_eq!(
        moe.to_hf()["first_k_dense_replace"],
        json!(moe.first_k_dense_replace)
    );
}

#[test]
fn a_tied_models_stored_head_copy_is_passed_over() {
    let d = dir("llama-tied");
    ferrolab_tensor::rng::manual_seed(3);
    let cfg = LmConfig {
        tie_word_embeddings: true,
        ..llama_cfg()
    };
    let vars = Vars::new();
    let m = ferrolab_models::Lm::new(&vars, cfg.clone()).unwrap();
    let mut v = serde_json::to_value(&cfg).unwrap();
    v["model_type"] = "llama".into();
    std::fs::write(d.join("config.json"), v.to_string()).unwrap();
    let mut all = vars.all();
    let emb = all
        .iter()
        .find(|(n, _)| n == "model.embed_tokens.weight")
        .unwrap()
        .1
        .clone();
    all.push(("lm_head.weight".into(), emb));
    io::save_safetensors(&d.join("model.safetensors"), &all, DType::F32, None).unwrap();
    let (_, back) = hf::load_llama(&d).unwrap();
    assert_eq!(logits_of(&back), logits_of(&m));
    // another leftover next to it is still refused
    all.push(("lm_head.bias".into(), Tensor::zeros(&[30])));
    io::save_safetensors(&d.join("model.safetensors"), &all, DType::F32, None).unwrap();
    let e = hf::load_llama(&d).err().unwrap().to_string();
    assert!(e.contains("lm_head.bias"), "{e}");
}

/// As `transformers` 5.24 reads them: a non-empty `rope_scaling` wins whole over
/// `rope_parameters` (whose type and base are then not looked at), with its own base or else the
/// top-level one; absent keys take the config class's defaults (no `num_key_value_heads` is
/// multi-head attention); `swish` is SiLU.
#[test]
fn rope_precedence_defaults_and_aliases_are_transformers() {
    let d = dir("llama-defaults");
    write_llama(&d);
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&d);
    let v3_base = V3Config::tiny(40).to_hf();
    let theta_of = |edit: &dyn Fn(&mut Value)| {
        let (mut l, mut v) = (base.clone(), v3_base.clone());
        edit(&mut l);
        edit(&mut v);
        let (l, v) = (LmConfig::from_hf(&l), V3Config::from_hf(&v));
        (l.map(|c| c.rope_theta), v.map(|c| c.rope_theta))
    };
    let params = json!({"rope_type": "default", "rope_theta": 10000.0});
    let cases: Vec<(Value, f32)> = vec![
        // rope_scaling without a base: the top-level one, not rope_parameters'
        (json!({"rope_type": "default"}), 500.0),
        (json!({"rope_type": "default", "rope_theta": 700.0}), 700.0),
        // an empty rope_scaling is no setting: rope_parameters' base
        (json!({}), 10000.0),
    ];
    for (scaling, want) in cases {
        let (l, v) = theta_of(&|c: &mut Value| {
            c["rope_theta"] = 500.0.into();
            c["rope_parameters"] = params.clone();
            c["rope_scaling"] = scaling.clone();
        });
        assert_eq!((l.unwrap(), v.unwrap()), (want, want), "{scaling}");
    }
    // rope_parameters of another type behind a default rope_scaling is not used
    let (l, v) = theta_of(&|c: &mut Value| {
        c["rope_scaling"] = json!({"type": "default"});
        c["rope_parameters"] = json!({"rope_type": "linear", "factor": 2.0});
    });
    assert!(l.is_ok() && v.is_ok(), "{l:?} {v:?}");
    // ... but a scaled rope_scaling is refused by name
    let (l, v) = theta_of(&|c: &mut Value| {
        c["rope_scaling"] = json!({"rope_type": "yarn", "factor": 40.0});
    });
    for e in [l.unwrap_err().to_string(), v.unwrap_err().to_string()] {
        assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
    }

    // absent keys: LlamaConfig's and DeepseekV3Config's defaults
    let without = |v: &Value, keys: &[&str]| {
        let mut v = v.clone();
        for k in keys {
            v.as_object_mut().unwrap().remove(*k);
        }
        v
    };
    let l = LmConfig::from_hf(&without(
        &base,
        &["num_key_value_heads", "max_position_embeddings"],
    ))
    .unwrap();
    assert_eq!(
        (l.num_key_value_heads, l.max_position_embeddings),
        (2, 2048)
    );
    let mut null_kv = base.clone();
    null_kv["num_key_value_heads"] = Value::Null;
    assert_eq!(LmConfig::from_hf(&null_kv).unwrap().num_key_value_heads, 2);
    let v = V3Config::from_hf(&without(
        &v3_base,
        &[
            "routed_scaling_factor",
            "first_k_dense_replace",
            "n_shared_experts",
            "max_position_embeddings",
        ],
    ))
    .unwrap();
    assert_eq!(
        (
            v.routed_scaling_factor,
            v.first_k_dense_replace,
            v.n_shared_experts,
            v.max_position_embeddings
        ),
        (2.5, 3, 1, 4096)
    );
    // `swish` is `silu`
    let mut swish = base.clone();
    swish["hidden_act"] = "swish".into();
    assert!(LmConfig::from_hf(&swish).is_ok());
    let mut swish = v3_base.clone();
    swish["hidden_act"] = "swish".into();
    assert!(V3Config::from_hf(&swish).is_ok());
}

/// A V3 checkpoint of a tied model that stores its head: a copy of the embedding is passed
/// over, a different head is used, untied (as for `llama` and in `transformers`); a tensor with
/// no elements (what `transformers` saves for `n_shared_experts: 0`) holds nothing to place.
#[test]
fn v3_stored_heads_and_empty_tensors_load_as_in_transformers() {
    let d = dir("v3-tied");
    ferrolab_tensor::rng::manual_seed(4);
    let cfg = V3Config {
        tie_word_embeddings: true,
        n_shared_experts: 0,
        ..V3Config::tiny(40)
    };
    let vars = Vars::new();
    let m = ferrolab_models::DeepseekV3::new(&vars, cfg.clone()).unwrap();
    let moe_layer = cfg.first_k_dense_replace;
    assert!(moe_layer < cfg.num_hidden_layers);
    ferrolab_models::deepseek_v3::save_hf(&d, &cfg, &vars, false).unwrap();
    let logits =
        |m: &ferrolab_models::DeepseekV3| no_grad(|| m.forward(&[1, 7, 3], 1, 3)).unwrap().to_vec();
    let want = logits(&m);
    let file = d.join("model.safetensors");
    let mut t = io::load_safetensors(&file).unwrap();
    let emb = t["model.embed_tokens.weight"].clone();
    t.insert("lm_head.weight".into(), emb.clone());
    t.insert(
        format!("model.layers.{moe_layer}.mlp.shared_experts.gate_proj.weight"),
        Tensor::zeros(&[0, cfg.hidden_size]),
    );
    let save = |t: &std::collections::BTreeMap<String, Tensor>| {
        let all: Vec<(String, Tensor)> = t.clone().into_iter().collect();
        io::save_safetensors(&file, &all, DType::F32, None).unwrap();
    };
    save(&t);
    let (_, back) = ferrolab_models::deepseek_v3::load_hf(&d).unwrap();
    assert!(back.cfg.tie_word_embeddings);
    assert_eq!(logits(&back), want);
    // a head that differs: used, untied
    t.insert("lm_head.weight".into(), emb.mul_scalar(-1.0));
    save(&t);
    let (_, back) = ferrolab_models::deepseek_v3::load_hf(&d).unwrap();
    assert!(!back.cfg.tie_word_embeddings);
    assert_ne!(logits(&back), want);
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

/// Past `max_position_embeddings`: refused by the plain loader, computed by the `_for` loaders
/// (RoPE has no limit of its own; `transformers` computes such sequences), with the earlier
/// positions' logits unchanged (causal; up to rounding, the products differ in length).
#[test]
fn sequences_past_max_positions_load_with_the_for_loaders() {
    let d = dir("llama-long");
    write_llama(&d);
    let ids: Vec<u32> = (0..20).map(|i| (i * 7 % 30) as u32).collect();
    let (_, short) = hf::load_llama(&d).unwrap();
    assert_eq!(short.cfg.max_position_embeddings, 16);
    let e = no_grad(|| short.forward(&ids, 1, 20))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
    let (_, long) = hf::load_llama_for(&d, 20).unwrap();
    let all = no_grad(|| long.forward(&ids, 1, 20)).unwrap().to_vec();
    let head = no_grad(|| short.forward(&ids[..10], 1, 10))
        .unwrap()
        .to_vec();
    close(&all[..head.len()], &head);
    let _ = std::fs::remove_dir_all(&d);

    let d = dir("v3-long");
    ferrolab_tensor::rng::manual_seed(5);
    let cfg = V3Config {
        max_position_embeddings: 16,
        ..V3Config::tiny(40)
    };
    let vars = Vars::new();
    ferrolab_models::DeepseekV3::new(&vars, cfg.clone()).unwrap();
    ferrolab_models::deepseek_v3::save_hf(&d, &cfg, &vars, false).unwrap();
    let (_, short) = ferrolab_models::deepseek_v3::load_hf(&d).unwrap();
    assert!(no_grad(|| short.forward(&ids, 1, 20)).is_err());
    let (_, long) = ferrolab_models::deepseek_v3::load_hf_for(&d, 20).unwrap();
    let all = no_grad(|| long.forward(&ids, 1, 20)).unwrap().to_vec();
    let head = no_grad(|| short.forward(&ids[..10], 1, 10))
        .unwrap()
        .to_vec();
    close(&all[..head.len()], &head);
}
