import NIOCore
import Synchronization

/// One timer on the replica's event loop, set to the earliest time the driver asked for: the
/// driver sleeps until its next timeout (a heartbeat, an election, a waiter's deadline) instead of
/// being woken every tick (docs/replication.md, "Ticks").
///
/// `wake(at:)` only ever moves the alarm earlier; a later time leaves it as it is, and the driver
/// asks again after the early wake-up. Fired or cancelled, the next `wake(at:)` sets it afresh.
final class WakeTimer: Sendable {
    private struct Armed {
        var task: Scheduled<Void>
        var at: ContinuousClock.Instant
        var generation: UInt64
    }
    private struct State {
        var armed: Armed?
        var generation: UInt64 = 0
        var stopped = false
    }

    private let loop: any EventLoop
    private let fire: @Sendable () -> Void
    private let state = Mutex(State())

    /// `fire` runs on `loop` when the alarm goes off.
    init(loop: any EventLoop, fire: @escaping @Sendable () -> Void) {
        self.loop = loop
        self.fire = fire
    }

    /// Goes off at `at` (at once if that has passed), unless it is already set to go off sooner.
    func wake(at: ContinuousClock.Instant) {
        state.withLock { s in
            guard !s.stopped else { return }
            if let armed = s.armed {
                if armed.at <= at { return }
                armed.task.cancel()
            }
            s.generation &+= 1
            let generation = s.generation
            let delay = at - .now
            // A microsecond late rather than a nanosecond early: woken before its tick is due, the
            // driver would count one tick too few and ask again at once.
            let ns = delay > .zero ? delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000 + 1_000 : 0
            let task = loop.scheduleTask(in: .nanoseconds(ns)) { [self] in
                let current = state.withLock { s -> Bool in
                    guard s.armed?.generation == generation else { return false }
                    s.armed = nil
                    return true
                }
                if current { fire() }
            }
            s.armed = Armed(task: task, at: at, generation: generation)
        }
    }

    /// Cancels the alarm for good.
    func stop() {
        state.withLock { s in
            s.stopped = true
            s.armed?.task.cancel()
            s.armed = nil
        }
    }
}
