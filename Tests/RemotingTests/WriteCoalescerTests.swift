import NIOCore
import Synchronization
import Testing
@testable import Remoting

private func answer(_ opaque: Int32) -> Outbound {
    .response(RemotingCommand(code: 0, opaque: opaque, flag: RemotingCommand.responseFlag))
}

private func opaque(of write: WriteCoalescer.Write) -> Int32 {
    guard case .response(let r) = write.value else { return -1 }
    return r.opaque
}

private final class Tally: Sendable {
    let taken = Mutex<[Int32]>([])
    let hops = Atomic<Int>(0)
}

@Suite struct WriteCoalescerTests {
    /// One hop at a time, and a write queued while the hop runs leaves with it (one flush), not in
    /// a hop of its own.
    @Test func oneHopTakesEveryWriteQueuedUntilTheQueueStaysEmpty() {
        let c = WriteCoalescer()
        #expect(c.enqueue(answer(1), nil))
        #expect(!c.enqueue(answer(2), nil))
        var written: [Int32] = []
        c.drain { w in
            written.append(opaque(of: w))
            if opaque(of: w) == 1 { #expect(!c.enqueue(answer(3), nil)) }
        }
        #expect(written == [1, 2, 3])
        // The hop ended: the next write schedules another, and it takes only that write.
        #expect(c.enqueue(answer(4), nil))
        written = []
        c.drain { written.append(opaque(of: $0)) }
        #expect(written == [4])
        // A hop that finds nothing writes nothing and leaves the next write to schedule one.
        c.drain { _ in Issue.record("nothing was queued") }
        #expect(c.enqueue(answer(5), nil))
    }

    /// Writers on several threads: every write is taken exactly once, each writer's in its order,
    /// and a hop is only ever asked for when none is scheduled.
    @Test func concurrentWritersLoseNothingAndKeepTheirOrder() async {
        let c = WriteCoalescer()
        let writers = 4, perWriter = 2_000
        let tally = Tally()
        await withTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    for k in 0..<perWriter {
                        if c.enqueue(answer(Int32(w * 1_000_000 + k)), nil) {
                            tally.hops.add(1, ordering: .relaxed)
                            c.drain { write in tally.taken.withLock { $0.append(opaque(of: write)) } }
                        }
                    }
                }
            }
        }
        let all = tally.taken.withLock { $0 }
        #expect(all.count == writers * perWriter)
        for w in 0..<writers {
            let mine = all.filter { $0 / 1_000_000 == w }.map { $0 % 1_000_000 }
            #expect(mine == (0..<Int32(perWriter)).map { $0 })
        }
        #expect(tally.hops.load(ordering: .relaxed) >= 1)
    }
}
