import Foundation
import LogFormat
import Logging
import Testing
@testable import Broker
import TestSupport

/// The doorbell the nameserver registration sleeps on, and who rings it. Waits that should end at
/// once are given 30 s (a ring that is lost fails the test by its duration); waits that must run
/// their course are short.
@Suite(.ownThreads) struct DoorbellTests {
    static func elapsed(_ body: () async -> Void) async -> Duration {
        let start = ContinuousClock.now
        await body()
        return ContinuousClock.now - start
    }

    @Test func aRingBeforeTheWaitIsKeptAndUsedOnce() async {
        let bell = Doorbell()
        bell.ring()
        bell.ring()
        #expect(await Self.elapsed { await bell.wait(upTo: .seconds(30)) } < .seconds(10))
        // Both rings came before one wait: the next wait runs its course.
        #expect(await Self.elapsed { await bell.wait(upTo: .milliseconds(200)) } >= .milliseconds(200))
    }

    @Test func aRingDuringTheWaitEndsIt() async {
        let bell = Doorbell()
        // Timed from before the ringer starts: it rings no sooner than 100 ms after this.
        let start = ContinuousClock.now
        let ringer = Task {
            try? await Task.sleep(for: .milliseconds(100))
            bell.ring()
        }
        await bell.wait(upTo: .seconds(30))
        let took = ContinuousClock.now - start
        #expect(took >= .milliseconds(100) && took < .seconds(10))
        await ringer.value
    }

    @Test func cancellingTheWaiterEndsTheWait() async {
        let bell = Doorbell()
        let waiter = Task { await Self.elapsed { await bell.wait(upTo: .seconds(30)) } }
        try? await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        #expect(await waiter.value < .seconds(10))
    }

    @Test func dispatchRingsWhenTheTopicsChangeAndOnlyThen() async throws {
        let f = try StoreFixture()
        let bell = Doorbell()
        f.store.ringOnTopicChange(bell)
        // Offsets and a creation of a topic that exists change no topic: no ring.
        let existing = try #require(f.store.topics.topics.values.first)
        let i = try f.append([MetadataChange.offsets(["T@g": [0: 5]]).encoded(), MetadataChange.topicCreate(existing).encoded()])
        try f.store.dispatch(upTo: i.last!)
        #expect(await Self.elapsed { await bell.wait(upTo: .milliseconds(200)) } >= .milliseconds(200))
        let j = try f.append([MetadataChange.topicUpsert(TopicConfig(topicName: "Rung", readQueueNums: 2, writeQueueNums: 2, perm: 6)).encoded()])
        try f.store.dispatch(upTo: j[0])
        #expect(await Self.elapsed { await bell.wait(upTo: .seconds(30)) } < .seconds(10))
    }

    @Test func aPullDueBeforeTheSweepsNextWakeRingsItAndALaterOneDoesNot() async throws {
        let f = try StoreFixture()
        let store = f.store
        let key = QueueKey("T", 0)
        // The sweep (`run`) records when it wakes next: in an hour.
        let now = ContinuousClock.now
        #expect(store.expireWaiters(now: now, wakeBy: now + .seconds(3_600)).wake == now + .seconds(3_600))
        func registered(_ n: Int) async -> Bool {
            for _ in 0..<2_000 {
                if store.waiterCount(key) == n { return true }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return false
        }
        // Due after it: the sweep sleeps on.
        let late = Task { await store.waitForMessages(key, offset: 0, deadline: now + .seconds(7_200)) }
        #expect(await registered(1))
        #expect(await Self.elapsed { await store.waiterBell.wait(upTo: .milliseconds(200)) } >= .milliseconds(200))
        // Due before it: rung, and its next pass wakes at that deadline.
        let early = Task { await store.waitForMessages(key, offset: 0, deadline: now + .seconds(60)) }
        #expect(await registered(2))
        #expect(await Self.elapsed { await store.waiterBell.wait(upTo: .seconds(30)) } < .seconds(10))
        #expect(store.expireWaiters(now: now, wakeBy: now + .seconds(3_600)).wake == now + .seconds(60))
        #expect(store.expireWaiters(now: now + .seconds(61), wakeBy: now + .seconds(3_600)) == (1, now + .seconds(3_600)))
        await early.value
        store.expireWaiters(now: now + .seconds(7_201))
        await late.value
    }

    @Test func theSweepAnswersAPullAtItsDeadline() async throws {
        let f = try StoreFixture()
        var options = StoreFixture.options(f.root, f.topics, f.writeBehind)
        // A minute between checkpoints (its prune comes at 10 s): nothing but the pull's own deadline
        // wakes the sweep within 5 s.
        options.checkpointInterval = .seconds(60)
        let store = try MessageStore(options: options, log: f.log, logger: Logger(label: "test"))
        let sweep = Task { await store.run() }
        let took = await Self.elapsed { await store.waitForMessages(QueueKey("T", 0), offset: 0, deadline: .now + .milliseconds(100)) }
        #expect(took >= .milliseconds(100) && took < .seconds(5))
        sweep.cancel()
        await sweep.value
        // Once the sweep has ended (the broker stopping), a pull is not held: nothing would answer it.
        #expect(await Self.elapsed { await store.waitForMessages(QueueKey("T", 0), offset: 0, deadline: .now + .seconds(60)) } < .seconds(10))
    }
}
