//! `Model::forward_backward`: a micro-batch run as parts of whole sequences side by side
//! gives the gradients, losses and expert loads of the whole batch; a loss that does not split
//! by sequence (ignored targets, the batch-wide Switch/GShard balance loss) runs whole. Each
//! test runs on a pool of two threads (two parts), whatever the machine has.

use ferrolab_models::deepseek_v3::V3Config;
use ferrolab_models::{Balance, LmConfig, LossValues, Model, ModelConfig};
use ferrolab_nn::Vars;
use ferrolab_tensor::rng;

const B: usize = 4;
const T: usize = 12;

/// `f` on a pool of two threads: `forward_backward` splits the batch in two there.
fn on_two_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(f)
}
const V: usize = 50;

fn llama(recompute: bool) -> ModelConfig {
    ModelConfig::Llama(LmConfig {
        recompute,
        vocab_size: V,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 40,
        ..LmConfig::tiny(V)
    })
}

fn v3(balance: Balance, recompute: bool) -> ModelConfig {
    ModelConfig::DeepseekV3(V3Config {
        recompute,
        hidden_size: 32,
        intermediate_size: 48,
        moe_intermediate_size: 16,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        kv_lora_rank: 16,
        qk_nope_head_dim: 8,
        qk_rope_head_dim: 8,
        v_head_dim: 12,
        n_routed_experts: 8,
        n_shared_experts: 1,
        num_experts_per_tok: 2,
        n_group: 4,
        topk_group: 2,
        max_position_embeddings: 64,
        num_nextn_predict_layers: 2,
        moe_balance: balance,
        aux_loss_alpha: 0.01,
        ..V3Config::tiny(V)
    })
}

fn batch(b: usize) -> (Vec<u32>, Vec<i64>) {
    let ids: Vec<u32> = (0..b * T).map(|i| ((i * 17 + 5) % V) as u32).collect();
    let tg = ids
        .iter()
        .map(|&i| ((i * 7 + 3) as usize % V) as i64)
        .collect();
    (ids, tg)
}

/// A model with seeded weights, and its parameters.
fn build(cfg: &ModelConfig) -> (Model, Vars) {
    rng::manual_seed(9);
    let vars = Vars::new();
    (Model::new(&vars, cfg).unwrap(), vars)
}

fn grads(vars: &Vars) -> Vec<Vec<f32>> {
    vars.tensors()
        .iter()
        .map(|p| p.grad().map(|g| g.to_vec()).unwrap_or_default())
        .collect()
}

/// The plain step: `loss(...).total * scale`, one backward; its values and gradients.
fn plain(cfg: &ModelConfig, ids: &[u32], tg: &[i64], scale: f32) -> (LossValues, Vec<Vec<f32>>) {
    let (m, vars) = build(cfg);
    let p = m.loss(ids, tg, ids.len() / T, T).unwrap();
    let values = LossValues {
        total: p.total.item().unwrap(),
        main: p.main,
        mtp: p.mtp,
        balance: p.balance,
        loads: p.loads,
    };
    p.total.mul_scalar(scale).backward().unwrap();
    (values, grads(&vars))
}

fn split(cfg: &ModelConfig, ids: &[u32], tg: &[i64], scale: f32) -> (LossValues, Vec<Vec<f32>>) {
    let (m, vars) = build(cfg);
    let b = ids.len() / T;
    let values = on_two_threads(|| m.forward_backward(ids, tg, b, T, scale)).unwrap();
    (values, grads(&vars))
}

fn close(a: f32, b: f32, what: &str) {
    assert!(
        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
        "{what}: {a} vs {b}"
    );
}

#[test]
fn split_micro_batches_give_the_whole_batch_step() {
    let cases = [
        ("llama", llama(false), 4),
        ("llama, 3 sequences", llama(false), 3),
        ("llama, recomputed layers", llama(true), 4),
        ("v3", v3(Balance::AuxFree, false), 4),
        ("v3, 3 sequences", v3(Balance::AuxFree, false), 3),
        ("v3, recomputed attention", v3(Balance::AuxFree, true), 4),
    ];
    for (name, cfg, b) in cases {
        let (ids, tg) = batch(b);
        let (want, want_g) = plain(&cfg, &ids, &tg, 0.5);
        let (got, got_g) = split(&cfg, &ids, &tg, 0.5);
        close(got.total, want.total, name);
        close(got.main, want.main, name);
        close(got.balance, want.balance, name);
        assert_eq!(got.mtp.len(), want.mtp.len(), "{name}");
        for (a, b) in got.mtp.iter().zip(&want.mtp) {
            close(*a, *b, name);
        }
        assert_eq!(
            got.loads, want.loads,
            "{name}: every token routed as in the whole batch"
        );
        assert_eq!(got_g.len(), want_g.len());
        for (i, (g, w)) in got_g.iter().zip(&want_g).enumerate() {
            assert_eq!(
                g.len(),
                w.len(),
                "{name}: parameter {i} has a gradient in one only"
            );
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-4);
            for (x, y) in g.iter().zip(w) {
                assert!(
                    (x - y).abs() <= 2e-5 * scale,
                    "{name}: parameter {i}: {x} vs {y}"
                );
            }
        }
        // and the same bits on every run
        for _ in 0..3 {
            let (again, again_g) = split(&cfg, &ids, &tg, 0.5);
            assert_eq!((again, again_g), (got.clone(), got_g.clone()), "{name}");
        }
    }
}

#[test]
fn losses_that_do_not_split_by_sequence_run_whole() {
    let (ids, mut tg) = batch(B);
    // the batch-wide balance loss: exactly the plain step
    let cfg = v3(Balance::AuxLoss, false);
    assert_eq!(split(&cfg, &ids, &tg, 1.0), plain(&cfg, &ids, &tg, 1.0));
    // an ignored target: each part's mean would weigh its tokens differently
    tg[5] = -100;
    for cfg in [llama(false), v3(Balance::AuxFree, false)] {
        assert_eq!(split(&cfg, &ids, &tg, 0.25), plain(&cfg, &ids, &tg, 0.25));
    }
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let (ids, tg) = batch(B);
    let (m, _) = build(&llama(false));
    let short_ids = m.forward_backward(&ids[..B * T - 1], &tg, B, T, 1.0);
    let e = short_ids.unwrap_err().to_string();
    assert!(e.contains("47 ids for batch 4 x time 12"), "{e}");
    let short_targets = m.forward_backward(&ids, &tg[..B * T - 2], B, T, 1.0);
    let e = short_targets.unwrap_err().to_string();
    assert!(e.contains("46 targets"), "{e}");
}
