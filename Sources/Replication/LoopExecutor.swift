import NIOCore
import Synchronization

/// Runs tasks on one SwiftNIO event loop: the replica's driver, its peer senders and its peer
/// connections share one thread, so a peer message reaches the driver, and the driver's messages
/// reach the sockets, without waking another thread (docs/replication.md, "One thread per replica").
/// Jobs enqueued from the loop itself join its task queue without a wake-up; from another thread,
/// NIO wakes the loop as for any `execute`.
final class LoopExecutor: TaskExecutor {
    let loop: any EventLoop
    /// Set before the loop shuts down. A job enqueued after that (a continuation resumed late by
    /// another thread) runs on the global executor instead: on a loop that has shut down, NIO would
    /// drop it and its task would never resume.
    private let retired = Atomic<Bool>(false)

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        if retired.load(ordering: .acquiring) {
            globalConcurrentExecutor.enqueue(job)
            return
        }
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        loop.execute { job.runSynchronously(on: executor) }
    }

    /// From now on, jobs go to the global executor.
    func retire() { retired.store(true, ordering: .releasing) }
}
