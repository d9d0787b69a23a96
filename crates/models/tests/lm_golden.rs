//! Golden test against HF `transformers`' `LlamaForCausalLM` (the DeepSeek LLM architecture):
//! logits, loss and every parameter gradient of [`Lm`] with grouped-query attention.
//!
//! The fixture `tests/fixtures/lm_golden.safetensors` (workspace root) and the script that
//! wrote it, `tests/fixtures/make_lm_golden.py`, are committed; CI needs no PyTorch. The
//! script documents every stored tensor.
//!
//! Criterion, per tensor: `max_i |ours_i - ref_i| <= 1e-4 * max_i |ref_i|` (the reference is
//! the float64 answer for the stored float32 inputs).

use std::path::PathBuf;

use ferrolab_models::{Lm, LmConfig};
use ferrolab_nn::Vars;
use ferrolab_tensor::io;

fn close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 1e-4 * scale,
        "{name}: max error {err} vs scale {scale}"
    );
}

#[test]
fn matches_hf_llama_forward_and_backward() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/lm_golden.safetensors");
    let g = io::load_safetensors(&path).unwrap();
    let cfg = LmConfig {
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 64,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        tie_word_embeddings: false,
        initializer_range: 0.02,
        recompute: false,
    };
    let vars = Vars::new();
    let model = Lm::new(&vars, cfg).unwrap();
    // every parameter has an HF name present in the fixture, and the shapes agree
    io::load_into(&path, &vars.all()).unwrap();
    let ids: Vec<u32> = g["input_ids"].to_vec().iter().map(|&v| v as u32).collect();
    let tg: Vec<i64> = g["targets"].to_vec().iter().map(|&v| v as i64).collect();
    let logits = model.forward(&ids, 2, 10).unwrap();
    close("logits", &logits.to_vec(), &g["logits"].to_vec());
    let loss = model.loss(&ids, &tg, 2, 10).unwrap();
    close("loss", &loss.to_vec(), &g["loss"].to_vec());
    loss.backward().unwrap();
    let mut n = 0;
    for (name, p) in vars.all() {
        let want = &g[&format!("grad.{name}")];
        close(
            &format!("grad.{name}"),
            &p.grad().unwrap().to_vec(),
            &want.to_vec(),
        );
        n += 1;
    }
    assert_eq!(n, 2 * 9 + 3, "parameters checked");
}
