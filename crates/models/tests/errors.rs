//! Bad input to the model gives a typed error naming the problem, never a panic.

use ferrolab_models::{Gpt, GptConfig};
use ferrolab_nn::Vars;

fn model() -> Gpt {
    let cfg = GptConfig {
        vocab: 20,
        d_model: 8,
        layers: 1,
        heads: 2,
        max_seq: 6,
        recompute: false,
    };
    Gpt::new(&Vars::new(), cfg).unwrap()
}

#[test]
fn bad_configs_name_the_field() {
    let mut cfg = GptConfig::bench(1);
    cfg.heads = 3;
    let e = Gpt::new(&Vars::new(), cfg).err().unwrap().to_string();
    assert!(e.contains("d_model") && e.contains("heads"), "{e}");
    let mut cfg = GptConfig::bench(1);
    cfg.vocab = 0;
    assert!(Gpt::new(&Vars::new(), cfg).is_err());
}

#[test]
fn bad_batches_are_errors() {
    let m = model();
    let e = m.forward(&[], 0, 4).err().unwrap().to_string();
    assert!(e.contains("batch 0"), "{e}");
    let e = m.forward(&[1; 7], 1, 7).err().unwrap().to_string();
    assert!(e.contains("max_seq 6"), "{e}");
    let e = m.forward(&[1; 5], 1, 4).err().unwrap().to_string();
    assert!(e.contains("5 ids"), "{e}");
    let e = m.forward(&[1, 2, 30, 4], 1, 4).err().unwrap().to_string();
    assert!(e.contains("30") && e.contains("vocabulary"), "{e}");
    let e = m
        .loss(&[1, 2, 3, 4], &[1, 2, 3, 99], 1, 4)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("99"), "{e}");
}
