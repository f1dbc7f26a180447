//! The hot path of reads: mapping a byte range of a virtual `.npy` file onto the
//! array regions it covers.
//!
//! A `.npy` file is `[header][C-order elements]`. A read of bytes `[off, off+len)`
//! past the header covers elements `[e0, e1)` (widened to whole elements). In C
//! order such a range is not a box, but it splits into at most `2·rank − 1` boxes:
//! a partial head row, a run of whole rows, and a partial tail row, each partial row
//! split the same way one axis down. Each box is then read from the store, which
//! decodes only the chunks that box overlaps (and serves repeated blocks from its
//! cache). Concatenated in order, the boxes' bytes are exactly elements `e0..e1`.

/// A box: first element index and extent per axis.
pub type Region = (Vec<usize>, Vec<usize>);

/// Splits the C-order element range `[e0, e1)` of an array of `shape` into boxes,
/// in order. A 0-D array has one element and one empty box.
pub fn element_range_boxes(shape: &[usize], e0: usize, e1: usize) -> Vec<Region> {
    let mut out = vec![];
    split(shape, &mut vec![], e0, e1, &mut out);
    out
}

fn split(shape: &[usize], prefix: &mut Vec<usize>, e0: usize, e1: usize, out: &mut Vec<Region>) {
    if e0 >= e1 {
        return;
    }
    let rank = prefix.len() + shape.len();
    let push = |prefix: &[usize], lo: Option<(usize, usize)>, rest: &[usize], out: &mut Vec<Region>| {
        let mut start = prefix.to_vec();
        let mut extent = vec![1; prefix.len()];
        if let Some((a, b)) = lo {
            start.push(a);
            extent.push(b - a);
        }
        start.extend(std::iter::repeat_n(0, rest.len()));
        extent.extend_from_slice(rest);
        debug_assert_eq!(start.len(), rank);
        out.push((start, extent));
    };
    if shape.is_empty() {
        push(prefix, None, &[], out);
        return;
    }
    let inner: usize = shape[1..].iter().product();
    if inner == 0 {
        return;
    }
    let (i0, r0) = (e0 / inner, e0 % inner);
    let (i1, r1) = (e1 / inner, e1 % inner);
    if i0 == i1 {
        prefix.push(i0);
        split(&shape[1..], prefix, r0, r1, out);
        prefix.pop();
        return;
    }
    let mut full_from = i0;
    if r0 != 0 {
        prefix.push(i0);
        split(&shape[1..], prefix, r0, inner, out);
        prefix.pop();
        full_from += 1;
    }
    if i1 > full_from {
        push(prefix, Some((full_from, i1)), &shape[1..], out);
    }
    if r1 != 0 {
        prefix.push(i1);
        split(&shape[1..], prefix, 0, r1, out);
        prefix.pop();
    }
}

/// Picks a chunk shape for an array written through the filesystem: whole trailing
/// rows, about `target` bytes per chunk, so that a byte range of the file maps onto
/// few chunks. Small arrays get one chunk.
pub fn auto_chunk_shape(shape: &[usize], elsize: usize, target: usize) -> Vec<usize> {
    let mut chunk = shape.to_vec();
    let mut row = elsize.max(1);
    // Walk from the last axis: keep whole axes while they fit, then cut one.
    for i in (0..shape.len()).rev() {
        let whole = row.saturating_mul(shape[i].max(1));
        if whole <= target {
            row = whole;
            continue;
        }
        chunk[i] = (target / row).clamp(1, shape[i].max(1));
        for c in chunk.iter_mut().take(i) {
            *c = 1;
        }
        break;
    }
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flatten(shape: &[usize], boxes: &[Region]) -> Vec<usize> {
        let mut strides = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        let mut out = vec![];
        for (start, extent) in boxes {
            let n: usize = extent.iter().product();
            for k in 0..n {
                let mut rem = k;
                let mut idx = 0;
                for a in (0..shape.len()).rev() {
                    let i = rem % extent[a];
                    rem /= extent[a];
                    idx += (start[a] + i) * strides[a];
                }
                out.push(idx);
            }
            if shape.is_empty() {
                out.push(0);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn boxes_cover_exactly_the_range_in_order() {
        let shape = [3, 4, 5];
        for e0 in 0..60 {
            for e1 in e0..=60 {
                let boxes = element_range_boxes(&shape, e0, e1);
                assert_eq!(flatten(&shape, &boxes), (e0..e1).collect::<Vec<_>>(), "{e0}..{e1}");
                assert!(boxes.len() <= 5);
            }
        }
    }

    #[test]
    fn zero_d_and_empty_axes() {
        assert_eq!(element_range_boxes(&[], 0, 1), vec![(vec![], vec![])]);
        assert!(element_range_boxes(&[0, 4], 0, 0).is_empty());
        assert_eq!(element_range_boxes(&[4], 1, 3), vec![(vec![1], vec![2])]);
    }

    #[test]
    fn auto_chunks() {
        assert_eq!(auto_chunk_shape(&[10, 10], 4, 1 << 20), vec![10, 10]);
        assert_eq!(auto_chunk_shape(&[1000, 1000], 4, 1 << 20), vec![262, 1000]);
        assert_eq!(auto_chunk_shape(&[2, 10_000_000], 4, 1 << 20), vec![1, 262_144]);
        assert_eq!(auto_chunk_shape(&[], 8, 1 << 20), Vec::<usize>::new());
    }
}
