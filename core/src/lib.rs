//! # ienk
//!
//! The `no_std` core of ienk: a zero-copy MNIST (IDX) parser, cache-blocked f32 matrix kernels
//! over plain slices, a fixed-layout 784-H-10 MLP with cross-entropy, gradient baselines, and the
//! iterative ensemble Kalman (IEnK / EKI) optimizers. No heap on the main paths: every function
//! that needs scratch says how much and takes it as a slice.
//!
//! ## Training without derivatives
//!
//! [`ensemble::resampled::Resampled::step`] is one IEnK step in caller buffers: an ensemble of
//! perturbed networks is run forward on the batch and the weights move along the perturbations
//! whose outputs best explain the labels. Here a 2-8-2 network learns which of two inputs is
//! the larger (the buffers are `Vec`s for brevity; `core/firmware` trains MNIST on a Cortex-M4F
//! in fixed-size arrays):
//!
//! ```
//! use ienk::ensemble::perturb::Perturbations;
//! use ienk::ensemble::resampled::{Form, Resampled, Stabiliser};
//! use ienk::ensemble::step::StepBuffers;
//! use ienk::mlp::Layout;
//! use ienk::normal::Normal;
//! use ienk::seeds::{Stream, perturbation_seed, rng};
//!
//! let layout = Layout { inputs: 2, hidden: 8, outputs: 2 };
//! let normal = Normal::new();
//! let mut theta = vec![0f32; layout.num_params()];
//! layout.init_glorot(&mut theta, &normal, &mut rng(7, Stream::Init))?;
//! let rule = Resampled {
//!     perturb: Perturbations {
//!         layout,
//!         std: layout.glorot_std(), // each layer perturbed at its initialisation's scale
//!         rank: 0,                  // full rank; r > 0 for rank-r perturbations
//!         antithetic: true,         // members in pairs (delta, -delta)
//!         seed: perturbation_seed(7),
//!     },
//!     members: 32,
//!     form: Form::Logit,
//!     lr: 0.01, // h of theta -= h sum_k c_k delta_k
//!     momentum: 0.0,
//!     normalize: false,
//! };
//! let batch = 16;
//! let mut work = vec![0f32; rule.step_workspace_len(batch, 1)];
//! let (mut columns, mut coefficients) = (vec![0u32; layout.inputs], vec![0f64; rule.members]);
//! let (mut x, mut y) = (vec![0f32; batch * 2], vec![0u8; batch]);
//! let mut correct = 0;
//! for step in 0..400u64 {
//!     for b in 0..batch {
//!         let t = (step * batch as u64 + b as u64) as f32;
//!         let (u, v) = ((t * 0.618_034).fract(), (t * 0.754_878).fract());
//!         (x[2 * b], x[2 * b + 1], y[b]) = (u, v, u8::from(v > u));
//!     }
//!     let buffers = StepBuffers {
//!         work: &mut work,
//!         columns: &mut columns,
//!         coefficients: &mut coefficients,
//!         stored: None,
//!         direction: None,
//!     };
//!     let no_stabiliser = Stabiliser { center: false, clip: None };
//!     // The batch's loss and accuracy before the update.
//!     let stats = rule.step(&normal, no_stabiliser, &mut theta, None, &x, &y, step, buffers)?;
//!     if step >= 300 {
//!         correct += stats.correct;
//!     }
//! }
//! assert!(correct as f64 / (100 * batch) as f64 > 0.9);
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! ## Inference
//!
//! A model file is safetensors with PyTorch's tensor names ([`safetensors`]), and
//! [`mlp::Layout::forward`] gives the logits of a batch ([`idx`] reads MNIST's own files without
//! copying them; `core/examples/no_heap_inference.rs` evaluates the test set in fixed buffers):
//!
//! ```
//! use core::error::Error;
//! use ienk::{loss, safetensors};
//!
//! /// The digit a model file's network predicts for one image (784 pixels / 255).
//! fn predict<'a>(model_file: &'a [u8], image: &[f32]) -> Result<usize, Box<dyn Error + 'a>> {
//!     let model = safetensors::read(model_file, 784, 10)?;
//!     let layout = model.layout;
//!     let mut theta = vec![0f32; layout.num_params()];
//!     model.copy_params(&mut theta)?;
//!     let (mut hidden, mut logits) = (vec![0f32; layout.hidden], [0f32; 10]);
//!     let mut scratch = vec![0f32; layout.forward_scratch_len(1)];
//!     layout.forward(&theta, image, &mut hidden, &mut logits, &mut scratch)?;
//!     Ok(loss::argmax(&logits))
//! }
//!
//! // A network whose only non-zero parameter is the output bias of digit 3, saved to bytes as
//! // `ienk-cli train` saves a model.
//! let layout = ienk::mlp::Layout::mnist(16);
//! let mut theta = vec![0f32; layout.num_params()];
//! theta[layout.num_params() - 10 + 3] = 1.0;
//! let mut model_file = vec![0u8; safetensors::serialized_len(&layout, &[])];
//! safetensors::write(&layout, &theta, &[], &mut model_file)?;
//! assert_eq!(predict(&model_file, &[0.5; 784]).expect("a valid model"), 3);
//! # Ok::<(), Box<dyn Error>>(())
//! ```
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate std;

pub mod batch;
pub mod ensemble;
pub mod exp;
pub mod gemm;
pub mod idx;
pub mod json;
pub mod loss;
pub mod mlp;
pub mod normal;
pub mod optim;
pub mod prefetch;
pub mod safetensors;
pub mod seeds;
pub mod sparse;
pub mod workers;
