//! Centroid routers for a training-free upcycle (mergekit-moe's "hidden" mode, improved): row e
//! of layer ℓ's router is the normalised mean of the router's real input — layer ℓ's
//! post-attention-norm hidden state — over sample text of expert e's languages, times a
//! temperature. A token then scores each expert by how closely it resembles that expert's
//! languages.

use crate::error::{Error, Result};
use crate::model::{LogitsWanted, Model};

/// Rows are unit vectors times this: a router logit is then |h|·cos(h, centroid), and |h| of a
/// post-norm hidden state is already about √hidden × the norm's gain, so a scale of 1 keeps
/// logit gaps between experts decisive without saturating the softmax for 2+ experts.
pub const DEFAULT_TEMPERATURE: f32 = 1.0;

/// Rows whose cosine exceeds this cannot tell their experts apart.
pub const MAX_ROW_COSINE: f32 = 0.9;
/// mergekit-moe warns above this condition number of a router matrix.
pub const MAX_CONDITION: f32 = 5.0;

/// The mean of every layer's router input over `ids` (fed in chunks through one session),
/// run on the GPU: [layer][hidden].
pub async fn mean_router_inputs(model: &Model, ids: &[u32]) -> Result<Vec<Vec<f64>>> {
    let c = &model.config;
    if ids.is_empty() {
        return Err(Error::InvalidArgument("sample text has no tokens".into()));
    }
    let mut sums = vec![vec![0.0f64; c.hidden_size]; c.num_layers];
    let mut session = model.session_with(LogitsWanted::Last)?;
    session.capture_router_inputs(&model.ctx, c)?;
    // Long samples restart the cache rather than overflow it: a centroid is an average, so
    // windows of context are enough.
    let window = model.options.max_context;
    for piece in ids.chunks(window) {
        session.reset();
        for chunk in piece.chunks(session.scratch.chunk) {
            model.logits_last(&mut session, chunk).await?;
            for (sum, layer) in sums.iter_mut().zip(model.last_captured(&session).await?) {
                for row in layer.chunks(c.hidden_size) {
                    for (s, v) in sum.iter_mut().zip(row) {
                        *s += *v as f64;
                    }
                }
            }
        }
    }
    let n = ids.len() as f64;
    Ok(sums
        .into_iter()
        .map(|s| s.into_iter().map(|v| v / n).collect())
        .collect())
}

/// mean / |mean| × temperature; a zero mean (no signal) stays zero.
pub fn centroid_row(mean: &[f64], temperature: f32) -> Vec<f32> {
    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 {
        return vec![0.0; mean.len()];
    }
    mean.iter()
        .map(|v| (v / norm * temperature as f64) as f32)
        .collect()
}

/// Warnings for a router matrix (rows = experts) whose rows are nearly parallel.
pub fn router_warnings(layer: usize, rows: &[Vec<f32>]) -> Vec<String> {
    let mut out = Vec::new();
    for a in 0..rows.len() {
        for b in a + 1..rows.len() {
            let cos = cosine(&rows[a], &rows[b]);
            if cos > MAX_ROW_COSINE {
                out.push(format!(
                    "layer {layer}: router rows of experts {a} and {b} are nearly parallel (cosine {cos:.3}); their samples may be too alike to route apart"
                ));
            }
        }
    }
    // A zero row (an expert without samples) is reported where it arises; its infinite
    // condition number would only repeat that.
    let has_zero_row = rows.iter().any(|r| r.iter().all(|v| *v == 0.0));
    let cond = condition_number(rows);
    if !has_zero_row && cond > MAX_CONDITION as f64 {
        out.push(format!(
            "layer {layer}: router matrix is ill-conditioned (condition number {cond:.1} > {MAX_CONDITION})"
        ));
    }
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na * nb)) as f32
}

/// σ_max / σ_min of the [experts, hidden] matrix, from the eigenvalues of its small Gram
/// matrix R·Rᵀ (cyclic Jacobi); infinite when the rows are linearly dependent.
pub fn condition_number(rows: &[Vec<f32>]) -> f64 {
    let n = rows.len();
    if n < 2 {
        return 1.0;
    }
    let mut g: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    rows[i]
                        .iter()
                        .zip(&rows[j])
                        .map(|(x, y)| *x as f64 * *y as f64)
                        .sum()
                })
                .collect()
        })
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| g[i][j] * g[i][j])
            .sum();
        if off < 1e-24 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if g[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (g[q][q] - g[p][p]) / (2.0 * g[p][q]);
                // The smaller rotation angle, for stability (signum(0) = 1).
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in g.iter_mut() {
                    let (gkp, gkq) = (row[p], row[q]);
                    row[p] = c * gkp - s * gkq;
                    row[q] = s * gkp + c * gkq;
                }
                let (row_p, row_q) = (g[p].clone(), g[q].clone());
                for k in 0..n {
                    g[p][k] = c * row_p[k] - s * row_q[k];
                    g[q][k] = s * row_p[k] + c * row_q[k];
                }
            }
        }
    }
    let eig: Vec<f64> = (0..n).map(|i| g[i][i].max(0.0)).collect();
    let max = eig.iter().cloned().fold(0.0, f64::max);
    let min = eig.iter().cloned().fold(f64::INFINITY, f64::min);
    if min <= max * 1e-12 {
        return f64::INFINITY;
    }
    (max / min).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unit_vectors_times_temperature() {
        let row = centroid_row(&[3.0, 4.0], 2.0);
        assert_eq!(row, vec![1.2, 1.6]);
        assert_eq!(centroid_row(&[0.0, 0.0], 2.0), vec![0.0, 0.0]);
    }

    #[test]
    fn condition_number_of_known_matrices() {
        // Orthogonal rows of norms 1 and 3: singular values 1 and 3.
        let c = condition_number(&[vec![1.0, 0.0, 0.0], vec![0.0, 3.0, 0.0]]);
        assert!((c - 3.0).abs() < 1e-9, "{c}");
        // [[1, 1], [1, -1]]/√2 is orthogonal: condition 1.
        let r = std::f32::consts::FRAC_1_SQRT_2;
        let c = condition_number(&[vec![r, r], vec![r, -r]]);
        assert!((c - 1.0).abs() < 1e-6, "{c}");
        // [[2, 1], [1, 2]]: eigen/singular values 3 and 1.
        let c = condition_number(&[vec![2.0, 1.0], vec![1.0, 2.0]]);
        assert!((c - 3.0).abs() < 1e-6, "{c}");
        assert!(condition_number(&[vec![1.0, 2.0], vec![2.0, 4.0]]).is_infinite());
    }

    #[test]
    fn warns_on_parallel_rows_only() {
        let apart = router_warnings(0, &[vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!(apart.is_empty(), "{apart:?}");
        let close = router_warnings(3, &[vec![1.0, 0.0], vec![1.0, 0.1]]);
        assert!(
            close.iter().any(|w| w.contains("nearly parallel")),
            "{close:?}"
        );
        assert!(
            close.iter().any(|w| w.contains("ill-conditioned")),
            "{close:?}"
        );
    }
}
