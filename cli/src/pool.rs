//! A small persistent thread pool for the training steps: a step of the thesis's scheme takes
//! well under a millisecond, so spawning threads for each of its phases (tens of microseconds
//! each) would cost more than the second core gives. The workers wait for a job by spinning
//! briefly (only when there are no more threads than cores: a spinning thread would otherwise
//! take a core from a working one), then sleeping on a condition variable; [`Pool::each`] runs
//! one closure per item, the calling thread taking its share, and returns when every item is
//! done. The pool holds one job at a time: a job posted while another runs (by another thread
//! sharing the pool, or by a task of the running job) runs on its caller's thread alone.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ienk::workers::Workers;

use crate::error::{CliError, Result};

/// How long an idle worker spins before it sleeps (when the pool has no more threads than the
/// machine has cores): covers the gap between two phases of a step.
const SPIN: Duration = Duration::from_micros(200);

/// A job: task `i` runs `f(i)`; the lifetime is erased (see [`Pool::run`]).
type Job = &'static (dyn Fn(usize) + Sync);

struct State {
    job: Option<Job>,
    tasks: usize,
    next: usize,
    /// Tasks handed out and not finished.
    running: usize,
    panicked: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    /// Bumped whenever a job is posted or the pool shuts down (read while spinning).
    generation: AtomicU64,
}

/// `threads - 1` persistent workers plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a job is posted: the state holds one job at a time, so a second caller (another
    /// thread sharing the pool, or a task of the running job) runs its tasks itself instead.
    posting: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` (at least 1; 1 runs everything on the calling thread, no worker), or
    /// an error when the system refuses a thread (the ones started are stopped again).
    pub fn new(threads: usize) -> Result<Pool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                tasks: 0,
                next: 0,
                running: 0,
                panicked: false,
                shutdown: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            generation: AtomicU64::new(0),
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = if threads <= cores { SPIN } else { Duration::ZERO };
        let mut pool = Pool {
            shared,
            workers: Vec::new(),
            posting: Mutex::new(()),
        };
        for started in 1..threads.max(1) {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name("ienk-worker".into())
                .spawn(move || worker(&shared, spin))
                .map_err(|e| {
                    CliError::BadInput(format!(
                        "cannot start worker thread {} of {threads}: {e}; lower --threads",
                        started + 1
                    ))
                })?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Threads that run tasks, the calling one included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f` on each item, in parallel over the pool's threads; the first error wins. A
    /// panic in a task becomes an error.
    pub fn each<T: Send>(&self, items: Vec<T>, f: impl Fn(T) -> Result<()> + Sync) -> Result<()> {
        self.run_items(items, f)
            .unwrap_or_else(|Panicked| Err(CliError::Failed("a worker thread panicked".into())))
    }

    /// Runs `f` on each item over the pool: the first error `f` returned, or [`Panicked`] when
    /// a task panicked.
    fn run_items<T: Send, E: Send>(
        &self,
        items: Vec<T>,
        f: impl Fn(T) -> std::result::Result<(), E> + Sync,
    ) -> std::result::Result<std::result::Result<(), E>, Panicked> {
        let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
        let first_error: Mutex<Option<E>> = Mutex::new(None);
        let task = |i: usize| {
            let item = lock(&slots[i]).take();
            if let Some(Err(e)) = item.map(&f) {
                lock(&first_error).get_or_insert(e);
            }
        };
        if self.run(slots.len(), &task) {
            return Err(Panicked);
        }
        match first_error.into_inner() {
            Ok(Some(e)) => Ok(Err(e)),
            Ok(None) => Ok(Ok(())),
            Err(_) => Err(Panicked),
        }
    }

    /// Runs `f(0) .. f(tasks - 1)` over the pool and returns once all have finished, reporting
    /// whether one panicked. While another job is posted (a call from another thread, or from
    /// one of that job's tasks), the calling thread runs every task itself.
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        let inline = || (0..tasks).any(|i| catch_unwind(AssertUnwindSafe(|| f(i))).is_err());
        if self.workers.is_empty() || tasks <= 1 {
            return inline();
        }
        // Held until this job is done; the lock is only taken for a job the workers share.
        let _posting = match self.posting.try_lock() {
            Ok(guard) => guard,
            // A panic never happens while the lock is held (tasks run under catch_unwind).
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return inline(),
        };
        // SAFETY: the reference is only used through `State::job` by tasks handed out below,
        // and this function does not return before every handed-out task has finished
        // (`running == 0` under the lock, also on the panic path: tasks run under
        // catch_unwind) and the job is cleared; no task can start after that. No other job
        // replaces this one meanwhile: `_posting` is held until then. So every use of the
        // erased reference happens while `f` is borrowed here.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        {
            let mut st = lock(&self.shared.state);
            st.job = Some(job);
            st.tasks = tasks;
            st.next = 0;
            st.running = 0;
            st.panicked = false;
            self.shared.generation.fetch_add(1, Ordering::Release);
        }
        self.shared.wake.notify_all();
        let mut st = lock(&self.shared.state);
        st = take_tasks(&self.shared, st);
        while st.running > 0 || st.next < st.tasks {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
        st.panicked
    }
}

/// A task of [`Pool::each`] panicked.
struct Panicked;

/// The core's steps cut their work into jobs for the pool's threads
/// (`ienk::ensemble::resampled::Resampled::step_on`).
impl Workers for Pool {
    fn count(&self) -> usize {
        self.threads()
    }

    /// [`Pool::each`] on the jobs; a panicking job panics the caller (as `std::thread::scope`
    /// does), after every other job has finished.
    fn each<J: Send, E: Send>(
        &self,
        jobs: impl Iterator<Item = J>,
        work: impl Fn(J) -> std::result::Result<(), E> + Sync,
    ) -> std::result::Result<(), E> {
        self.run_items(jobs.collect(), work)
            .unwrap_or_else(|Panicked| panic!("a worker thread of the step panicked"))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.generation.fetch_add(1, Ordering::Release);
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            // A worker cannot panic outside catch_unwind; nothing to report at teardown.
            let _ = w.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs tasks of the posted job until none is left to hand out; returns the lock.
fn take_tasks<'a>(shared: &'a Shared, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    while let (Some(job), true) = (st.job, st.next < st.tasks) {
        let i = st.next;
        st.next += 1;
        st.running += 1;
        drop(st);
        let ok = catch_unwind(AssertUnwindSafe(|| job(i))).is_ok();
        st = lock(&shared.state);
        st.running -= 1;
        st.panicked |= !ok;
        if st.running == 0 && st.next >= st.tasks {
            shared.done.notify_all();
        }
    }
    st
}

fn worker(shared: &Shared, spin: Duration) {
    let mut seen = shared.generation.load(Ordering::Acquire);
    loop {
        // Spin a little: the next phase of a step usually comes within microseconds.
        let spin_until = Instant::now() + spin;
        while shared.generation.load(Ordering::Acquire) == seen && Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let mut st = lock(&shared.state);
        while shared.generation.load(Ordering::Acquire) == seen && !st.shutdown {
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.shutdown {
            return;
        }
        seen = shared.generation.load(Ordering::Acquire);
        drop(take_tasks(shared, st));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_item_runs_once_on_any_thread_count() {
        for threads in [1, 2, 3, 5] {
            let pool = Pool::new(threads).unwrap();
            for items in [0usize, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                let mut out = vec![0usize; items];
                let jobs: Vec<_> = out.iter_mut().enumerate().collect();
                pool.each(jobs, |(i, slot)| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                    *slot = i * i;
                    Ok(())
                })
                .unwrap();
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{threads} threads"
                );
                assert!(out.iter().enumerate().all(|(i, &v)| v == i * i));
            }
        }
    }

    /// Jobs posted from two threads sharing the pool, and from inside a task, each run every
    /// item once: a caller that finds a job posted runs its own tasks. (Two jobs posted at once
    /// used to clobber each other's state and hang: a watchdog turns a hang into a failure.)
    #[test]
    fn concurrent_and_nested_jobs_each_run_every_item_once() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            concurrent_and_nested_jobs();
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the jobs finished within a minute");
    }

    fn concurrent_and_nested_jobs() {
        let pool = Pool::new(3).unwrap();
        let sum_of_squares = |n: usize| -> usize {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.each((0..n).collect(), |i| {
                hits[i].fetch_add(i * i, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
            hits.iter().map(|h| h.load(Ordering::Relaxed)).sum()
        };
        let expected = |n: usize| (0..n).map(|i| i * i).sum::<usize>();
        std::thread::scope(|scope| {
            let callers: Vec<_> = (0..2)
                .map(|t| {
                    scope.spawn(move || {
                        (0..300).all(|round| {
                            let n = 5 + (round + t) % 40;
                            sum_of_squares(n) == expected(n)
                        })
                    })
                })
                .collect();
            for caller in callers {
                assert!(
                    caller.join().unwrap(),
                    "a concurrent job lost or repeated an item"
                );
            }
        });
        let inner: Vec<AtomicUsize> = (0..8).map(|_| AtomicUsize::new(0)).collect();
        pool.each((0..8).collect(), |i| {
            inner[i].store(sum_of_squares(10 + i), Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert!(
            inner
                .iter()
                .enumerate()
                .all(|(i, v)| v.load(Ordering::Relaxed) == expected(10 + i))
        );
    }

    #[test]
    fn an_error_or_a_panic_is_reported_and_the_pool_keeps_working() {
        let pool = Pool::new(3).unwrap();
        let failed = pool.each((0..10).collect(), |i| {
            if i == 6 {
                Err(CliError::Failed(format!("item {i}")))
            } else {
                Ok(())
            }
        });
        assert!(matches!(failed, Err(CliError::Failed(m)) if m == "item 6"));
        let panicked = pool.each((0..10).collect(), |i: usize| {
            assert!(i != 3, "task panics on purpose");
            Ok(())
        });
        assert!(matches!(panicked, Err(CliError::Failed(m)) if m.contains("panicked")));
        let count = AtomicUsize::new(0);
        pool.each((0..10).collect(), |_: usize| {
            count.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }
}
