//! Text generation with a KV cache: greedy, temperature, top-k and top-p (nucleus) sampling.

use ferrolab_models::Model;
use ferrolab_tensor::rng::Rng;

use crate::error::{Result, TrainError};

/// Most tokens reserved up front: `max_tokens` is a user's number, and the output grows past
/// this as tokens come.
const CAPACITY_HINT: usize = 4096;

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOpts {
    /// Tokens to generate.
    pub max_tokens: usize,
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
}

impl SampleOpts {
    /// Refuses a temperature that is not a finite number >= 0 and a `top_p` outside (0, 1]
    /// ([`generate`] checks this itself; a caller may check before printing anything).
    pub fn check(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(TrainError::Generate(format!(
                "temperature {} must be a finite number >= 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(TrainError::Generate(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

impl Default for SampleOpts {
    fn default() -> Self {
        SampleOpts {
            max_tokens: 200,
            temperature: 0.8,
            top_k: 0,
            top_p: 0.95,
            seed: 0,
        }
    }
}

/// Picks a token from `logits` (one row of V values).
pub fn sample(logits: &[f32], opts: &SampleOpts, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
                if v > b.1 {
                    (i, v)
                } else {
                    b
                }
            })
            .0 as u32
    };
    if opts.temperature <= 0.0 || opts.top_k == 1 {
        return argmax();
    }
    // candidates sorted by logit, best first
    let mut idx: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    if idx.is_empty() {
        return argmax();
    }
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if opts.top_k > 0 {
        idx.truncate(opts.top_k);
    }
    let max = logits[idx[0]];
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / opts.temperature) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if opts.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (j, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= opts.top_p as f64 {
                keep = j + 1;
                break;
            }
        }
        probs.truncate(keep);
        idx.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.uniform() as f64 * total;
    for (j, p) in probs.iter().enumerate() {
        u -= p;
        if u < 0.0 {
            return idx[j] as u32;
        }
    }
    idx[probs.len() - 1] as u32
}

/// Generates up to `opts.max_tokens` tokens after `prompt`, calling `on_token` with each.
/// The prompt is fed once, then one token per step from the KV cache. When the context is
/// full, the cache is rebuilt from the last half of it (the model never sees more than
/// `max_position_embeddings` tokens).
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &SampleOpts,
    on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    generate_within(model, prompt, opts, None, on_token)
}

/// [`generate`], never choosing an id at or above `vocab` (when the tokenizer has fewer ids
/// than the model's head: those have no text).
pub fn generate_within(
    model: &Model,
    prompt: &[u32],
    opts: &SampleOpts,
    vocab: Option<usize>,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if vocab == Some(0) {
        return Err(TrainError::Generate("an empty vocabulary".into()));
    }
    opts.check()?;
    let max_ctx = model.config().max_position_embeddings();
    let mut rng = Rng::new(opts.seed);
    let mut all: Vec<u32> = prompt.to_vec();
    let start = all.len().saturating_sub(max_ctx - 1);
    let mut cache = model.new_cache();
    let mut logits = model.forward_cached(&all[start..], &mut cache)?;
    let mut out = Vec::with_capacity(opts.max_tokens.min(CAPACITY_HINT));
    for i in 0..opts.max_tokens {
        // (an infinite logit too: greedy decoding picked it, sampling never drew it)
        if let Some(bad) = logits.iter().find(|x| !x.is_finite()) {
            return Err(TrainError::Generate(format!(
                "the model's logits for generated token {i} hold {bad}: its weights are not \
                 finite (a diverged or damaged run?)"
            )));
        }
        if let Some(v) = vocab.filter(|&v| v < logits.len()) {
            logits[v..].fill(f32::NEG_INFINITY);
        }
        let next = sample(&logits, opts, &mut rng);
        on_token(next);
        out.push(next);
        all.push(next);
        if cache.len() + 1 > max_ctx {
            cache = model.new_cache();
            let keep = (max_ctx / 2).max(1);
            logits = model.forward_cached(&all[all.len() - keep..], &mut cache)?;
        } else {
            logits = model.forward_cached(&[next], &mut cache)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_models::{LmConfig, ModelConfig};
    use ferrolab_nn::Vars;
    use ferrolab_tensor::rng;

    #[test]
    fn greedy_and_degenerate_settings_pick_the_argmax() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        let mut r = Rng::new(1);
        let greedy = SampleOpts {
            temperature: 0.0,
            ..SampleOpts::default()
        };
        assert_eq!(sample(&logits, &greedy, &mut r), 1);
        let k1 = SampleOpts {
            top_k: 1,
            ..SampleOpts::default()
        };
        let p0 = SampleOpts {
            top_p: 1e-6,
            ..SampleOpts::default()
        };
        for _ in 0..50 {
            assert_eq!(sample(&logits, &k1, &mut r), 1);
            assert_eq!(sample(&logits, &p0, &mut r), 1);
        }
    }

    #[test]
    fn sampling_follows_the_softmax_and_respects_top_k() {
        let logits = [0.0f32, (2f32).ln(), (3f32).ln(), -1e9];
        let opts = SampleOpts {
            temperature: 1.0,
            top_p: 1.0,
            ..SampleOpts::default()
        };
        let mut r = Rng::new(7);
        let mut counts = [0usize; 4];
        let n = 60_000;
        for _ in 0..n {
            counts[sample(&logits, &opts, &mut r) as usize] += 1;
        }
        // probabilities 1/6, 2/6, 3/6, 0
        for (c, p) in counts.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 0.0]) {
            let f = *c as f64 / n as f64;
            assert!((f - p).abs() < 0.01, "{counts:?}");
        }
        let k2 = SampleOpts { top_k: 2, ..opts };
        for _ in 0..200 {
            assert!(sample(&logits, &k2, &mut r) >= 1);
        }
        // top-p 0.5 keeps only the most likely (its 1/2 reaches 0.5)
        let p = SampleOpts { top_p: 0.5, ..opts };
        for _ in 0..200 {
            assert_eq!(sample(&logits, &p, &mut r), 2);
        }
    }

    #[test]
    fn cached_greedy_generation_equals_full_recomputation() {
        rng::manual_seed(5);
        let cfg = LmConfig {
            vocab_size: 50,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            max_position_embeddings: 24,
            initializer_range: 0.2,
            ..LmConfig::tiny(50)
        };
        let vars = Vars::new();
        let m = Model::new(&vars, &ModelConfig::Llama(cfg)).unwrap();
        let prompt = [3u32, 14, 15, 9, 2];
        let opts = SampleOpts {
            max_tokens: 15,
            temperature: 0.0,
            ..SampleOpts::default()
        };
        let got = generate(&m, &prompt, &opts, |_| {}).unwrap();
        // reference: the whole sequence through the uncached forward at every step
        let mut seq = prompt.to_vec();
        for _ in 0..15 {
            let t = seq.len();
            let logits = m.forward(&seq, 1, t).unwrap().to_vec();
            let last = &logits[(t - 1) * 50..t * 50];
            seq.push(sample(last, &opts, &mut Rng::new(0)));
        }
        assert_eq!(got, seq[prompt.len()..]);
        // past the context the cache is rebuilt and generation goes on
        let long = SampleOpts {
            max_tokens: 40,
            ..opts
        };
        assert_eq!(generate(&m, &prompt, &long, |_| {}).unwrap().len(), 40);
    }

    /// A one-layer model over 40 ids, seeded, with initial weights of this spread.
    fn small_model(seed: u64, initializer_range: f32) -> (Vars, Model) {
        rng::manual_seed(seed);
        let cfg = LmConfig {
            vocab_size: 40,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 2,
            max_position_embeddings: 16,
            initializer_range,
            ..LmConfig::tiny(40)
        };
        let vars = Vars::new();
        let m = Model::new(&vars, &ModelConfig::Llama(cfg)).unwrap();
        (vars, m)
    }

    #[test]
    fn bad_settings_and_non_finite_weights_are_errors() {
        let (vars, m) = small_model(3, 0.02);
        let run = |o: SampleOpts| generate(&m, &[1, 2, 3], &o, |_| {});
        let ok = SampleOpts {
            max_tokens: 3,
            ..SampleOpts::default()
        };
        assert_eq!(run(ok).unwrap().len(), 3);
        for bad in [
            SampleOpts {
                temperature: f32::NAN,
                ..ok
            },
            SampleOpts {
                temperature: f32::INFINITY,
                ..ok
            },
            SampleOpts { top_p: 1.5, ..ok },
            SampleOpts { top_p: 0.0, ..ok },
        ] {
            let e = run(bad).unwrap_err().to_string();
            assert!(e.contains("temperature") || e.contains("top_p"), "{e}");
        }
        // a NaN weight: an error, not token 0 over and over
        let (name, w) = vars
            .all()
            .into_iter()
            .find(|(n, _)| n.ends_with("norm.weight"))
            .unwrap();
        w.copy_from(&ferrolab_tensor::Tensor::full(w.shape(), f32::NAN))
            .unwrap();
        let e = run(ok).unwrap_err().to_string();
        assert!(e.contains("NaN") && e.contains("not finite"), "{name}: {e}");
        // an infinite weight of one output row: an infinite logit, an error too
        w.copy_from(&ferrolab_tensor::Tensor::full(w.shape(), 1.0))
            .unwrap();
        let (_, head) = vars
            .all()
            .into_iter()
            .find(|(n, _)| n == "lm_head.weight")
            .unwrap();
        head.update_data(|h| h[0] = f32::INFINITY).unwrap();
        for greedy in [true, false] {
            let opts = if greedy {
                SampleOpts {
                    temperature: 0.0,
                    ..ok
                }
            } else {
                ok
            };
            let e = run(opts).unwrap_err().to_string();
            assert!(
                e.contains("inf") && e.contains("not finite"),
                "{greedy}: {e}"
            );
        }
    }

    #[test]
    fn ids_past_the_vocabulary_are_never_generated() {
        let (_vars, m) = small_model(11, 0.5);
        let opts = SampleOpts {
            max_tokens: 60,
            temperature: 2.0,
            top_p: 1.0,
            ..SampleOpts::default()
        };
        // unrestricted, a hot sampler over 40 ids reaches past 10 ...
        let free = generate(&m, &[1, 2], &opts, |_| {}).unwrap();
        assert!(free.iter().any(|&i| i >= 10), "{free:?}");
        // ... and within a 10-id vocabulary it never does, sampling or greedy
        for o in [
            opts,
            SampleOpts {
                temperature: 0.0,
                ..opts
            },
        ] {
            let out = generate_within(&m, &[1, 2], &o, Some(10), |_| {}).unwrap();
            assert_eq!(out.len(), 60);
            assert!(out.iter().all(|&i| i < 10), "{out:?}");
        }
    }
}
