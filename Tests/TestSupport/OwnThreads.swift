import Foundation
import Synchronization
import Testing

/// Runs each test of a suite on threads of its own instead of Swift's cooperative pool.
///
/// The pool has one thread per core: two here. A synchronous test (a randomized property, a crash
/// loop, a simulator run) holds a pool thread until it ends, and while two of them run, no other
/// test's task runs at all: timers, network answers and replicas started by other tests wait. On a
/// loaded machine that starvation lasted minutes and failed every test that waits with a deadline
/// (docs/testing.md). On threads of its own a test competes for the cores through the kernel's
/// scheduler, which preempts, so a busy test slows the others down but never stops them.
///
/// At most `OwnThreads.concurrentTests` tests run at once; the others wait for a turn, suspended.
/// Swift Testing starts every test at once, and on threads of their own twenty CPU-bound tests
/// running together leave a test that waits for network answers a twentieth of a core: they timed
/// out that way (with no limit, ServerClientTests' 5 s answers). With 16, the whole unit suite
/// passes beside six busy loops on the two cores (docs/testing.md).
///
/// Every suite carries this trait (`OwnThreadsTests.everySuiteInTheSourcesCarriesTheTrait` checks
/// the sources).
public struct OwnThreads: SuiteTrait, TestTrait, TestScoping {
    public static let concurrentTests = 16
    static let turns = Turns(OwnThreads.concurrentTests)

    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        // A suite itself takes no turn: its tests would wait for turns their suites hold.
        guard testCase != nil else { return try await function() }
        await Self.turns.take()
        defer { Self.turns.give() }
        let executor = OwnThreadsExecutor(name: String(test.name.prefix(15)))
        defer { executor.finish() }
        try await withTaskExecutorPreference(executor) { try await function() }
    }
}

/// A counting semaphore for tasks: `take` suspends until one of `count` turns is free.
final class Turns: Sendable {
    private struct State {
        var free: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(free: count)) }

    func take() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.free > 0 {
                    s.free -= 1
                    return true
                }
                s.waiting.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Hands the turn to the longest waiting task, or frees it.
    func give() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.free += 1
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}

extension Trait where Self == OwnThreads {
    /// Each test runs on threads of its own (see `OwnThreads`).
    public static var ownThreads: Self { OwnThreads() }
}

/// A task executor for one test: its jobs run on threads it starts for them, a new one whenever
/// the jobs waiting outnumber its idle threads, so a test that blocks a thread (a child process, a
/// synchronous wait) does not hold back its own other tasks. At `maxThreads` busy threads a further
/// job goes to the global executor rather than wait behind them (they may all be waiting for it).
/// After `finish`, the threads end once the queue is empty; a job that comes after that (only a task
/// made with `Task(executorPreference:)` could outlive its test) goes to the global executor.
public final class OwnThreadsExecutor: TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [UnownedJob] = []
    private var head = 0
    private var threads = 0
    private var idle = 0
    private var finished = false
    private var forwarded = 0
    private let name: String
    private let maxThreads: Int

    public init(name: String, maxThreads: Int = 8) {
        self.name = name
        self.maxThreads = maxThreads
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        let waiting = queue.count - head
        if (finished && threads == 0) || (waiting >= idle && threads == maxThreads) {
            forwarded += 1
            condition.unlock()
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
            return
        }
        queue.append(job)
        // A new thread when the jobs waiting outnumber the threads waiting for them: a thread that
        // took a job and blocks in it must not hold back the next one.
        if waiting + 1 > idle {
            threads += 1
            startThread()
        } else {
            condition.signal()
        }
        condition.unlock()
    }

    /// The threads running or waiting for jobs (tests).
    var liveThreads: Int {
        condition.lock()
        defer { condition.unlock() }
        return threads
    }

    /// Jobs handed to the global executor (tests).
    var forwardedJobs: Int {
        condition.lock()
        defer { condition.unlock() }
        return forwarded
    }

    /// No more threads wait for work once the queue is empty.
    public func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    private func startThread() {
        let thread = Thread { [self] in
            Thread.current.name = name  // set from the thread itself, or Linux keeps its parent's name
            work()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    private func work() {
        condition.lock()
        while true {
            if head < queue.count {
                let job = queue[head]
                head += 1
                if head == queue.count {
                    queue.removeAll(keepingCapacity: true)
                    head = 0
                }
                condition.unlock()
                job.runSynchronously(on: asUnownedTaskExecutor())
                condition.lock()
            } else if finished {
                threads -= 1
                condition.unlock()
                return
            } else {
                idle += 1
                condition.wait()
                idle -= 1
            }
        }
    }
}
