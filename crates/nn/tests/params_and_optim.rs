//! Named parameters on disk, and optimizer updates checked against hand-computed values of
//! PyTorch's documented update rules.

use std::collections::BTreeMap;

use ferrolab_nn::{clip_grad_norm, AdamW, AdamWConfig, Init, Optimizer, Sgd, SgdConfig, Vars};
use ferrolab_tensor::{Error, Tensor};

/// A scratch folder, removed when the test ends.
fn tmpdir(name: &str) -> ferrolab_data::TempFolder {
    ferrolab_data::TempFolder::new(&format!("nn-{name}")).unwrap()
}

fn model(vars: &Vars, width: usize) {
    vars.pp("layers.0.attn.wq")
        .var(
            "weight",
            &[width, 3],
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
        )
        .unwrap();
    vars.pp("layers.0.attn.wq")
        .var("bias", &[width], Init::Zeros)
        .unwrap();
}

#[test]
fn save_and_load_round_trip_by_name() {
    let dir = tmpdir("roundtrip");
    let path = dir.join("model.safetensors");
    let a = Vars::new();
    model(&a, 4);
    a.save(&path).unwrap();
    let b = Vars::new();
    model(&b, 4);
    assert_ne!(a.all()[0].1.to_vec(), b.all()[0].1.to_vec());
    b.load(&path).unwrap();
    for ((na, ta), (nb, tb)) in a.all().iter().zip(b.all().iter()) {
        assert_eq!(na, nb);
        assert_eq!(ta.to_vec(), tb.to_vec());
    }
    assert_eq!(a.all()[0].0, "layers.0.attn.wq.weight");
}

#[test]
fn load_reports_wrong_shape_with_name_and_both_shapes() {
    let dir = tmpdir("shape");
    let path = dir.join("model.safetensors");
    let a = Vars::new();
    model(&a, 4);
    a.save(&path).unwrap();
    let b = Vars::new();
    model(&b, 5);
    let before = b.all()[0].1.to_vec();
    let err = b.load(&path).unwrap_err();
    match &err {
        Error::TensorShape {
            name,
            expected,
            actual,
            ..
        } => {
            assert_eq!(name, "layers.0.attn.wq.weight");
            assert_eq!(expected, &vec![5, 3]);
            assert_eq!(actual, &vec![4, 3]);
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("layers.0.attn.wq.weight") && msg.contains("[4, 3]") && msg.contains("[5, 3]"),
        "{msg}"
    );
    // nothing was half-loaded
    assert_eq!(b.all()[0].1.to_vec(), before);
}

#[test]
fn load_reports_missing_tensor_and_bad_file() {
    let dir = tmpdir("missing");
    let path = dir.join("model.safetensors");
    let a = Vars::new();
    a.pp("x").var("weight", &[2], Init::Ones).unwrap();
    a.save(&path).unwrap();
    let b = Vars::new();
    b.pp("x").var("weight", &[2], Init::Ones).unwrap();
    b.pp("y").var("weight", &[2], Init::Ones).unwrap();
    let err = b.load(&path).unwrap_err().to_string();
    assert!(err.contains("y.weight") && err.contains("missing"), "{err}");

    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file at all").unwrap();
    let err = b.load(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    let err = b
        .load(&dir.join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
}

#[test]
fn duplicate_parameter_names_are_rejected() {
    let v = Vars::new();
    v.var("w", &[1], Init::Zeros).unwrap();
    assert!(v.var("w", &[1], Init::Zeros).is_err());
}

fn param(vals: &[f32]) -> Tensor {
    Tensor::from_slice(vals, &[vals.len()]).unwrap().into_var()
}

fn set_grad(p: &Tensor, g: &[f32]) {
    p.set_grad(Some(Tensor::from_slice(g, &[g.len()]).unwrap()))
        .unwrap();
}

/// One element under torch.optim.Adam / AdamW's documented update, in f64: the reference the
/// Adam tests compare with.
#[derive(Clone, Copy)]
struct AdamRef {
    w: f64,
    m: f64,
    v: f64,
    t: i32,
}

impl AdamRef {
    fn new(w: f64) -> AdamRef {
        AdamRef {
            w,
            m: 0.0,
            v: 0.0,
            t: 0,
        }
    }

    /// One update with gradient `g` (AdamW decays the weight; Adam adds `wd * w` to `g`).
    fn step(&mut self, g: f64, c: &AdamWConfig) {
        let (b1, b2) = (c.betas.0 as f64, c.betas.1 as f64);
        let (lr, wd) = (c.lr as f64, c.weight_decay as f64);
        let g = if c.decoupled {
            self.w *= 1.0 - lr * wd;
            g
        } else {
            g + wd * self.w
        };
        self.t += 1;
        self.m = b1 * self.m + (1.0 - b1) * g;
        self.v = b2 * self.v + (1.0 - b2) * g * g;
        let mh = self.m / (1.0 - b1.powi(self.t));
        let vh = self.v / (1.0 - b2.powi(self.t));
        self.w -= lr * mh / (vh.sqrt() + c.eps as f64);
    }
}

/// Steps an Adam/AdamW optimizer over one parameter starting at `w0` with these gradients
/// (one list per step) and compares every element after every step with [`AdamRef`].
fn check_against_reference(w0: &[f32], grads: &[Vec<f32>], cfg: AdamWConfig, tol: f64) -> Vec<f64> {
    let p = param(w0);
    let mut opt = AdamW::new(vec![("p".into(), p.clone())], cfg);
    let mut w: Vec<AdamRef> = w0.iter().map(|&x| AdamRef::new(x as f64)).collect();
    for (t, g) in grads.iter().enumerate() {
        set_grad(&p, g);
        opt.step().unwrap();
        let got = p.to_vec();
        for (j, r) in w.iter_mut().enumerate() {
            r.step(g[j] as f64, &cfg);
            assert!(
                (got[j] as f64 - r.w).abs() < tol,
                "step {}, element {j}: {} vs {}",
                t + 1,
                got[j],
                r.w
            );
        }
    }
    w.iter().map(|r| r.w).collect()
}

/// AdamW, two steps, by hand (torch.optim.AdamW's documented algorithm).
#[test]
fn adamw_matches_hand_computation() {
    let cfg = AdamWConfig {
        lr: 0.1,
        betas: (0.9, 0.99),
        eps: 1e-8,
        weight_decay: 0.5,
        decoupled: true,
    };
    check_against_reference(&[1.0, -2.0], &[vec![0.5, -1.0], vec![0.25, 2.0]], cfg, 1e-5);
}

/// AdamW over a parameter of several update chunks (the update runs in parallel over chunks
/// of 16,384 elements), against the same formula per element in f64.
#[test]
fn adamw_over_several_chunks_matches_hand_computation() {
    let n = 40_000;
    let w0: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let grads: Vec<Vec<f32>> = (1..=2)
        .map(|t| {
            (0..n)
                .map(|i| ((i * 53 + t * 11) % 97) as f32 / 48.0 - 1.0)
                .collect()
        })
        .collect();
    let cfg = AdamWConfig {
        lr: 0.05,
        betas: (0.9, 0.99),
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    check_against_reference(&w0, &grads, cfg, 1e-5);
}

/// Adam with L2 weight decay (torch.optim.Adam's weight_decay adds wd * w to the gradient).
#[test]
fn adam_l2_matches_hand_computation() {
    let cfg = AdamWConfig {
        lr: 0.01,
        betas: (0.9, 0.999),
        eps: 1e-8,
        weight_decay: 0.1,
        decoupled: false,
    };
    // Two steps. In the first, the decay term (0.1 * 2) flips the gradient's sign (-0.1 ->
    // +0.1), so dropping it would move the weight the other way; the second step's update
    // depends on the gradient's size, not only its sign.
    let w = check_against_reference(&[2.0], &[vec![-0.1], vec![0.4]], cfg, 1e-6);
    assert!(
        w[0] < 2.0,
        "the decayed gradient is positive: the weight must go down"
    );
}

/// SGD with momentum and Nesterov, two steps (torch.optim.SGD, dampening 0).
#[test]
fn sgd_momentum_and_nesterov_match_hand_computation() {
    for nesterov in [false, true] {
        let p = param(&[1.0]);
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov,
            weight_decay: 0.01,
        };
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], cfg);
        let mut w = 1.0f64;
        let mut buf: Option<f64> = None;
        for g0 in [0.5f64, -0.25] {
            set_grad(&p, &[g0 as f32]);
            opt.step().unwrap();
            let g = g0 + 0.01 * w;
            let b = match buf {
                None => g,
                Some(b) => 0.9 * b + g,
            };
            buf = Some(b);
            let d = if nesterov { g + 0.9 * b } else { b };
            w -= 0.1 * d;
            assert!(
                (p.to_vec()[0] as f64 - w).abs() < 1e-6,
                "nesterov={nesterov}"
            );
        }
    }
}

#[test]
fn parameters_without_gradient_are_left_alone() {
    let p = param(&[1.0, 2.0]);
    let mut opt = AdamW::new(vec![("p".into(), p.clone())], AdamWConfig::default());
    opt.step().unwrap();
    assert_eq!(p.to_vec(), vec![1.0, 2.0]);
}

/// A parameter without a gradient at some step keeps its own step count for the bias
/// correction (torch.optim counts steps per parameter), also across a saved state.
#[test]
fn adam_counts_steps_per_parameter() {
    let cfg = AdamWConfig {
        lr: 0.1,
        betas: (0.9, 0.99),
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: true,
    };
    let (a, b) = (param(&[1.0]), param(&[1.0]));
    let mut opt = AdamW::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())], cfg);
    // b has no gradient at the second step
    let grads = [(0.5f64, Some(0.5f64)), (0.2, None), (-0.3, Some(-0.3))];
    let mut w = [AdamRef::new(1.0); 2];
    for (k, &(ga, gb)) in grads.iter().enumerate() {
        if k == 2 {
            // the state saved after two steps, loaded into a fresh optimizer
            let state: BTreeMap<String, Tensor> = opt.state().into_iter().collect();
            assert_eq!(state["b.step"].to_vec(), vec![1.0]);
            opt = AdamW::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())], cfg);
            opt.load_state(&state).unwrap();
        }
        set_grad(&a, &[ga as f32]);
        match gb {
            Some(g) => set_grad(&b, &[g as f32]),
            None => b.set_grad(None).unwrap(),
        }
        opt.step().unwrap();
        for (j, g) in [Some(ga), gb].into_iter().enumerate() {
            if let Some(g) = g {
                w[j].step(g, &cfg);
            }
        }
        for (j, p) in [&a, &b].into_iter().enumerate() {
            let got = p.to_vec()[0] as f64;
            assert!(
                (got - w[j].w).abs() < 1e-6,
                "step {k}, param {j}: {got} vs {}",
                w[j].w
            );
        }
    }
    assert_eq!(
        (opt.steps(), opt.param_steps("a"), opt.param_steps("b")),
        (3, Some(3), Some(2))
    );
    assert_eq!(opt.param_steps("c"), None);
}

#[test]
fn optimizer_state_round_trips() {
    let p = param(&[1.0, 2.0]);
    let mut a = AdamW::new(vec![("p".into(), p.clone())], AdamWConfig::default());
    set_grad(&p, &[0.1, 0.2]);
    a.step().unwrap();
    let state: BTreeMap<String, Tensor> = a.state().into_iter().collect();
    assert!(state.contains_key("p.exp_avg") && state.contains_key("p.exp_avg_sq"));
    let q = param(&p.to_vec());
    let mut b = AdamW::new(vec![("p".into(), q.clone())], AdamWConfig::default());
    b.load_state(&state).unwrap();
    set_grad(&p, &[0.3, -0.1]);
    set_grad(&q, &[0.3, -0.1]);
    a.step().unwrap();
    b.step().unwrap();
    assert_eq!(p.to_vec(), q.to_vec());
    // a state written before per-parameter step counts: the global count is used
    let mut old = state.clone();
    old.remove("p.step");
    let r = param(&[1.0, 2.0]);
    let mut c = AdamW::new(vec![("p".into(), r.clone())], AdamWConfig::default());
    c.load_state(&old).unwrap();
    assert_eq!(c.param_steps("p"), Some(1));
    let mut bad = state.clone();
    bad.remove("p.exp_avg");
    assert!(b
        .load_state(&bad)
        .unwrap_err()
        .to_string()
        .contains("p.exp_avg"));
    // a moment of the right size in another shape (transposed) is refused too: it was taken,
    // each element applied to another weight
    let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])
        .unwrap()
        .into_var();
    let mut m = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::default());
    w.set_grad(Some(Tensor::from_vec(vec![0.1; 6], &[2, 3]).unwrap()))
        .unwrap();
    m.step().unwrap();
    let mut flipped: BTreeMap<String, Tensor> = m.state().into_iter().collect();
    let moment = flipped["w.exp_avg"].to_vec();
    flipped.insert(
        "w.exp_avg".into(),
        Tensor::from_vec(moment, &[3, 2]).unwrap(),
    );
    let e = m.load_state(&flipped).unwrap_err().to_string();
    assert!(
        e.contains("w.exp_avg") && e.contains("[3, 2]") && e.contains("[2, 3]"),
        "{e}"
    );
}

#[test]
fn clip_grad_norm_scales_to_max_norm() {
    let a = param(&[0.0, 0.0]);
    let b = param(&[0.0]);
    set_grad(&a, &[3.0, 0.0]);
    set_grad(&b, &[4.0]);
    let n = clip_grad_norm(&[a.clone(), b.clone()], 1.0).unwrap();
    assert!((n - 5.0).abs() < 1e-6);
    let ga = a.grad().unwrap().to_vec();
    let gb = b.grad().unwrap().to_vec();
    assert!((ga[0] - 0.6).abs() < 1e-5 && (gb[0] - 0.8).abs() < 1e-5);
    // below the limit: unchanged
    let n = clip_grad_norm(&[a.clone(), b.clone()], 10.0).unwrap();
    assert!((n - 1.0).abs() < 1e-4);
    assert!((a.grad().unwrap().to_vec()[0] - 0.6).abs() < 1e-5);
}
