//! The seam between the core's steps and a caller's threads.
//!
//! A step that can use several threads ([`crate::ensemble::resampled::Resampled::step_on`]) cuts
//! its work into jobs over disjoint slices of the caller's buffers and hands them to a
//! [`Workers`]: [`OneThread`] runs them one after the other (what firmware has), a std program's
//! thread pool runs them at once (`ienk-cli` implements it on its pool). The core itself never
//! starts a thread and allocates nothing here.
//!
//! A std program can run the jobs on scoped threads, one thread per job (a pool that keeps its
//! threads, as `ienk-cli`'s does, saves their start-up at every phase of a step):
//!
//! ```
//! use ienk::workers::Workers;
//!
//! struct Scoped(usize);
//!
//! impl Workers for Scoped {
//!     fn count(&self) -> usize {
//!         self.0
//!     }
//!
//!     fn each<J: Send, E: Send>(
//!         &self,
//!         jobs: impl Iterator<Item = J>,
//!         work: impl Fn(J) -> Result<(), E> + Sync,
//!     ) -> Result<(), E> {
//!         let work = &work;
//!         std::thread::scope(|s| {
//!             let running: Vec<_> = jobs.map(|job| s.spawn(move || work(job))).collect();
//!             running.into_iter().try_for_each(|t| t.join().expect("a job panicked"))
//!         })
//!     }
//! }
//!
//! // Each job gets its own part of a buffer, as a step's phases cut theirs.
//! let mut squares = [0u64; 10];
//! let workers = Scoped(3);
//! let per = ienk::workers::part_len(squares.len(), workers.count());
//! let jobs = squares.chunks_mut(per).enumerate();
//! workers.each(jobs, |(part, chunk)| {
//!     for (i, v) in chunk.iter_mut().enumerate() {
//!         let n = (part * per + i) as u64;
//!         *v = n * n;
//!     }
//!     Ok::<(), ()>(())
//! })?;
//! assert_eq!(squares[9], 81);
//! # Ok::<(), ()>(())
//! ```
//!
//! [`Resampled::step_on`](crate::ensemble::resampled::Resampled::step_on)`(&workers, ...)`
//! then runs an IEnK step on them, in a workspace of
//! [`step_workspace_len`](crate::ensemble::resampled::Resampled::step_workspace_len)`(batch,
//! workers.count())` floats.

/// Runs independent jobs, perhaps at the same time.
pub trait Workers {
    /// How many jobs may run at once (at least 1): callers cut their work into this many
    /// parts, and size their per-worker buffers by it.
    fn count(&self) -> usize;

    /// Runs `work` on every job, in any order and on any of the workers, and returns once none
    /// is running: `Ok` when all succeeded, else one of the errors (jobs not yet started when
    /// it came may be skipped). A panicking job panics the caller.
    fn each<J: Send, E: Send>(
        &self,
        jobs: impl Iterator<Item = J>,
        work: impl Fn(J) -> Result<(), E> + Sync,
    ) -> Result<(), E>;
}

/// The calling thread alone: jobs run one after the other, up to the first error. O(1) per job
/// beyond the job itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct OneThread;

impl Workers for OneThread {
    fn count(&self) -> usize {
        1
    }

    fn each<J: Send, E: Send>(
        &self,
        mut jobs: impl Iterator<Item = J>,
        work: impl Fn(J) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        jobs.try_for_each(work)
    }
}

/// Length of each part when `n` items are cut into at most `parts` contiguous parts of nearly
/// equal length: `ceil(n / parts)`, at least 1 (the last part may be shorter, and parts past
/// `n` are empty and left out). O(1).
pub fn part_len(n: usize, parts: usize) -> usize {
    n.div_ceil(parts.max(1)).max(1)
}

/// `0..n` cut into contiguous ranges of [`part_len`]`(n, parts)` (the last one shorter): at most
/// `parts` of them, none empty. O(1) per range.
pub fn part_ranges(n: usize, parts: usize) -> impl Iterator<Item = core::ops::Range<usize>> {
    let per = part_len(n, parts);
    (0..n).step_by(per).map(move |s| s..(s + per).min(n))
}

/// Consecutive chunks of `len` of `s`, as many as it holds whole (without end when `len` is 0):
/// each worker's share of a buffer sized per worker. O(1) per item.
pub fn shares<T>(s: &mut [T], len: usize) -> impl Iterator<Item = &mut [T]> {
    let mut rest = s;
    core::iter::from_fn(move || {
        if rest.len() < len {
            return None;
        }
        let (head, tail) = core::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        Some(head)
    })
}

/// Consecutive chunks of `len` of `s` (the last one shorter), then empty slices without end:
/// each job's share of a buffer cut by [`part_len`], zipped with [`part_ranges`] (which ends) or
/// taken once per worker. O(1) per item.
pub fn pieces<T>(s: &mut [T], len: usize) -> impl Iterator<Item = &mut [T]> {
    let mut rest = s;
    core::iter::from_fn(move || {
        let n = len.min(rest.len());
        let (head, tail) = core::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        Some(head)
    })
}

/// Consecutive chunks of `n` of `s` (the last one shorter) when `s` is given, else `None`
/// without end: a job's share of an optional buffer, zipped with its other shares. O(1) per
/// item.
pub fn optional_chunks<T>(s: Option<&mut [T]>, n: usize) -> impl Iterator<Item = Option<&mut [T]>> {
    let mut chunks = s.map(|s| s.chunks_mut(n.max(1)));
    core::iter::from_fn(move || Some(chunks.as_mut().and_then(Iterator::next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_items_once_in_order() {
        for n in 0..40 {
            for parts in 0..9 {
                let mut next = 0;
                let mut count = 0;
                for r in part_ranges(n, parts) {
                    assert_eq!(r.start, next);
                    assert!(!r.is_empty() && r.len() <= part_len(n, parts));
                    next = r.end;
                    count += 1;
                }
                assert_eq!(next, n);
                assert!(count <= parts.max(1), "{n} items, {parts} parts: {count}");
            }
        }
    }

    #[test]
    fn one_thread_runs_every_job_in_order_and_stops_at_the_first_error() {
        let mut slots = [0usize; 8];
        OneThread
            .each(slots.iter_mut().enumerate(), |(i, s)| {
                *s = i + 1;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(slots, [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut slots = [0usize; 8];
        let result = OneThread.each(slots.iter_mut().enumerate(), |(i, s)| {
            if i == 3 {
                return Err(i);
            }
            *s = 1;
            Ok(())
        });
        assert_eq!(result, Err(3));
        assert_eq!(slots, [1, 1, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn shares_are_whole_and_never_run_out_when_empty() {
        let mut buf = [0u8; 7];
        assert!(shares(&mut buf, 3).map(|s| s.len()).eq([3, 3]));
        assert_eq!(shares(&mut buf, 0).take(5).count(), 5);
    }

    #[test]
    fn pieces_cover_the_buffer_then_stay_empty() {
        let mut buf = [0u8; 7];
        assert!(pieces(&mut buf, 3).take(5).map(|s| s.len()).eq([3, 3, 1, 0, 0]));
        assert!(pieces(&mut buf, 0).take(3).all(|s| s.is_empty()));
        assert!(pieces(&mut buf, 9).take(2).map(|s| s.len()).eq([7, 0]));
    }

    #[test]
    fn optional_chunks_share_a_buffer_or_give_none() {
        let mut buf = [0u8; 7];
        let shares: usize = optional_chunks(Some(&mut buf[..]), 3)
            .take(5)
            .map(|c| c.map_or(0, |c| c.len()))
            .sum();
        assert_eq!(shares, 7);
        assert!(optional_chunks::<u8>(None, 3).take(4).all(|c| c.is_none()));
    }
}
