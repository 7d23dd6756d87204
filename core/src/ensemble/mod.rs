//! Ensemble Kalman optimizers: the resampled IEnK of the thesis and Kovachki & Stuart's EKI, with
//! the perturbations and particle forward passes they share.

pub mod collapse;
pub mod coupling;
pub mod eki;
pub mod low_rank_update;
pub mod particles;
pub mod perturb;
pub mod projected;
pub mod resampled;
pub mod step;
