//! The copy kernels behind `contiguous()` (plain transpose, tiled strided copy, odometer copy)
//! against direct index arithmetic.

use ferrolab_tensor::Tensor;

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i * 7 % 1013) as f32 - 500.0).collect()
}

#[test]
fn transposes_of_every_size_match_index_arithmetic() {
    for (r, c) in [
        (1, 1),
        (1, 9),
        (9, 1),
        (8, 8),
        (7, 13),
        (16, 24),
        (32, 8),
        (48, 7),
        (16, 9),
        (33, 65),
        (300, 17),
        (64, 1024),
    ] {
        let v = data(r * c);
        let x = Tensor::from_vec(v.clone(), &[r, c]).unwrap();
        let t = x.t().unwrap().contiguous().to_vec();
        for i in 0..c {
            for j in 0..r {
                assert_eq!(t[i * r + j], v[j * c + i], "{r}x{c} at ({i}, {j})");
            }
        }
    }
}

#[test]
fn permuted_and_narrowed_views_copy_correctly() {
    let (a, b, c) = (5, 6, 7);
    let v = data(a * b * c);
    let x = Tensor::from_vec(v.clone(), &[a, b, c]).unwrap();
    let at = |i: usize, j: usize, k: usize| v[(i * b + j) * c + k];
    for perm in [[0, 2, 1], [2, 1, 0], [1, 0, 2], [2, 0, 1], [1, 2, 0]] {
        let p = x.permute(&perm).unwrap();
        let got = p.contiguous().to_vec();
        let s = p.shape().to_vec();
        let mut n = 0;
        for i in 0..s[0] {
            for j in 0..s[1] {
                for k in 0..s[2] {
                    let mut idx = [0; 3];
                    idx[perm[0]] = i;
                    idx[perm[1]] = j;
                    idx[perm[2]] = k;
                    assert_eq!(got[n], at(idx[0], idx[1], idx[2]), "perm {perm:?}");
                    n += 1;
                }
            }
        }
    }
    // a narrowed, transposed view (offset and gaps)
    let y = x.narrow(2, 2, 4).unwrap().transpose(1, 2).unwrap();
    let got = y.contiguous().to_vec();
    let mut n = 0;
    for i in 0..a {
        for k in 2..6 {
            for j in 0..b {
                assert_eq!(got[n], at(i, j, k));
                n += 1;
            }
        }
    }
}

/// Copies of more than 2^16 elements take the parallel paths: over the first dim when the last
/// stride is 1 (a permutation of the outer dims), in bands of 32-row tiles when it is not.
#[test]
fn large_strided_copies_match_index_arithmetic() {
    let (a, b, c) = (64, 40, 50);
    let v = data(a * b * c);
    let x = Tensor::from_vec(v.clone(), &[a, b, c]).unwrap();
    let got = x.permute(&[1, 0, 2]).unwrap().contiguous().to_vec();
    let mut n = 0;
    for j in 0..b {
        for i in 0..a {
            for k in 0..c {
                assert_eq!(got[n], v[(i * b + j) * c + k], "({i}, {j}, {k})");
                n += 1;
            }
        }
    }
    // a narrowed, transposed 250 x 300 view (not a plain transpose: rows 260 apart)
    let (r, w) = (300, 260);
    let v = data(r * w);
    let x = Tensor::from_vec(v.clone(), &[r, w]).unwrap();
    let y = x.narrow(1, 5, 250).unwrap().t().unwrap();
    let got = y.contiguous().to_vec();
    for i in 0..250 {
        for j in 0..r {
            assert_eq!(got[i * r + j], v[j * w + 5 + i], "({i}, {j})");
        }
    }
}
