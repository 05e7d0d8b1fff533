//! Bounded fan-out: one future per host, at most `limit` running at once,
//! all polled by the calling task (issue 14).
//!
//! The deployment's phases that change nothing live (locks, flags, upload
//! and stage, the probes before) run this way. The futures run on the
//! sequencer's own task rather than spawned ones, so they may borrow the
//! plan and the controller journal (a rusqlite `Connection`, not `Sync`):
//! a journal write is a synchronous call between two awaits, so writes
//! never interleave and stay on the sequencer task. The results come back
//! in the order of the hosts, whatever order they finished in, so what the
//! sequencer decides from them (the first failure, the first commit) does
//! not depend on timing.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Runs `start(item)` for every item, at most `limit` at once (at least 1);
/// the results in item order.
pub async fn all<T, R, Fut>(
    limit: usize,
    items: impl IntoIterator<Item = T>,
    start: impl FnMut(T) -> Fut,
) -> Vec<R>
where
    Fut: Future<Output = R>,
{
    until(limit, items, start, |_| false)
        .await
        .into_iter()
        .map(|r| r.expect("every item starts when nothing stops them"))
        .collect()
}

/// Like [`all`], but once a result satisfies `stop`, no further item is
/// started (those already running finish): `None` for the items that never
/// started. A failing host thus stops the rollout from reaching more
/// hosts, as Ansible's `serial` with `any_errors_fatal` does.
pub async fn until<T, R, Fut>(
    limit: usize,
    items: impl IntoIterator<Item = T>,
    mut start: impl FnMut(T) -> Fut,
    stop: impl Fn(&R) -> bool,
) -> Vec<Option<R>>
where
    Fut: Future<Output = R>,
{
    let limit = limit.max(1);
    let mut waiting = items.into_iter().enumerate().peekable();
    let mut running: Vec<(usize, Pin<Box<Fut>>)> = Vec::new();
    let mut results: Vec<Option<R>> = Vec::new();
    let mut stopped = false;
    std::future::poll_fn(|cx| {
        loop {
            while !stopped && running.len() < limit {
                let Some((i, item)) = waiting.next() else {
                    break;
                };
                running.push((i, Box::pin(start(item))));
            }
            let mut finished = false;
            let mut k = 0;
            while k < running.len() {
                match running[k].1.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        let (i, _) = running.swap_remove(k);
                        stopped |= stop(&r);
                        if results.len() <= i {
                            results.resize_with(i + 1, || None);
                        }
                        results[i] = Some(r);
                        finished = true;
                    }
                    Poll::Pending => k += 1,
                }
            }
            if running.is_empty() && (stopped || waiting.peek().is_none()) {
                return Poll::Ready(());
            }
            // A finished future freed a slot: start the next ones now.
            if !finished {
                return Poll::Pending;
            }
        }
    })
    .await;
    // Items never started (after a stop) have no slot yet.
    let started = results.len();
    results.extend(waiting.map(|_| None));
    debug_assert!(started <= results.len());
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    /// Six one-second tasks, three at a time: two seconds, never more than
    /// three at once, results in item order.
    #[tokio::test(start_paused = true)]
    async fn issue14_runs_at_most_limit_at_once_and_keeps_order() {
        let now = Cell::new(0usize);
        let most = Cell::new(0usize);
        let started = tokio::time::Instant::now();
        let out = all(3, 0..6u64, |i| {
            let (now, most) = (&now, &most);
            async move {
                now.set(now.get() + 1);
                most.set(most.get().max(now.get()));
                // Later items finish first: the order must still hold.
                tokio::time::sleep(Duration::from_millis(1000 - i * 10)).await;
                now.set(now.get() - 1);
                i * 2
            }
        })
        .await;
        assert_eq!(out, vec![0, 2, 4, 6, 8, 10]);
        assert_eq!(most.get(), 3);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }

    /// One at a time is strictly sequential.
    #[tokio::test(start_paused = true)]
    async fn issue14_limit_one_is_sequential() {
        let order = std::cell::RefCell::new(Vec::new());
        let most = Cell::new(0usize);
        let now = Cell::new(0usize);
        all(1, 0..4u64, |i| {
            let (order, now, most) = (&order, &now, &most);
            async move {
                now.set(now.get() + 1);
                most.set(most.get().max(now.get()));
                order.borrow_mut().push(i);
                tokio::time::sleep(Duration::from_millis(10 * (4 - i))).await;
                now.set(now.get() - 1);
            }
        })
        .await;
        assert_eq!(most.get(), 1);
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3]);
    }

    /// After a failure nothing new starts; what runs finishes.
    #[tokio::test(start_paused = true)]
    async fn issue14_until_stops_starting_after_a_failure() {
        let out = until(
            2,
            0..6u64,
            |i| async move {
                tokio::time::sleep(Duration::from_millis(if i == 1 { 10 } else { 100 })).await;
                if i == 1 { Err(i) } else { Ok(i) }
            },
            Result::is_err,
        )
        .await;
        // 0 and 1 start; 1 fails at 10 ms, 2 is never started; 0 finishes.
        assert_eq!(out, vec![Some(Ok(0)), Some(Err(1)), None, None, None, None]);
    }

    /// No items, no results, and no hang.
    #[tokio::test]
    async fn issue14_empty_finishes() {
        let out: Vec<u8> = all(4, Vec::<u8>::new(), |x| async move { x }).await;
        assert!(out.is_empty());
    }
}
