//! Huffman tree over word counts for hierarchical softmax.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Each word's Huffman code (bits from the root down) and the inner nodes on its path
/// (`points[j]` is the inner node, in `0..V-1`, whose output vector decides `code[j]`).
#[derive(Debug, Clone)]
pub struct Huffman {
    codes: Vec<Vec<u8>>,
    points: Vec<Vec<u32>>,
}

impl Huffman {
    /// Builds the tree by repeatedly merging the two least frequent nodes (ties broken by the
    /// lower node id, leaves before inner nodes); the first popped child gets bit 0.
    /// A single-word vocabulary gets an empty code.
    pub fn new(counts: &[u64]) -> Self {
        let v = counts.len();
        if v <= 1 {
            return Self {
                codes: vec![Vec::new(); v],
                points: vec![Vec::new(); v],
            };
        }
        let n_nodes = 2 * v - 1;
        let mut parent = vec![usize::MAX; n_nodes];
        let mut bit = vec![0u8; n_nodes];
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| Reverse((c, i)))
            .collect();
        let mut next = v;
        while heap.len() > 1 {
            let (Some(Reverse((ca, a))), Some(Reverse((cb, b)))) = (heap.pop(), heap.pop()) else {
                break;
            };
            parent[a] = next;
            bit[a] = 0;
            parent[b] = next;
            bit[b] = 1;
            heap.push(Reverse((ca + cb, next)));
            next += 1;
        }
        let root = n_nodes - 1;
        let mut codes = Vec::with_capacity(v);
        let mut points = Vec::with_capacity(v);
        for w in 0..v {
            let mut code = Vec::new();
            let mut point = Vec::new();
            let mut node = w;
            while node != root {
                code.push(bit[node]);
                node = parent[node];
                point.push((node - v) as u32);
            }
            code.reverse();
            point.reverse();
            codes.push(code);
            points.push(point);
        }
        Self { codes, points }
    }

    /// Code bits of word `w`, root first.
    pub fn code(&self, w: usize) -> &[u8] {
        &self.codes[w]
    }

    /// Inner nodes on the path of word `w`, root first (aligned with [`Huffman::code`]).
    pub fn points(&self, w: usize) -> &[u32] {
        &self.points[w]
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// True for an empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_free(h: &Huffman) -> bool {
        for i in 0..h.len() {
            for j in 0..h.len() {
                if i != j && h.code(j).starts_with(h.code(i)) {
                    return false;
                }
            }
        }
        true
    }

    #[test]
    fn hand_computed_example() {
        // merge 1+2 -> 3; merge 3 (word 1) + 3 (inner) -> 6; merge 5 + 6 -> root
        let h = Huffman::new(&[5, 3, 2, 1]);
        let lens: Vec<usize> = (0..4).map(|w| h.code(w).len()).collect();
        assert_eq!(lens, vec![1, 2, 3, 3]);
        assert_eq!(h.code(0), &[0]);
        assert_eq!(h.code(1), &[1, 0]);
        assert_eq!(h.points(0), &[2]); // root is the last inner node
        assert_eq!(h.points(1), &[2, 1]);
        assert_eq!(h.points(3), &[2, 1, 0]);
        assert!(prefix_free(&h));
    }

    #[test]
    fn prefix_free_and_monotone() {
        let counts: Vec<u64> = (0..50u64).map(|i| 1000 / (i + 1) + (i * 7) % 5).collect();
        let mut sorted = counts.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let h = Huffman::new(&sorted);
        assert!(prefix_free(&h));
        for i in 0..sorted.len() {
            for j in 0..sorted.len() {
                if sorted[i] > sorted[j] {
                    assert!(h.code(i).len() <= h.code(j).len(), "{i} vs {j}");
                }
            }
            assert_eq!(h.code(i).len(), h.points(i).len());
            assert!(h.points(i).iter().all(|&p| (p as usize) < sorted.len() - 1));
        }
        // Kraft equality for a full binary tree.
        let kraft: f64 = (0..h.len())
            .map(|w| 0.5f64.powi(h.code(w).len() as i32))
            .sum();
        assert!((kraft - 1.0).abs() < 1e-12);
    }
}
