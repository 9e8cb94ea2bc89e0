import Synchronization

/// Wakes one waiting loop early: `wait(upTo:)` returns after the duration, at a `ring()`, or when
/// the waiting task is cancelled, whichever comes first. A ring while nobody waits is kept for the
/// next wait, so a loop that checks its conditions after every wait misses none.
///
/// For loops that used to poll (the nameserver registration checked the Raft role every 10 ms: a
/// timer, a pool thread and a wake-up each time, on an idle broker too): they sleep until
/// something changes instead. One waiter at a time.
public final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var sleeper: Task<Void, Never>?
    }
    private let state = Mutex(State())

    public init() {}

    /// Wakes the waiter now, or the next one at once. Cheap; from any thread.
    public func ring() {
        let sleeper = state.withLock { s -> Task<Void, Never>? in
            s.rung = true
            return s.sleeper
        }
        sleeper?.cancel()
    }

    /// Returns after `duration`, at a ring (or at once if one came since the last wait), or at
    /// the caller's cancellation.
    public func wait(upTo duration: Duration) async {
        let sleeper = state.withLock { s -> Task<Void, Never>? in
            precondition(s.sleeper == nil, "Doorbell: one waiter at a time")
            if s.rung {
                s.rung = false
                return nil
            }
            let t = Task { _ = try? await Task.sleep(for: duration) }
            s.sleeper = t
            return t
        }
        guard let sleeper else { return }
        await withTaskCancellationHandler {
            await sleeper.value
        } onCancel: {
            sleeper.cancel()
        }
        // The caller checks what it waits for next: a ring up to here is covered by that check.
        state.withLock { s in
            s.rung = false
            s.sleeper = nil
        }
    }
}
