//! Requests that go to every shard and wait for all of them: direct messages (the `ok` counts
//! the connections reached) and persist publishes (the `ok` waits for every durable group of
//! the channel to store the message).

use std::sync::Arc;

use wsedge_core::broker::{Answer, Origin};
use wsedge_core::ids::ConnId;
use wsedge_core::message::Published;
use wsedge_core::protocol::{reply, Priority};

use super::answer;
use super::mailbox::{Direct, Inbound, Mailbox};
use super::waiters::{Gather, PendingSend, Waiter};
use super::Shard;

impl Shard {
    /// Sends a direct message to every connection of `user`, on every shard, or to none: when a
    /// shard's queue (or this shard's, for the answers) has no room, nothing is sent and that
    /// shard's index is returned. With `reference`, the sender gets
    /// `{"op":"ok","ref":...,"delivered":N}` once every shard has counted.
    pub fn send_direct(
        &self,
        from: ConnId,
        user: &str,
        message: Arc<Published>,
        reference: Option<String>,
    ) -> Result<(), usize> {
        let others = self.shared.mailboxes.len() - 1;
        if others > 0 {
            self.reserve_answers(others)?;
            if let Err(full) = self.reserve_others(message.frame.len()) {
                let own = &self.shared.mailboxes[self.index];
                (0..others).for_each(|_| own.cancel(0));
                return Err(full);
            }
        }
        let delivered = self.broker(|broker, out| broker.send_local(user, &message, out));
        let pending = PendingSend {
            conn: from,
            reference,
            delivered,
            waiting: others,
        };
        if others == 0 {
            self.answer_send(pending);
            return Ok(());
        }
        let n = self.next_send.get() + 1;
        self.next_send.set(n);
        self.sends.borrow_mut().insert(n, pending);
        let user: Arc<str> = user.into();
        for (_, mailbox) in self.others() {
            mailbox.push_reserved(Inbound::Direct(Box::new(Direct {
                user: user.clone(),
                message: message.clone(),
                origin: self.index,
                send: n,
            })));
        }
        Ok(())
    }

    /// Direct message `send` reached `count` connections on one more shard.
    pub(super) fn delivered(&self, send: u64, count: usize) {
        let mut sends = self.sends.borrow_mut();
        let Some(pending) = sends.get_mut(&send) else {
            return;
        };
        pending.delivered += count;
        pending.waiting -= 1;
        if pending.waiting == 0 {
            let done = sends.remove(&send).expect("present");
            drop(sends);
            self.answer_send(done);
        }
    }

    fn answer_send(&self, done: PendingSend) {
        let Some(reference) = done.reference else {
            return;
        };
        if let Some(conn) = self.conns.borrow().get(&done.conn) {
            conn.send(
                Priority::Critical,
                reply::ok_delivered(&reference, done.delivered),
            );
        }
    }

    /// Every other shard's mailbox, with its index.
    fn others(&self) -> impl Iterator<Item = (usize, &Mailbox)> + Clone {
        let index = self.index;
        self.shared
            .mailboxes
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != index)
    }

    /// Reserves room for one message of `bytes` in every other shard's mailbox, or in none (the
    /// index of a full one).
    fn reserve_others(&self, bytes: usize) -> Result<(), usize> {
        if let Some((full, _)) = self.others().find(|(_, mailbox)| !mailbox.reserve(bytes)) {
            self.others()
                .take_while(|(i, _)| *i != full)
                .for_each(|(_, mailbox)| mailbox.cancel(bytes));
            return Err(full);
        }
        Ok(())
    }

    /// Sends `message` to every other shard, or to none: when one shard's queue has no room,
    /// nothing is queued anywhere and that shard's index is returned.
    pub fn forward(&self, message: &Arc<Published>) -> Result<(), usize> {
        self.reserve_others(message.frame.len())?;
        for (_, mailbox) in self.others() {
            mailbox.push_reserved(Inbound::Publish(message.clone()));
        }
        Ok(())
    }

    /// Publishes `message` to every shard, or to none (the index of a full queue), answering
    /// `from` once every durable group of its channel has stored it (with `reference`: `ok`;
    /// a refusal always).
    pub fn publish_persisted(
        &self,
        from: ConnId,
        message: Arc<Published>,
        reference: Option<String>,
    ) -> Result<(), usize> {
        let others = self.shared.mailboxes.len() - 1;
        self.reserve_answers(others)?;
        if let Err(full) = self.reserve_others(message.frame.len()) {
            let own = &self.shared.mailboxes[self.index];
            (0..others).for_each(|_| own.cancel(0));
            return Err(full);
        }
        let gather = Gather {
            conn: from,
            reference,
            shards: others + 1,
            waiting: 0,
            refused: None,
            duplicate: false,
        };
        let token = self.register(Waiter::Gather(gather));
        let origin = Origin {
            shard: self.index,
            token,
        };
        for (_, mailbox) in self.others() {
            let persist = Inbound::Persist(Box::new((message.clone(), origin)));
            mailbox.push_reserved(persist);
        }
        let waiting = self.deliver_here(&message, Some(origin));
        self.gathered(token, Some(waiting), None);
        Ok(())
    }

    /// Persist publish `token` heard from a shard (`count`: its durable groups that will
    /// answer) or from a durable group (`answer`); answered once it has heard from all.
    pub(super) fn gathered(&self, token: u64, count: Option<usize>, answer: Option<Answer>) {
        let mut pending = self.pending.borrow_mut();
        let Some(Waiter::Gather(gather)) = pending.get_mut(&token) else {
            return;
        };
        if let Some(count) = count {
            gather.shards -= 1;
            gather.waiting += count as i64;
        }
        if let Some(answer) = answer {
            gather.waiting -= 1;
            match answer {
                Answer::Refused(_) if gather.refused.is_none() => gather.refused = Some(answer),
                Answer::Duplicate => gather.duplicate = true,
                _ => {}
            }
        }
        if gather.shards > 0 || gather.waiting > 0 {
            return;
        }
        let Some(Waiter::Gather(done)) = pending.remove(&token) else {
            return;
        };
        drop(pending);
        let conns = self.conns.borrow();
        let Some(conn) = conns.get(&done.conn) else {
            return;
        };
        let result = match (done.refused, done.duplicate) {
            (Some(refused), _) => refused,
            (None, true) => Answer::Duplicate,
            (None, false) => Answer::Ok,
        };
        if let Some(frame) = answer::frame(result, done.reference.as_deref(), self.metrics()) {
            conn.send(Priority::Critical, frame);
        }
    }

    /// Reserves room in this shard's own mailbox for `others` answers, or none.
    fn reserve_answers(&self, others: usize) -> Result<(), usize> {
        let own = &self.shared.mailboxes[self.index];
        if let Some(reserved) = (0..others).position(|_| !own.reserve(0)) {
            (0..reserved).for_each(|_| own.cancel(0));
            return Err(self.index);
        }
        Ok(())
    }
}
