//! 2-D PCA projection of chosen word vectors, written as a standalone SVG.

use ferrolab_data::Links;
use std::path::Path;

use crate::error::{io_err, Result, Word2VecError};
use crate::rng::Lcg;
use crate::vectors::KeyedVectors;

/// Projects `rows` (each of length `dim`) on their first two principal components, found by
/// power iteration with deflation on the covariance of the centred rows. Returns one `(x, y)`
/// per row; a component along which the rows do not spread (rows on one line: `y`; all rows
/// equal: both) is 0.
pub fn pca_2d(rows: &[Vec<f32>], dim: usize) -> Vec<(f64, f64)> {
    let n = rows.len();
    if n == 0 || dim == 0 {
        return Vec::new();
    }
    let mut mean = vec![0.0f64; dim];
    for r in rows {
        mean.iter_mut()
            .zip(r)
            .for_each(|(m, &x)| *m += x as f64 / n as f64);
    }
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(&x, m)| x as f64 - m).collect())
        .collect();
    let mut cov = vec![0.0f64; dim * dim];
    for r in &centred {
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] += r[i] * r[j] / n as f64;
            }
        }
    }
    let mut rng = Lcg::new(12345);
    let mut components: Vec<Vec<f64>> = Vec::new();
    let mut first_lambda = 0.0f64;
    for k in 0..2 {
        let mut v: Vec<f64> = (0..dim).map(|_| rng.uniform() - 0.5).collect();
        for _ in 0..500 {
            let mut w: Vec<f64> = (0..dim)
                .map(|i| (0..dim).map(|j| cov[i * dim + j] * v[j]).sum())
                .collect();
            // orthogonal to the components found: what deflation leaves is rounding noise,
            // mostly along them
            for c in &components {
                let d: f64 = w.iter().zip(c).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(c).for_each(|(a, b)| *a -= d * b);
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-300 {
                break;
            }
            w.iter_mut().for_each(|x| *x /= norm);
            v = w;
        }
        let lambda: f64 = (0..dim)
            .map(|i| v[i] * (0..dim).map(|j| cov[i * dim + j] * v[j]).sum::<f64>())
            .sum();
        // a direction without spread (points on a line, two points, one point) projects to 0:
        // power iteration on what is left would return a noise direction
        if k == 0 {
            first_lambda = lambda;
        }
        if !(lambda > 1e-12 * first_lambda && lambda > 0.0) {
            components.push(vec![0.0; dim]);
            continue;
        }
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] -= lambda * v[i] * v[j];
            }
        }
        components.push(v);
    }
    centred
        .iter()
        .map(|r| {
            let p = |c: &Vec<f64>| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>();
            (p(&components[0]), p(&components[1]))
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders labelled points as a small standalone SVG document.
pub fn svg(points: &[(f64, f64)], labels: &[String]) -> String {
    let (w, h, margin) = (600.0, 600.0, 60.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    // one scale for both axes, so that distances in the picture are distances in the
    // projection (scaling each axis alone stretched the weak second component, even rounding
    // noise, to full height); each axis is centred
    let span = (x1 - x0).max(y1 - y0);
    let s = if span > 0.0 {
        (w - 2.0 * margin) / span
    } else {
        1.0
    };
    let (sx, sy) = (s, s);
    let (x0, y0) = (
        x0 - ((w - 2.0 * margin) / s - (x1 - x0)) / 2.0,
        y0 - ((h - 2.0 * margin) / s - (y1 - y0)) / 2.0,
    );
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (&(x, y), label) in points.iter().zip(labels) {
        let px = margin + (x - x0) * sx;
        let py = h - margin - (y - y0) * sy;
        out.push_str(&format!(
            "<circle cx=\"{px:.2}\" cy=\"{py:.2}\" r=\"3\" fill=\"steelblue\"/>\n<text x=\"{:.2}\" y=\"{:.2}\" font-family=\"sans-serif\" font-size=\"12\">{}</text>\n",
            px + 5.0,
            py - 5.0,
            escape(label)
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// Projects the vectors of `words` with [`pca_2d`] and writes the SVG to `path`.
/// Unknown words give [`Word2VecError::UnknownWord`].
pub fn plot_words(kv: &KeyedVectors, words: &[String], path: &Path) -> Result<()> {
    let rows = words
        .iter()
        .map(|w| kv.vector(w).map(<[f32]>::to_vec))
        .collect::<Result<Vec<_>>>()?;
    if rows.is_empty() {
        return Err(Word2VecError::Config("plot needs at least one word".into()));
    }
    for (i, w) in words.iter().enumerate() {
        if words[..i].contains(w) {
            return Err(Word2VecError::Config(format!(
                "the word {w:?} is given twice: each word is one point"
            )));
        }
    }
    let doc = svg(&pca_2d(&rows, kv.dim()), words);
    ferrolab_data::write_atomic_with(path, doc.as_bytes(), Links::Follow).map_err(io_err(path))
}
