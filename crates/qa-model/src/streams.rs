//! Random streams for filling big buffers in parallel (dropout masks, fresh weights): one stream
//! per fixed-size chunk, seeded from a seed and the chunk's index, so the values depend on the
//! seed alone, never on how many threads draw them.

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rayon::prelude::*;

/// Elements per stream: large enough to amortise seeding, small enough to spread over cores.
pub const CHUNK: usize = 1 << 16;

/// Fills `out` in parallel, calling `fill` on each [`CHUNK`]-sized chunk with that chunk's stream.
pub fn fill_chunks<T: Send>(
    out: &mut [T],
    seed: u64,
    fill: impl Fn(&mut [T], &mut SmallRng) + Sync,
) {
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let stream = seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            fill(chunk, &mut SmallRng::seed_from_u64(stream));
        });
}
