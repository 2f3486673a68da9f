//! Comparison helpers for numeric tests (public so every crate's tests share them).

/// Asserts `|got − want| ≤ atol + rtol·|want|` element-wise. On failure prints the tolerance, the
/// max difference, and the first few offending pairs with their indices, naming `what`.
#[allow(clippy::neg_cmp_op_on_partial_ord)] // written so that NaN fails the check
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs expected {}", got.len(), want.len());
    let mut bad = Vec::new();
    let mut max_diff = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        max_diff = max_diff.max(d);
        if !(d <= atol + rtol * w.abs()) {
            bad.push((i, g, w));
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad.iter().take(5).map(|(i, g, w)| format!("[{i}] got {g:.7e} want {w:.7e}")).collect();
        panic!(
            "{what}: {} of {} values outside atol {atol:e} + rtol {rtol:e}; max |diff| {max_diff:e}; first: {}",
            bad.len(),
            got.len(),
            first.join(", ")
        );
    }
}
