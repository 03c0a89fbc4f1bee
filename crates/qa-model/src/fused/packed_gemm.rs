//! The blocked matrix product shared by the dot-product kernels ([`super::bf16_gemm`]'s
//! `vdpbf16ps`, [`super::int8_gemm`]'s `vpdpbusd`): y = x·W for a weight packed once at load.
//!
//! Both instructions add, in each 32-bit lane, the products of one 32-bit *word* of each operand
//! (2 bf16 or 4 bytes). So the weight is packed as words of consecutive k: for each panel of
//! [`PANEL_COLUMNS`] output columns and each word of depth, one word per column; an activation
//! row converted in order has the same words, and one of them broadcast to every lane
//! multiplies a whole panel row. Odd depths and partial panels are padded with zeros.
//!
//! The loops are the classic blocked GEMM: a task owns a block of rows (and, when rows are few,
//! a group of panels); for each panel and each [`DEPTH_WORDS`] slice of depth, the panel's slice
//! (16 KiB, in L1) multiplies every [`TILE_ROWS`]-row tile of the block. The kernel keeps a
//! tile's accumulators in registers (2 a row) across a slice and chooses what they start from
//! and how they are stored ([`Slice`]).

use rayon::prelude::*;

use super::product::Threads;

/// Whether this CPU has the AVX-512 subsets every tile kernel uses (F, BW, VL); each kernel also
/// needs its dot-product instruction's own extension.
pub fn has_avx512_base() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Output columns per packed panel: two 16-lane registers.
pub const PANEL_COLUMNS: usize = 32;
/// Rows of one register tile (16 accumulators).
pub const TILE_ROWS: usize = 8;
/// Depth words per slice: a panel's slice is 128 · 32 words = 16 KiB, half of L1.
const DEPTH_WORDS: usize = 128;
/// Rows of one task's block (8 tiles).
const BLOCK_ROWS: usize = 64;

/// A `[d_in, d_out]` weight packed in words of `per_word` consecutive k, panel by panel.
pub struct PackedPanels {
    pub d_in: usize,
    pub d_out: usize,
    /// Words of depth: `d_in` / `per_word`, rounded up.
    pub depth: usize,
    /// `panels × depth × PANEL_COLUMNS` words.
    words: Vec<u32>,
}

impl PackedPanels {
    /// Packs a weight once, at load, on the pool: `word(k, c)` is the word of rows
    /// `k..k + per_word` in column `c` (both in range; the padding words are 0).
    pub fn new(
        d_in: usize,
        d_out: usize,
        per_word: usize,
        word: impl Fn(usize, usize) -> u32 + Sync,
    ) -> Self {
        let depth = d_in.div_ceil(per_word);
        let panels = d_out.div_ceil(PANEL_COLUMNS);
        let mut words = vec![0u32; panels * depth * PANEL_COLUMNS];
        let panel_len = (depth * PANEL_COLUMNS).max(1);
        words
            .par_chunks_mut(panel_len)
            .enumerate()
            .for_each(|(panel, block)| {
                for (p, row) in block.chunks_exact_mut(PANEL_COLUMNS).enumerate() {
                    for (j, w) in row.iter_mut().enumerate() {
                        let c = panel * PANEL_COLUMNS + j;
                        if c < d_out {
                            *w = word(p * per_word, c);
                        }
                    }
                }
            });
        PackedPanels {
            d_in,
            d_out,
            depth,
            words,
        }
    }

    /// A packing of zeros, for a caller that fills it panel by panel ([`Self::panel_mut`]).
    pub fn zeroed(d_in: usize, d_out: usize, per_word: usize) -> Self {
        let depth = d_in.div_ceil(per_word);
        let panels = d_out.div_ceil(PANEL_COLUMNS);
        PackedPanels {
            d_in,
            d_out,
            depth,
            words: vec![0u32; panels * depth * PANEL_COLUMNS],
        }
    }

    /// Panel `panel`'s `depth × PANEL_COLUMNS` words (word `w` of column `j` at
    /// `w · PANEL_COLUMNS + j`).
    pub fn panel_mut(&mut self, panel: usize) -> &mut [u32] {
        let len = self.depth * PANEL_COLUMNS;
        &mut self.words[panel * len..(panel + 1) * len]
    }

    /// The `[rows, d_out]` output of `kernel` over every tile, for the activations `a`
    /// (`rows × depth` words), on every thread of the pool.
    pub fn multiply<K: TileKernel>(&self, kernel: &K, a: &[u32], rows: usize) -> Vec<f32> {
        let len = rows * self.d_out;
        // Not zeroed first: the tiles cover every row and column, and a kernel's first slice
        // never reads the output.
        let mut y: Vec<f32> = Vec::with_capacity(len);
        let out = Output {
            start: y.as_mut_ptr(),
            stride: self.d_out,
        };
        // SAFETY: `y` has room for `rows` rows of `d_out` floats and nothing else holds it; the
        // call writes every one of them (see above), so all `len` are initialised after it.
        unsafe {
            self.multiply_into(kernel, a, rows, out, Threads::Pool);
            y.set_len(len);
        }
        y
    }

    /// As [`Self::multiply`], into `rows` rows of `d_out` floats at `out`'s stride, on `threads`.
    ///
    /// # Safety
    /// `out` covers `rows` rows of `d_out` writable floats at its stride, which nothing else
    /// reads or writes during the call.
    pub unsafe fn multiply_into<K: TileKernel>(
        &self,
        kernel: &K,
        a: &[u32],
        rows: usize,
        out: Output,
        threads: Threads,
    ) {
        assert_eq!(
            a.len(),
            rows * self.depth,
            "packed product: activation words"
        );
        assert!(out.stride >= self.d_out, "packed product: output stride");
        if rows == 0 || self.d_out == 0 {
            return;
        }
        if threads == Threads::Caller {
            let panels = self.d_out.div_ceil(PANEL_COLUMNS);
            for block in (0..rows).step_by(BLOCK_ROWS) {
                for panel in 0..panels {
                    let block_rows = block..(block + BLOCK_ROWS).min(rows);
                    self.panel_block(kernel, a, out, block_rows, panel);
                }
            }
            return;
        }
        let panels = self.d_out.div_ceil(PANEL_COLUMNS);
        let row_blocks = rows.div_ceil(BLOCK_ROWS);
        // Few rows (a short request): split the panels too, so every thread gets work.
        let wanted_tasks = 4 * rayon::current_num_threads();
        let panel_groups = (wanted_tasks / row_blocks).clamp(1, panels);
        let panels_per_group = panels.div_ceil(panel_groups);
        (0..row_blocks * panel_groups)
            .into_par_iter()
            .for_each(|task| {
                let (block, group) = (task / panel_groups, task % panel_groups);
                let rows = block * BLOCK_ROWS..((block + 1) * BLOCK_ROWS).min(rows);
                let first_panel = group * panels_per_group;
                for panel in first_panel..(first_panel + panels_per_group).min(panels) {
                    self.panel_block(kernel, a, out, rows.clone(), panel);
                }
            });
    }

    /// The output rectangle of `rows` × one panel. Tasks call it for disjoint rectangles.
    fn panel_block<K: TileKernel>(
        &self,
        kernel: &K,
        a: &[u32],
        out: Output,
        rows: std::ops::Range<usize>,
        panel: usize,
    ) {
        let first_column = panel * PANEL_COLUMNS;
        let columns = (self.d_out - first_column).min(PANEL_COLUMNS);
        let panel_words =
            &self.words[panel * self.depth * PANEL_COLUMNS..][..self.depth * PANEL_COLUMNS];
        let mut start = 0;
        while start < self.depth {
            let words = (self.depth - start).min(DEPTH_WORDS);
            let slice = Slice {
                first: start == 0,
                last: start + words == self.depth,
            };
            let mut row = rows.start;
            while row < rows.end {
                let tile_rows = (rows.end - row).min(TILE_ROWS);
                let tile = Tile {
                    a: a[row * self.depth + start..].as_ptr(),
                    a_stride: self.depth,
                    b: panel_words[start * PANEL_COLUMNS..].as_ptr(),
                    words,
                    // SAFETY: row < rows ≤ the output's rows and first_column < d_out, so the
                    // offset stays inside the output.
                    out: unsafe { out.start.add(row * out.stride + first_column) },
                    out_stride: out.stride,
                    first_row: row,
                    rows: tile_rows,
                    first_column,
                    columns,
                };
                // SAFETY: the tile's pointers cover `tile_rows` rows of `words` activation
                // words at their stride, `words` panel rows of 32 words, and `tile_rows` rows of
                // `columns` output floats, which only this task writes.
                unsafe { kernel.tile(&tile, slice) };
                row += tile_rows;
            }
            start += words;
        }
    }
}

/// Where a depth slice lies: what the accumulators start from and how they are stored.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    /// The first slice: nothing accumulated in the output yet.
    pub first: bool,
    /// The last slice: the accumulators are final.
    pub last: bool,
}

/// One register tile: `rows` (1..=8) rows × one panel, over one depth slice.
pub struct Tile {
    /// The first row's first word of the slice; row r at `a + r · a_stride`.
    pub a: *const u32,
    pub a_stride: usize,
    /// The panel's slice: `words × PANEL_COLUMNS` words.
    pub b: *const u32,
    pub words: usize,
    /// The first row's first column of the output; row r at `out + r · out_stride`.
    pub out: *mut f32,
    pub out_stride: usize,
    /// The tile's first row and first column in the whole output.
    pub first_row: usize,
    pub rows: usize,
    pub first_column: usize,
    /// Valid columns of the panel (≤ 32).
    pub columns: usize,
}

/// Which compilation of a tile kernel's code runs: for this CPU's AVX-512, or (in tests)
/// against the portable emulation of the same intrinsics, which any CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intrinsics {
    Native,
    #[cfg(test)]
    Emulated,
}

#[cfg(test)]
impl Intrinsics {
    /// Every compilation a kernel's tests run: the emulation always, the native code where
    /// the CPU has the kernel's instructions (`native_available`).
    pub fn runnable(native_available: bool) -> Vec<Self> {
        let mut all = vec![Intrinsics::Emulated];
        if native_available {
            all.push(Intrinsics::Native);
        }
        all
    }
}

/// `n` deterministic test values in about ±2, spread by `seed`.
#[cfg(test)]
pub fn test_values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 500.0)
        .collect()
}

/// The largest |got − value| / (1 + scale) over a product's outputs, each wanted as
/// (value, scale): what a kernel's test bounds.
#[cfg(test)]
pub fn worst_scaled_error(got: &[f32], want: &[(f64, f64)]) -> f64 {
    assert_eq!(got.len(), want.len(), "one wanted value an output");
    got.iter()
        .zip(want)
        .map(|(&g, &(value, scale))| (f64::from(g) - value).abs() / (1.0 + scale))
        .fold(0.0, f64::max)
}

/// The output of `product` on every compilation a test runs ([`Intrinsics::runnable`]), each
/// asserted within `bound` of `want` ([`worst_scaled_error`]); `case` names the test case.
#[cfg(test)]
pub fn outputs_within(
    native_available: bool,
    want: &[(f64, f64)],
    bound: f64,
    case: &str,
    product: impl Fn(Intrinsics) -> Vec<f32>,
) -> Vec<Vec<f32>> {
    Intrinsics::runnable(native_available)
        .into_iter()
        .map(|intrinsics| {
            let got = product(intrinsics);
            let worst = worst_scaled_error(&got, want);
            assert!(worst < bound, "{case}, {intrinsics:?}: off by {worst}");
            got
        })
        .collect()
}

/// Computes one tile: accumulates its slice's products and stores the accumulators.
pub trait TileKernel: Sync {
    /// # Safety
    /// The CPU has the kernel's instructions; `tile`'s pointers are valid as [`Tile`] says, and
    /// its output rows are written by no other thread.
    unsafe fn tile(&self, tile: &Tile, slice: Slice);
}

/// A product's output: its first row's first float and its row stride. Shared by tasks that
/// write disjoint parts of it.
#[derive(Clone, Copy)]
pub struct Output {
    pub start: *mut f32,
    pub stride: usize,
}
// SAFETY: tasks only write disjoint rectangles through it (see `multiply_into`).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

/// Lane masks for the two registers of a panel with `columns` valid columns.
pub fn column_masks(columns: usize) -> [u16; 2] {
    let mask = |n: usize| if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
    [mask(columns.min(16)), mask(columns.saturating_sub(16))]
}

/// Dispatches `$body` with a const `$rows` in 1..=8 equal to `$n` (so a tile's accumulator
/// array has a size known at compile time and lives in registers).
macro_rules! with_tile_rows {
    ($n:expr, $rows:ident => $body:expr) => {
        match $n {
            1 => {
                const $rows: usize = 1;
                $body
            }
            2 => {
                const $rows: usize = 2;
                $body
            }
            3 => {
                const $rows: usize = 3;
                $body
            }
            4 => {
                const $rows: usize = 4;
                $body
            }
            5 => {
                const $rows: usize = 5;
                $body
            }
            6 => {
                const $rows: usize = 6;
                $body
            }
            7 => {
                const $rows: usize = 7;
                $body
            }
            _ => {
                const $rows: usize = 8;
                $body
            }
        }
    };
}

pub(crate) use with_tile_rows;
