//! Parity with HF `transformers`' `DeepseekV3ForCausalLM`: logits of tiny random models
//! written by `fixtures/make_v3_golden.py` (q_lora_rank 0 and > 0, several expert groups,
//! shared experts, dense first layers, interleaved and half-split RoPE, norm_topk_prob on and
//! off, non-zero routing biases). CI reads the committed fixtures; it does not need PyTorch.

use std::path::Path;

use ferrolab_models::deepseek_v3::load_hf;
use ferrolab_tensor::{io, no_grad};

fn check(case: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v3")
        .join(case);
    let (_vars, m) = load_hf(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ids.json")).unwrap()).unwrap();
    let ids: Vec<u32> = ids["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let want = &io::load_safetensors(&dir.join("expected.safetensors")).unwrap()["logits"];
    let t = ids.len();
    assert_eq!(want.shape(), [t, m.cfg.vocab_size]);
    let got = no_grad(|| m.forward(&ids, 1, t)).unwrap().to_vec();
    let want = want.to_vec();
    let scale = want.iter().fold(0f32, |a, b| a.max(b.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{case}: max |ours - HF| = {worst:e}, logits up to {scale}");
    assert!(
        worst <= 1e-4 * scale.max(1.0),
        "{case}: max |ours - HF| = {worst:e} (logits up to {scale})"
    );
    // the cached decoding paths agree with HF as well
    for absorbed in [false, true] {
        let mut cache = ferrolab_models::MlaCache::new(absorbed);
        let mut last = Vec::new();
        for &id in &ids {
            last = m.forward_cached(&[id], &mut cache).unwrap();
        }
        let v = m.cfg.vocab_size;
        for (a, b) in last.iter().zip(&want[(t - 1) * v..]) {
            assert!(
                (a - b).abs() <= 1e-4 * scale.max(1.0),
                "{case} absorbed {absorbed}"
            );
        }
    }
}

#[test]
fn q_lora_0_with_a_dense_first_layer_matches_transformers() {
    check("qlora0_dense_first");
}

#[test]
fn q_lora_with_expert_groups_and_two_shared_experts_matches_transformers() {
    check("qlora_groups");
}

#[test]
fn half_split_rope_without_renormalisation_matches_transformers() {
    check("no_norm_halfsplit");
}
