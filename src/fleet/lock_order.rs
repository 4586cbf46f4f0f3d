//! The order in which changes take their locks, kept by the compiler rather than by a comment:
//! the account's lock ([`AccountLock`]) first, then instances' locks ([`InstanceLock`]), several
//! at once only through [`lock_instances`], which takes them in id order. Never the other way,
//! so two changes can never wait for each other.
//!
//! A task that changes anything (a control request, a SIGHUP reload, catching up with the
//! store, a scheduled rotation) starts from one [`Unlocked`]. Taking the account's lock
//! borrows it mutably for as long as the [`AccountGuard`] lives, and so does an instance lock
//! taken without the account's, so:
//! - a task holding an instance lock cannot take the account's lock (its `Unlocked` is
//!   borrowed): that does not compile;
//! - a task holding the account's lock cannot take it again, nor one instance lock after
//!   another outside [`lock_instances`];
//! - values that only change under a lock ask for its guard as a parameter
//!   (`&AccountGuard`, `&InstanceGuard`), so changing them without the lock does not compile.
//!
//! The guards are plain `tokio` mutex guards underneath: waiting for a lock never blocks a
//! thread, and a guard is released when dropped.
//!
//! The order as it compiles:
//!
//! ```
//! use imds::fleet::lock_order::{AccountLock, InstanceLock, Unlocked};
//! async fn change(account: &AccountLock, instance: &InstanceLock) {
//!     let mut order = Unlocked::task();
//!     let mut held = account.lock(&mut order).await;
//!     let _instance = instance.lock(&mut held).await;
//! }
//! ```
//!
//! and the other way round, which does not:
//!
//! ```compile_fail,E0499
//! use imds::fleet::lock_order::{AccountLock, InstanceLock, Unlocked};
//! async fn change(account: &AccountLock, instance: &InstanceLock) {
//!     let mut order = Unlocked::task();
//!     let _instance = instance.lock(&mut order).await;
//!     let _account = account.lock(&mut order).await;
//! }
//! ```

/// Where a task stands before it holds any lock: the one value from which its guards borrow.
#[derive(Debug)]
pub struct Unlocked(());

impl Unlocked {
    /// The lock order of a new task (a request, a reload, a catch-up). Made once at the
    /// task's start and passed down by `&mut`.
    pub fn task() -> Unlocked {
        Unlocked(())
    }
}

/// Something held before instance locks may be taken: nothing yet, or the account's lock.
pub trait BeforeInstances: sealed::Sealed {}

impl BeforeInstances for Unlocked {}
impl BeforeInstances for AccountGuard<'_> {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Unlocked {}
    impl Sealed for super::AccountGuard<'_> {}
}

/// The account's lock: its defaults, policies and keys, the network registry and the set of
/// instances change under it.
#[derive(Debug, Default)]
pub struct AccountLock(tokio::sync::Mutex<()>);

/// The account's lock, held.
#[derive(Debug)]
pub struct AccountGuard<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl AccountLock {
    /// Waits for the account's lock; `order` stays borrowed while it is held.
    pub async fn lock<'a>(&'a self, order: &'a mut Unlocked) -> AccountGuard<'a> {
        let _ = order;
        AccountGuard {
            _held: self.0.lock().await,
        }
    }
}

/// One instance's lock: what the control plane changed on it changes under it.
#[derive(Debug, Default)]
pub struct InstanceLock(tokio::sync::Mutex<()>);

/// One instance's lock, held.
#[derive(Debug)]
pub struct InstanceGuard<'a> {
    lock: &'a InstanceLock,
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl InstanceGuard<'_> {
    /// Whether this guard holds `lock`.
    pub fn holds(&self, lock: &InstanceLock) -> bool {
        std::ptr::eq(self.lock, lock)
    }
}

impl InstanceLock {
    /// Waits for this instance's lock, after whatever `before` holds; `before` stays borrowed
    /// while it is held.
    pub async fn lock<'a, B: BeforeInstances>(&'a self, before: &'a mut B) -> InstanceGuard<'a> {
        let _ = before;
        InstanceGuard {
            lock: self,
            _held: self.0.lock().await,
        }
    }
}

/// Waits for several instances' locks, after whatever `before` holds, each in the order of
/// `ids` sorted (every task takes them in the same order, so none waits for another in a
/// circle), each once however often it is named. `locks` gives each id's lock.
pub async fn lock_instances<'a, K: Ord, B: BeforeInstances>(
    locks: impl IntoIterator<Item = (K, &'a InstanceLock)>,
    before: &'a mut B,
) -> Vec<InstanceGuard<'a>> {
    let _ = before;
    let mut locks: Vec<(K, &'a InstanceLock)> = locks.into_iter().collect();
    locks.sort_by(|a, b| a.0.cmp(&b.0));
    // A lock named twice is taken once: a task never waits for itself.
    locks.dedup_by(|a, b| a.0 == b.0 || std::ptr::eq(a.1, b.1));
    let mut guards = Vec::with_capacity(locks.len());
    for (_, lock) in locks {
        guards.push(InstanceGuard {
            lock,
            _held: lock.0.lock().await,
        });
    }
    guards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_account_lock_then_an_instance_lock_is_the_order() {
        let account = AccountLock::default();
        let instance = InstanceLock::default();
        let mut order = Unlocked::task();
        let mut held = account.lock(&mut order).await;
        let _instance = instance.lock(&mut held).await;
    }

    #[tokio::test]
    async fn several_instance_locks_are_taken_in_id_order_whatever_order_they_are_named() {
        let (a, b) = (InstanceLock::default(), InstanceLock::default());
        let mut first = Unlocked::task();
        let guards = lock_instances([(2, &b), (1, &a)], &mut first).await;
        assert_eq!(guards.len(), 2);
        // Both are held: neither can be taken by another task now.
        assert!(a.0.try_lock().is_err() && b.0.try_lock().is_err());
        drop(guards);
        assert!(a.0.try_lock().is_ok() && b.0.try_lock().is_ok());
    }
}
