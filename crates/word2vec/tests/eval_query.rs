//! Queries, analogy and similarity evaluation and the PCA plot on hand-made vectors.

mod common;

use common::temp_path;
use ferrolab_word2vec::{
    average_ranks, evaluate_analogies, evaluate_similarity, pca_2d, plot_words, spearman,
    KeyedVectors, QueryIndex, COSMUL_EPSILON,
};

/// man=(1,0,0) woman=(1,1,0) king=(1,0,1) queen=(1,1,1) apple=(0,-1,-1) (not normalised).
fn toy() -> KeyedVectors {
    let words = ["man", "woman", "king", "queen", "apple"]
        .map(String::from)
        .to_vec();
    let v = vec![
        1.0, 0.0, 0.0, //
        2.0, 2.0, 0.0, //
        1.0, 0.0, 1.0, //
        1.0, 1.0, 1.0, //
        0.0, -3.0, -3.0,
    ];
    KeyedVectors::new(words, v, 3).unwrap()
}

#[test]
fn most_similar_and_analogies() {
    let kv = toy();
    let q = QueryIndex::new(&kv);
    let sims = q.most_similar("queen", 2).unwrap();
    assert_eq!(sims.len(), 2);
    assert!(sims.iter().all(|(w, _)| w != "queen"));
    // cos(queen, woman) = cos(queen, king) = 2/sqrt(6); woman has the lower index
    assert_eq!(sims[0].0, "woman");
    assert_eq!(sims[1].0, "king");
    assert!((sims[0].1 - 2.0 / 6f32.sqrt()).abs() < 1e-6);

    let add = q.analogy_cos_add("man", "woman", "king", 1).unwrap();
    assert_eq!(add[0].0, "queen");
    let expected = 2.0 / 6f32.sqrt() - 1.0 / 3f32.sqrt() + 2.0 / 6f32.sqrt();
    assert!((add[0].1 - expected).abs() < 1e-5, "{:?}", add);

    let mul = q.analogy_cos_mul("man", "woman", "king", 3).unwrap();
    assert_eq!(mul[0].0, "queen");
    let s = |a: &str, b: &str| (q.similarity(a, b).unwrap() + 1.0) / 2.0;
    for (w, score) in &mul {
        let e = s(w, "woman") * s(w, "king") / (s(w, "man") + COSMUL_EPSILON);
        assert!((score - e).abs() < 1e-5, "{w}: {score} vs {e}");
    }
    assert!(mul.windows(2).all(|p| p[0].1 >= p[1].1));

    assert_eq!(
        q.doesnt_match(&["man", "woman", "king", "apple"]).unwrap(),
        "apple"
    );
    assert!(q.most_similar("zebra", 1).is_err());
}

#[test]
fn analogy_evaluation_matches_hand_computed_result() {
    let kv = toy();
    let q = QueryIndex::new(&kv);
    let path = temp_path("questions.txt");
    std::fs::write(
        &path,
        ": family\nman woman king queen\nking queen man apple\n: other\nman woman zebra queen\nMAN Woman KING Queen\n",
    )
    .unwrap();
    let r = evaluate_analogies(&q, &path, 30_000).unwrap();
    assert_eq!(r.sections.len(), 2);
    assert_eq!(r.sections[0].name, "family");
    assert_eq!(
        (
            r.sections[0].correct,
            r.sections[0].incorrect,
            r.sections[0].skipped
        ),
        (1, 1, 0)
    );
    assert_eq!(
        (
            r.sections[1].correct,
            r.sections[1].incorrect,
            r.sections[1].skipped
        ),
        (1, 0, 1)
    );
    assert_eq!(
        (r.total.correct, r.total.incorrect, r.total.skipped),
        (2, 1, 1)
    );
    assert!((r.total.accuracy() - 2.0 / 3.0).abs() < 1e-12);

    // restricting to the 3 most frequent words (man, woman, king) skips every question
    let r = evaluate_analogies(&q, &path, 3).unwrap();
    assert_eq!(
        (r.total.correct, r.total.incorrect, r.total.skipped),
        (0, 0, 4)
    );

    let bad = temp_path("questions_bad.txt");
    std::fs::write(&bad, ": s\nman woman king\n").unwrap();
    let err = evaluate_analogies(&q, &bad, 10).unwrap_err().to_string();
    assert!(err.contains("questions_bad.txt:2:"), "{err}");
}

#[test]
fn similarity_evaluation_matches_hand_computed_spearman() {
    let kv = toy();
    let q = QueryIndex::new(&kv);
    let path = temp_path("pairs.txt");
    // model cosines: woman-queen .816, man-queen .577, man-apple 0, king-apple -.5
    // model ranks 4 3 2 1, gold ranks 4 3 1 2 -> rho = 1 - 6*2/(4*15) = 0.8
    std::fs::write(
        &path,
        "# word1 word2 score\nwoman\tqueen\t9\nMan queen 5\nman apple 0.5\nking apple 1\nzebra man 3\n",
    )
    .unwrap();
    let r = evaluate_similarity(&q, &path, 30_000).unwrap();
    assert_eq!(r.pairs, 4);
    assert_eq!(r.oov_pairs, 1);
    assert!((r.spearman - 0.8).abs() < 1e-12, "{}", r.spearman);

    let bad = temp_path("pairs_bad.txt");
    std::fs::write(&bad, "a b 1\nman woman high\n").unwrap();
    let err = evaluate_similarity(&q, &bad, 10).unwrap_err().to_string();
    assert!(err.contains("pairs_bad.txt:2:"), "{err}");
}

#[test]
fn spearman_uses_average_ranks_for_ties() {
    assert_eq!(
        average_ranks(&[1.0, 2.0, 2.0, 3.0]),
        vec![1.0, 2.5, 2.5, 4.0]
    );
    let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
    assert!((rho - 4.5 / 22.5f64.sqrt()).abs() < 1e-12, "{rho}");
    assert!((spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]) + 1.0).abs() < 1e-12);
    assert!(spearman(&[1.0], &[2.0]).is_nan());
}

#[test]
fn pca_recovers_the_dominant_directions_and_svg_is_written() {
    // points spread along (1,1,0) (variance large) and (0,0,1) (smaller)
    let rows: Vec<Vec<f32>> = vec![
        vec![3.0, 3.0, 0.0],
        vec![-3.0, -3.0, 0.0],
        vec![0.0, 0.0, 1.0],
        vec![0.0, 0.0, -1.0],
    ];
    let p = pca_2d(&rows, 3);
    let r2 = 18f64.sqrt();
    assert!(
        (p[0].0.abs() - r2).abs() < 1e-6 && p[0].1.abs() < 1e-6,
        "{p:?}"
    );
    assert!((p[0].0 + p[1].0).abs() < 1e-6);
    assert!(
        p[2].0.abs() < 1e-6 && (p[2].1.abs() - 1.0).abs() < 1e-6,
        "{p:?}"
    );

    let kv = toy();
    let out = temp_path("plot.svg");
    let words: Vec<String> = ["man", "woman", "queen"].map(String::from).to_vec();
    plot_words(&kv, &words, &out).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<circle").count(), 3);
    assert!(svg.contains(">queen</text>"));
    assert!(plot_words(&kv, &["zebra".to_string()], &out).is_err());
}

/// Rows that span fewer than two directions: the missing coordinates are 0 (the second
/// component was a noise direction, and points on a line came out on a diagonal).
#[test]
fn pca_of_rows_on_a_line_has_no_second_coordinate() {
    let line: Vec<Vec<f32>> = (0..4).map(|i| vec![i as f32, i as f32, 0.0]).collect();
    let p = pca_2d(&line, 3);
    let step = 2f64.sqrt();
    for (i, &(x, y)) in p.iter().enumerate() {
        assert!(y == 0.0, "{p:?}");
        assert!(((x - p[0].0).abs() - i as f64 * step).abs() < 1e-9, "{p:?}");
    }
    let two = pca_2d(&[vec![1.0, 0.0, 0.0], vec![-1.0, 0.0, 0.0]], 3);
    assert_eq!((two[0].1, two[1].1), (0.0, 0.0), "{two:?}");
    assert!((two[0].0 - two[1].0).abs() > 1.99, "{two:?}");
    let same = pca_2d(&[vec![0.5, 2.0], vec![0.5, 2.0]], 2);
    assert_eq!(same, [(0.0, 0.0), (0.0, 0.0)]);
    // a word given twice is refused
    let kv = toy();
    let out = temp_path("twice.svg");
    let e = plot_words(&kv, &["man".to_string(), "man".to_string()], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"man\"") && e.contains("twice"), "{e}");
    assert!(!out.exists());
}

#[test]
fn svg_uses_one_scale_for_both_axes() {
    // the second coordinate is rounding noise: it must not be stretched to the full height
    let pts = [(0.0, 0.0), (1.0, 1e-12), (2.0, -1e-12)];
    let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let doc = ferrolab_word2vec::svg(&pts, &labels);
    let coord = |key: &str| -> Vec<f64> {
        doc.split(key)
            .skip(1)
            .map(|r| r.split('"').next().unwrap().parse().unwrap())
            .collect()
    };
    let (cx, cy) = (coord("cx=\""), coord("cy=\""));
    assert_eq!(cx.len(), 3);
    let spread = |v: &[f64]| {
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    assert!(spread(&cx) > 400.0, "{cx:?}");
    assert!(spread(&cy) < 1.0, "{cy:?}");
}
