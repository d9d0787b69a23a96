//! Models built from [`ferrolab_nn`] layers.

pub mod any;
pub mod deepseek_v3;
pub mod gpt;
pub mod hf;
pub mod lm;

pub use any::{max_vio, Cache, LossParts, Model, ModelConfig};
pub use deepseek_v3::{Balance, DeepseekV3, MlaCache, SpecStats, V3Config, V3Loss};
pub use gpt::{Gpt, GptConfig};
pub use lm::{Attention, DecoderLayer, KvCache, Lm, LmConfig, SwiGlu};

/// `x` as a JSON value as `serde_json::to_string` writes it: an `f32` such as 1e-4 stays 1e-4,
/// where `serde_json::to_value` widens it to 0.00009999999747378752.
pub fn json_value<T: serde::Serialize>(x: &T) -> serde_json::Result<serde_json::Value> {
    serde_json::from_str(&serde_json::to_string(x)?)
}

/// `v` deserialized as `T`; an error names the key whose value was refused (`serde_json`'s own
/// message for a value says only what it found and what it expected).
///
/// The key is found by deserializing `v` once more from its pretty-printed text, one key per
/// line, whose error carries a line number: the key on that line, and the keys of the objects
/// around it, make the path (`rope_scaling.factor`). An error with no line (a missing field, at
/// the closing brace) keeps `serde_json`'s message alone.
pub(crate) fn from_json_named<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> std::result::Result<T, String> {
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    let first = match serde_json::from_value::<T>(v) {
        Ok(t) => return Ok(t),
        Err(e) => e.to_string(),
    };
    let Err(e) = serde_json::from_str::<T>(&text) else {
        return Err(first);
    };
    let path = key_path_at(&text, e.line());
    // the message without serde_json's " at line L column C"
    let msg = e.to_string();
    let msg = msg
        .rsplit_once(" at line ")
        .map_or(msg.as_str(), |(m, _)| m);
    Err(if path.is_empty() {
        msg.to_string()
    } else {
        format!("`{path}`: {msg}")
    })
}

/// The dotted path of keys to line `line` (1-based) of `serde_json`'s pretty-printed text:
/// the key on that line, then each line above it with less indentation that opens an object
/// or array under a key.
fn key_path_at(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let key_of = |l: &str| -> Option<String> {
        let t = l.trim_start();
        let rest = t.strip_prefix('"')?;
        // pretty-printed keys are JSON strings followed by `": `
        let end = rest.find("\": ")?;
        serde_json::from_str::<String>(&t[..end + 2]).ok()
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(&at) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return String::new();
    };
    let mut keys: Vec<String> = key_of(at).into_iter().collect();
    let mut level = indent(at);
    for l in lines[..line - 1].iter().rev() {
        let t = l.trim_end();
        if indent(l) < level && (t.ends_with('{') || t.ends_with('[')) {
            level = indent(l);
            if let Some(k) = key_of(l) {
                keys.push(k);
            }
        }
    }
    keys.reverse();
    keys.join(".")
}

/// The largest value ferrolab accepts for a config's size field, far above any published
/// model's (DeepSeek-V3: hidden 7168, vocabulary 129,280, 256 experts, 61 layers). The bounds
/// keep parameter counts and buffer sizes well inside 64 bits; what a machine can hold is
/// checked separately against its memory.
pub(crate) fn size_limit(field: &str) -> usize {
    match field {
        "vocab_size" | "max_position_embeddings" => 1 << 22,
        "intermediate_size" | "moe_intermediate_size" => 1 << 18,
        "hidden_size" | "kv_lora_rank" | "q_lora_rank" => 1 << 16,
        "n_routed_experts" => 1 << 12,
        _ => 1 << 10, // layers, heads, head dims, shared experts, top-k
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        factor: f32,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Outer {
        size: usize,
        names: Vec<String>,
        scaling: Option<Inner>,
    }

    fn error(v: serde_json::Value) -> String {
        super::from_json_named::<Outer>(v).unwrap_err()
    }

    #[test]
    fn errors_name_the_key_path_of_the_refused_value() {
        let good = json!({"size": 3, "names": ["a"], "scaling": {"factor": 2.0}});
        assert_eq!(super::from_json_named::<Outer>(good).unwrap().size, 3);
        let e = error(json!({"names": ["a"], "size": "3", "scaling": null}));
        assert!(e.starts_with("`size`: invalid type: string \"3\""), "{e}");
        assert!(!e.contains("line"), "{e}");
        let e = error(json!({"size": 3, "names": ["a"], "scaling": {"factor": "x"}}));
        assert!(e.starts_with("`scaling.factor`: "), "{e}");
        let e = error(json!({"size": 3, "names": ["a", 7], "scaling": null}));
        assert!(e.starts_with("`names`: "), "{e}");
        // a key that needs escaping in JSON is read back as written
        let e = error(json!({"size": 3, "names": [], "scaling": {"factor": "x"}, "a\"b": 1}));
        assert!(e.starts_with("`scaling.factor`: "), "{e}");
        // a missing field has no value to point at: serde_json's message alone
        let e = error(json!({"size": 3, "scaling": null}));
        assert_eq!(e, "missing field `names`");
    }
}
