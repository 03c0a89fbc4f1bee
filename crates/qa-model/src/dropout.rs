//! Dropout, as `burn::nn::Dropout` computes it (keep with probability 1 − p, scale by 1/(1 − p),
//! identity outside training), with one difference on backends that draw random tensors on the
//! host one element at a time (NdArray): there the mask is drawn here, in parallel with a small
//! fast RNG, and already scaled. Burn's way cost a quarter of MiniLM's CPU training time
//! (ChaCha, 8 bytes per element, on one thread, then two passes over the tensor). GPU backends
//! keep drawing on the device.

use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use rand::{RngCore, SeedableRng};

pub fn dropout<B: Backend, const D: usize>(layer: &Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
    let (dims, device) = (x.dims(), x.device());
    match host_mask::<B>(layer, dims.iter().product(), &device) {
        Some(mask) => x * crate::fused::tensor_from_vec::<B, D>(mask, dims, &device),
        None => layer.forward(x),
    }
}

/// The mask [`dropout`] multiplies `n` elements by on a backend that draws on the host (see
/// [`mask`]); `None` when dropout is off (inference, p = 0) or the backend draws on the device.
/// Fused kernels that apply dropout themselves draw it here, so their masks are the same.
pub(crate) fn host_mask<B: Backend>(
    layer: &Dropout,
    n: usize,
    device: &B::Device,
) -> Option<Vec<f32>> {
    if !B::ad_enabled() || layer.prob == 0.0 || !crate::backend::draws_random_on_host::<B>() {
        return None;
    }
    let seed = HOST_MASKS
        .with(|rng| rng.borrow_mut().as_mut().map(|rng| rng.next_u64()))
        .unwrap_or_else(|| {
            // Unseeded thread: the stream's seed comes from the backend's own RNG, so `B::seed`
            // still makes runs reproducible.
            let draw = Tensor::<B, 1>::random([2], Distribution::Default, device)
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32 data");
            u64::from((draw[0] * 16_777_216.0) as u32) << 24
                | u64::from((draw[1] * 16_777_216.0) as u32)
        });
    Some(mask(n, 1.0 - layer.prob, seed))
}

thread_local! {
    /// This thread's mask seeds, once [`seed_host_masks`] was called on it.
    static HOST_MASKS: std::cell::RefCell<Option<rand::rngs::SmallRng>> =
        const { std::cell::RefCell::new(None) };
}

/// Seeds the masks this thread draws on the host (NdArray). The backend's own RNG is one per
/// process, so peers training on several threads would draw from it in a racing order; a
/// thread's own stream keeps each peer's masks a function of its seeds alone.
pub fn seed_host_masks(seed: u64) {
    HOST_MASKS.with(|rng| *rng.borrow_mut() = Some(rand::rngs::SmallRng::seed_from_u64(seed)));
}

/// `n` values, each 1/keep with probability `keep` and 0 otherwise.
pub fn mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    let scale = (1.0 / keep) as f32;
    // Keep when a uniform u32 falls below keep · 2³².
    let threshold = (keep * 4_294_967_296.0).min(u32::MAX as f64) as u32;
    let mut out = vec![0f32; n];
    crate::streams::fill_chunks(&mut out, seed, |chunk, rng| {
        for pair in chunk.chunks_mut(2) {
            let bits = rng.next_u64();
            for (j, v) in pair.iter_mut().enumerate() {
                if ((bits >> (32 * j)) as u32) < threshold {
                    *v = scale;
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::CHUNK;

    #[test]
    fn mask_keeps_the_right_share_scaled_and_depends_on_the_seed() {
        let n = 1_000_003;
        let m = mask(n, 0.9, 7);
        let kept = m.iter().filter(|&&v| v != 0.0).count();
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        // Binomial(n, 0.9): standard deviation 300; allow 5 of them.
        let expected = 0.9 * n as f64;
        assert!((kept as f64 - expected).abs() < 1500.0, "kept {kept}");
        // The mean is preserved, as dropout must.
        let mean = m.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 2e-3, "mean {mean}");
        assert_eq!(m, mask(n, 0.9, 7));
        assert_ne!(m, mask(n, 0.9, 8));
        // Chunks are independent streams, not copies of one another.
        assert_ne!(m[..CHUNK], m[CHUNK..2 * CHUNK]);
    }

    #[test]
    fn dropout_is_scaled_masking_in_training_reproducible_by_seed_and_off_in_inference() {
        use crate::backend::{default_device, Compute, Train};
        let layer = burn::nn::DropoutConfig::new(0.5).init();
        let device = default_device();
        let draw = |seed| {
            <Train as Backend>::seed(&device, seed);
            let out = dropout(&layer, Tensor::<Train, 2>::ones([64, 1000], &device));
            out.into_data().convert::<f32>().into_vec::<f32>().unwrap()
        };
        let a = draw(3);
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!(
            (31_000..33_000).contains(&zeros),
            "{zeros} of 64000 dropped"
        );
        assert_eq!(a, draw(3));
        assert_ne!(a, draw(4));
        let x = Tensor::<Compute, 2>::ones([4, 4], &device);
        assert_eq!(dropout(&layer, x.clone()).into_data(), x.into_data());
    }
}
