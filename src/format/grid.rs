//! Chunk-grid maths and N-d box copies between C-order buffers.
//!
//! Chunk coordinate `c[i]` covers elements `c[i]*chunk[i] .. min((c[i]+1)*chunk[i], shape[i])`;
//! edge chunks are stored trimmed to their in-bounds size. A 0-D array has one
//! chunk with coordinate `[]` holding one element.

/// The chunk grid of one array entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub shape: Vec<usize>,
    pub chunk: Vec<usize>,
}

impl Grid {
    pub fn new(shape: Vec<usize>, chunk: Vec<usize>) -> Self {
        debug_assert_eq!(shape.len(), chunk.len());
        Grid { shape, chunk }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Chunks along each axis (an axis of length 0 has no chunks).
    pub fn chunks_per_axis(&self) -> Vec<usize> {
        self.shape.iter().zip(&self.chunk).map(|(&s, &c)| s.div_ceil(c.max(1))).collect()
    }

    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether `coord` names a chunk inside this grid.
    pub fn contains(&self, coord: &[u32]) -> bool {
        coord.len() == self.rank() && coord.iter().zip(self.chunks_per_axis()).all(|(&c, n)| (c as usize) < n)
    }

    /// First element and edge-trimmed extent of a chunk.
    pub fn chunk_box(&self, coord: &[u32]) -> (Vec<usize>, Vec<usize>) {
        let start: Vec<usize> = coord.iter().zip(&self.chunk).map(|(&c, &k)| c as usize * k).collect();
        let extent = start.iter().zip(&self.chunk).zip(&self.shape).map(|((&s, &k), &n)| k.min(n - s)).collect();
        (start, extent)
    }

    /// Elements in a chunk after edge trimming.
    pub fn chunk_len(&self, coord: &[u32]) -> usize {
        self.chunk_box(coord).1.iter().product()
    }

    /// Coordinates of every chunk overlapping the box `start .. start+extent`, in C order.
    pub fn overlapping(&self, start: &[usize], extent: &[usize]) -> Vec<Vec<u32>> {
        if extent.iter().any(|&e| e == 0) {
            return vec![];
        }
        let lo: Vec<usize> = start.iter().zip(&self.chunk).map(|(&s, &k)| s / k).collect();
        let hi: Vec<usize> = start.iter().zip(extent).zip(&self.chunk).map(|((&s, &e), &k)| (s + e - 1) / k).collect();
        let mut out = vec![];
        let mut cur = lo.clone();
        loop {
            out.push(cur.iter().map(|&c| c as u32).collect());
            // odometer increment, last axis fastest
            let mut axis = cur.len();
            loop {
                if axis == 0 {
                    return out;
                }
                axis -= 1;
                if cur[axis] < hi[axis] {
                    cur[axis] += 1;
                    break;
                }
                cur[axis] = lo[axis];
            }
        }
    }

    /// Every chunk coordinate of the grid, in C order.
    pub fn all_chunks(&self) -> Vec<Vec<u32>> {
        let zeros = vec![0; self.rank()];
        self.overlapping(&zeros, &self.shape)
    }
}

/// Calls `f(src_offset, dst_offset, run_len)` (in elements) for each contiguous innermost
/// run of the box `extent`, placed at `src_start` in a C-order array of `src_shape` and at
/// `dst_start` in one of `dst_shape`.
pub fn for_each_run(src_shape: &[usize], src_start: &[usize], dst_shape: &[usize], dst_start: &[usize], extent: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    let rank = extent.len();
    if extent.iter().any(|&e| e == 0) {
        return;
    }
    if rank == 0 {
        f(0, 0, 1);
        return;
    }
    let strides = |shape: &[usize]| {
        let mut s = vec![1usize; rank];
        for i in (0..rank - 1).rev() {
            s[i] = s[i + 1] * shape[i + 1];
        }
        s
    };
    let (ss, ds) = (strides(src_shape), strides(dst_shape));
    // Merge trailing axes that are whole in both buffers into one longer run.
    let mut inner = rank - 1;
    let mut run = extent[inner];
    while inner > 0 && extent[inner] == src_shape[inner] && extent[inner] == dst_shape[inner] && src_start[inner] == 0 && dst_start[inner] == 0 {
        inner -= 1;
        run *= extent[inner];
    }
    let mut idx = vec![0usize; inner];
    loop {
        let mut so = 0;
        let mut dof = 0;
        for a in 0..inner {
            so += (src_start[a] + idx[a]) * ss[a];
            dof += (dst_start[a] + idx[a]) * ds[a];
        }
        so += src_start[inner] * ss[inner];
        dof += dst_start[inner] * ds[inner];
        f(so, dof, run);
        let mut a = inner;
        loop {
            if a == 0 {
                return;
            }
            a -= 1;
            idx[a] += 1;
            if idx[a] < extent[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// Copies a box of fixed-width elements between two C-order byte buffers.
#[allow(clippy::too_many_arguments)]
pub fn copy_box_bytes(src: &[u8], src_shape: &[usize], src_start: &[usize], dst: &mut [u8], dst_shape: &[usize], dst_start: &[usize], extent: &[usize], elsize: usize) {
    for_each_run(src_shape, src_start, dst_shape, dst_start, extent, |s, d, n| {
        dst[d * elsize..(d + n) * elsize].copy_from_slice(&src[s * elsize..(s + n) * elsize]);
    });
}

/// Copies a box of variable-length cells between two C-order buffers.
pub fn copy_box_cells<T: Clone>(src: &[T], src_shape: &[usize], src_start: &[usize], dst: &mut [T], dst_shape: &[usize], dst_start: &[usize], extent: &[usize]) {
    for_each_run(src_shape, src_start, dst_shape, dst_start, extent, |s, d, n| {
        dst[d..d + n].clone_from_slice(&src[s..s + n]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_chunks_are_trimmed() {
        let g = Grid::new(vec![4, 6], vec![2, 4]);
        assert_eq!(g.chunks_per_axis(), vec![2, 2]);
        assert_eq!(g.chunk_box(&[0, 1]), (vec![0, 4], vec![2, 2]));
        assert_eq!(g.chunk_len(&[1, 0]), 8);
        assert_eq!(g.all_chunks(), vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1]]);
        assert_eq!(g.overlapping(&[1, 3], &[1, 2]), vec![vec![0, 0], vec![0, 1]]);
        assert!(g.overlapping(&[1, 3], &[0, 2]).is_empty());
    }

    #[test]
    fn zero_d_has_one_chunk() {
        let g = Grid::new(vec![], vec![]);
        assert_eq!(g.all_chunks(), vec![Vec::<u32>::new()]);
        assert_eq!(g.chunk_len(&[]), 1);
        let mut dst = [0u8; 4];
        copy_box_bytes(&[1, 2, 3, 4], &[], &[], &mut dst, &[], &[], &[], 4);
        assert_eq!(dst, [1, 2, 3, 4]);
    }

    #[test]
    fn box_copy_matches_naive_indexing() {
        let src: Vec<u8> = (0..60).collect(); // shape 3x4x5
        let mut dst = vec![0u8; 2 * 2 * 3];
        copy_box_bytes(&src, &[3, 4, 5], &[1, 2, 1], &mut dst, &[2, 2, 3], &[0, 0, 0], &[2, 2, 3], 1);
        let mut want = vec![];
        for i in 1..3 {
            for j in 2..4 {
                for k in 1..4 {
                    want.push((i * 20 + j * 5 + k) as u8);
                }
            }
        }
        assert_eq!(dst, want);
    }

    #[test]
    fn whole_rows_merge_into_one_run() {
        let mut runs = 0;
        for_each_run(&[4, 8, 8], &[1, 0, 0], &[2, 8, 8], &[0, 0, 0], &[2, 8, 8], |_, _, n| {
            runs += 1;
            assert_eq!(n, 128);
        });
        assert_eq!(runs, 1);
    }
}
