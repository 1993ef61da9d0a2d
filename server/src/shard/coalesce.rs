//! Write coalescing: connections holding deliveries back (see `connection.write_coalesce_us`)
//! wait here, and one timer per shard releases them all together, instead of a timer each.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::connection::Conn;
use crate::notify::LocalNotify;

/// Where a connection stands with coalescing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hold {
    /// Writes when it has something to write (unless it wrote within the interval).
    #[default]
    Free,
    /// Waiting for the shard's next release.
    Held,
    /// Released: writes what it has, then is free again.
    Released,
}

/// A shard's held connections.
#[derive(Default)]
pub struct Coalescer {
    held: RefCell<Vec<Rc<Conn>>>,
    /// Notified when the first connection of a round is held.
    armed: LocalNotify,
}

impl Coalescer {
    /// Holds `conn` until the next release (at most one interval away).
    pub fn hold(&self, conn: &Rc<Conn>) {
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            self.armed.notify();
        }
        held.push(conn.clone());
    }

    /// Releases the held connections one `interval` after the first of each round was held.
    pub async fn run(&self, interval: Duration) {
        loop {
            self.armed.notified().await;
            tokio::time::sleep(interval).await;
            for conn in self.held.take() {
                conn.release();
            }
        }
    }
}
