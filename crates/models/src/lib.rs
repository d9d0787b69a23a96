//! Models built from [`ferrolab_nn`] layers.

pub mod any;
pub mod deepseek_v3;
pub mod gpt;
pub mod hf;
pub mod lm;

pub use any::{max_vio, Cache, LossParts, LossValues, Model, ModelConfig};
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
/// and arrays around it, make the path (`rope_scaling.factor`, `layers[2].heads`). An error
/// at a closing brace (a missing field) names the object it closes, and one about an array's
/// length names the array. The message is the one deserializing `v` gave (the text's can
/// differ: an array one element too long reads "trailing characters" there).
pub(crate) fn from_json_named<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> std::result::Result<T, String> {
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    let msg = match serde_json::from_value::<T>(v) {
        Ok(t) => return Ok(t),
        Err(e) => e.to_string(),
    };
    let path = match serde_json::from_str::<T>(&text) {
        Err(e) => {
            let mut path = key_path_at(&text, e.line());
            // a length error is about the array, not the element the text's reading stopped at
            if msg.starts_with("invalid length") && path.ends_with(']') {
                path.truncate(path.rfind('[').unwrap_or(path.len()));
            }
            path
        }
        Ok(_) => String::new(),
    };
    Err(if path.is_empty() {
        msg
    } else {
        format!("`{path}`: {msg}")
    })
}

/// The path of keys to line `line` (1-based) of `serde_json`'s pretty-printed text (two spaces
/// per level): the key on that line, then each line above it with less indentation that opens
/// an object or array, with its key if it has one, and for an array the index of the element
/// the path goes through (its lines at the array's indentation plus two that start an
/// element). A line that closes an object or array stands for it: the path is the one to its
/// opening line.
fn key_path_at(text: &str, line: usize) -> String {
    enum Part {
        Key(String),
        Index(usize),
    }
    let lines: Vec<&str> = text.lines().collect();
    // the key a pretty-printed line starts with: a JSON string (escapes and all) then `": `
    let key_of = |l: &str| -> Option<String> {
        let t = l.trim_start();
        let body = t.strip_prefix('"')?;
        let mut escaped = false;
        let end = body.char_indices().find_map(|(i, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes.then_some(i)
        })?;
        let token = &t[..end + 2]; // both quotes
        t[end + 2..].starts_with(": ").then_some(())?;
        serde_json::from_str::<String>(token).ok()
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(&at) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return String::new();
    };
    let closing = at.trim_start().starts_with(['}', ']']);
    let (mut parts, mut level) = if closing {
        // its opening line has the same indentation
        (Vec::new(), indent(at) + 1)
    } else {
        (key_of(at).map(Part::Key).into_iter().collect(), indent(at))
    };
    // the line the path goes through at the current level (none yet for a closing line: the
    // first container found is the one it closes, not one around it)
    let mut child = (!closing).then_some(line - 1);
    for (k, l) in lines[..line - 1].iter().enumerate().rev() {
        let t = l.trim_end();
        if indent(l) < level && (t.ends_with('{') || t.ends_with('[')) {
            level = indent(l);
            if let (true, Some(c)) = (t.ends_with('['), child) {
                let starts = lines[k + 1..=c]
                    .iter()
                    .filter(|e| indent(e) == level + 2 && !e.trim_start().starts_with(['}', ']']))
                    .count();
                parts.push(Part::Index(starts.saturating_sub(1)));
            }
            if let Some(key) = key_of(l) {
                parts.push(Part::Key(key));
            }
            child = Some(k);
        }
    }
    parts.reverse();
    let mut path = String::new();
    for p in parts {
        match p {
            Part::Key(k) if path.is_empty() => path = k,
            Part::Key(k) => {
                path.push('.');
                path.push_str(&k);
            }
            Part::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
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
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Deep {
        x: u8,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        factor: f32,
        deep: Option<Deep>,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Outer {
        size: usize,
        names: Vec<String>,
        scaling: Option<Inner>,
        pair: Option<[u8; 2]>,
        map: Option<BTreeMap<String, Inner>>,
        list: Option<Vec<Inner>>,
        grid: Option<Vec<Vec<u8>>>,
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
        assert!(e.starts_with("`names[1]`: "), "{e}");
        // elements that are objects or arrays count once each, whatever their lines
        let e = error(
            json!({"size": 3, "names": [], "list": [{"factor": 1}, {"factor": 2, "deep": {"x": 1}}, {"factor": "x"}]}),
        );
        assert!(e.starts_with("`list[2].factor`: "), "{e}");
        let e = error(json!({"size": 3, "names": [], "grid": [[1, 2], [3], [4, "5"]]}));
        assert!(e.starts_with("`grid[2][1]`: "), "{e}");
        let e = error(json!({"size": 3, "names": [], "list": [{"factor": 1}, {}]}));
        assert_eq!(e, "`list[1]`: missing field `factor`");
        // the message is from the value, not from the re-read text ("trailing characters")
        let e = error(json!({"size": 3, "names": [], "pair": [1, 2, 3]}));
        assert!(e.starts_with("`pair`: invalid length 3"), "{e}");
        let e = error(json!({"size": 3, "names": [], "pair": [1]}));
        assert!(e.starts_with("`pair`: invalid length 1"), "{e}");
        let e = error(json!({"size": 3, "names": [], "list": [{"factor": 1, "deep": {"x": [2]}}]}));
        assert!(e.starts_with("`list[0].deep.x`: "), "{e}");
        // keys that need escaping, on the path, are read back as written
        let e = error(json!({"size": 3, "names": [], "map": {"k\": \"v": {"factor": "x"}}}));
        assert!(e.starts_with("`map.k\": \"v.factor`: "), "{e}");
        // a missing field is reported at the closing brace of its object: that object's path
        let e = error(json!({"size": 3, "names": [], "scaling": {"other": 1}}));
        assert_eq!(e, "`scaling`: missing field `factor`");
        let e = error(json!({"size": 3, "names": [], "scaling": {"factor": 1, "deep": {}}}));
        assert_eq!(e, "`scaling.deep`: missing field `x`");
        // ...and at the top level there is no path to give
        let e = error(json!({"size": 3, "scaling": null}));
        assert_eq!(e, "missing field `names`");
    }
}
