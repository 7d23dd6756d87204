//! # ienk
//!
//! The `no_std` core of ienk: a zero-copy MNIST (IDX) parser, cache-blocked f32 matrix kernels
//! over plain slices, a fixed-layout 784-H-10 MLP with cross-entropy, gradient baselines, and the
//! iterative ensemble Kalman (IEnK / EKI) optimizers. No heap on the main paths: every function
//! that needs scratch says how much and takes it as a slice.
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
