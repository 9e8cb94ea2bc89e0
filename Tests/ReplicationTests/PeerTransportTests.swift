import Logging
import NIOCore
import NIOPosix
import RaftCore
import Remoting
import Synchronization
import Testing
import TestSupport
@testable import Replication

/// A peer's port on 127.0.0.1 that records the commit index of every heartbeat it receives, in order.
private final class HeartbeatSink: Sendable {
    let port: Int
    private let commits: Commits
    private let group: MultiThreadedEventLoopGroup
    private let serving: Task<Void, any Error>

    private final class Commits: Sendable { let list = Mutex<[UInt64]>([]) }

    private init(port: Int, commits: Commits, group: MultiThreadedEventLoopGroup, serving: Task<Void, any Error>) {
        self.port = port
        self.commits = commits
        self.group = group
        self.serving = serving
    }

    /// The commit indexes received so far, in order.
    var received: [UInt64] { commits.list.withLock { $0 } }

    static func start(logger: Logger) async throws -> HeartbeatSink {
        let commits = Commits()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let inbound = RemotingProcessor(name: "raft", codes: [RequestCode.raftMessage], maxQueuedRequests: 100_000, inline: { request, _ in
            if let body = request.body, let m = try? RaftWire.decode(body), case .heartbeat(let commit, _) = m.body {
                commits.list.withLock { $0.append(commit.rawValue) }
            }
            return true
        }) { _, _ in nil }
        let server = RemotingServer(options: RemotingServerOptions(host: "127.0.0.1", port: 0), processors: [inbound], group: group, logger: logger)
        let (bound, boundContinuation) = AsyncStream.makeStream(of: Int.self)
        let serving = Task { try await server.run { boundContinuation.yield($0.port ?? 0) } }
        var it = bound.makeAsyncIterator()
        let port = try #require(await it.next())
        return HeartbeatSink(port: port, commits: commits, group: group, serving: serving)
    }

    func stop() async throws {
        serving.cancel()
        _ = try? await serving.value
        try await group.shutdownGracefully()
    }
}

/// A PeerTransport from n1 on a loop of its own, with a HeartbeatSink as n2 and `unreachable` peers
/// on a port where nothing listens.
private struct TransportRig: Sendable {
    let sink: HeartbeatSink
    let loopGroup: MultiThreadedEventLoopGroup
    let client: RemotingClient
    let transport: PeerTransport

    static func start(outboxLimit: Int, unreachable: [NodeID] = [], logger: Logger) async throws -> TransportRig {
        let sink = try await HeartbeatSink.start(logger: logger)
        let loopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RemotingClient(group: loopGroup, logger: logger)
        var addresses = [NodeID(1): "127.0.0.1:1", NodeID(2): "127.0.0.1:\(sink.port)"]
        for id in unreachable { addresses[id] = "127.0.0.1:1" }
        let transport = PeerTransport(selfID: NodeID(1), addresses: addresses, client: client, outboxLimit: outboxLimit, logger: logger) { _ in }
        return TransportRig(sink: sink, loopGroup: loopGroup, client: client, transport: transport)
    }

    func stop() async throws {
        await client.close()
        try await loopGroup.shutdownGracefully()
        try await sink.stop()
    }
}

@Suite(.ownThreads) struct PeerTransportTests {
    /// The driver, on the peer connection's event loop, writes a message to the socket itself when
    /// nothing for that peer is queued or being sent; otherwise the peer's sender writes it. Mixed
    /// in bursts, some sent from another thread (always queued), with the sender given turns in
    /// between, every message still arrives once and in the order it was sent, and both paths
    /// were taken. Some bursts go as one Ready's messages (`send([Message])`, with one to an unknown
    /// node among them): those to the peer leave in one write.
    @Test func messagesToAPeerKeepTheirOrderAcrossDirectWritesAndTheSender() async throws {
        let rig = try await TransportRig.start(outboxLimit: 100_000, logger: Logger(label: "peer-transport-test"))
        let (sink, loopGroup, transport) = (rig.sink, rig.loopGroup, rig.transport)
        let sent = try await withTaskExecutorPreference(LoopExecutor(loopGroup.next())) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { await transport.run() }
                @Sendable func message(_ commit: UInt64) -> Message {
                    Message(from: NodeID(1), to: NodeID(2), term: Term(1), body: .heartbeat(commit: LogIndex(commit), context: nil))
                }
                var commit: UInt64 = 0
                for burst in 0..<400 {
                    if burst % 4 == 1 {
                        // From another thread: queued for the sender, which cannot run before this
                        // task gives the loop up; what follows on the loop must wait behind it.
                        let from = commit
                        await Task.detached { for k in 1...3 { transport.send(message(from + UInt64(k))) } }.value
                        commit += 3
                    }
                    if burst % 5 == 2 {
                        var ready: [Message] = []
                        for _ in 0..<(2 + burst % 4) {
                            commit += 1
                            ready.append(message(commit))
                        }
                        ready.insert(Message(from: NodeID(1), to: NodeID(9), term: Term(1), body: .heartbeat(commit: .zero, context: nil)), at: 1)
                        transport.send(ready)
                    } else {
                        for _ in 0..<(1 + burst % 7) {
                            commit += 1
                            transport.send(message(commit))
                        }
                    }
                    // The sender (and the connect, at first) get the loop between some bursts.
                    if burst % 3 == 0 { await Task.yield() }
                    if burst % 50 == 0 { try await Task.sleep(for: .milliseconds(2)) }
                }
                let all = commit
                let deadline = ContinuousClock.now + .seconds(20)
                while sink.received.count < all && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                transport.close()
                tasks.cancelAll()
                return all
            }
        }
        try await rig.stop()

        let got = sink.received
        let firstWrong = zip(got, 1...sent).first { $0 != $1 }.map { "got \($0) where \($1) was due" }
        #expect(got.count == Int(sent) && firstWrong == nil, "received \(got.count) of \(sent); \(firstWrong ?? "in order")")
        let direct = transport.directWrites.load(ordering: .relaxed)
        #expect(direct > 0 && direct < Int(sent), "direct writes: \(direct) of \(sent)")
        let calls = transport.directWriteCalls.load(ordering: .relaxed)
        #expect(calls < direct, "\(direct) messages written directly in \(calls) writes: a Ready's messages to one peer share a write")
    }

    /// A full outbox keeps the oldest messages and drops the newest, also when only part of a
    /// Ready's messages fit: the part that fits goes in order, the rest is dropped, and once the
    /// sender has drained the outbox there is room again.
    @Test func aReadyThatOnlyPartlyFitsTheOutboxKeepsItsFirstMessagesAndDropsTheRest() async throws {
        let rig = try await TransportRig.start(outboxLimit: 5, unreachable: [NodeID(3)], logger: Logger(label: "peer-transport-test"))
        let (sink, loopGroup, transport) = (rig.sink, rig.loopGroup, rig.transport)
        func message(_ commit: UInt64, to: UInt64 = 2) -> Message {
            Message(from: NodeID(1), to: NodeID(to), term: Term(1), body: .heartbeat(commit: LogIndex(commit), context: nil))
        }
        func waitFor(_ count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(20)
            while sink.received.count < count && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            // Anything that should have been dropped would arrive right behind.
            try await Task.sleep(for: .milliseconds(100))
        }
        // No sender runs yet, so everything waits in the outbox (5 places).
        transport.send([message(1), message(2), message(3)])
        // Two places left: 4 and 5 go, 6 and 7 are dropped; a message to another peer in the same
        // Ready has an outbox of its own.
        transport.send([message(4), message(5), message(100, to: 3), message(6), message(7)])
        transport.send(message(8))
        transport.send([message(9), message(10)])
        let (first, second) = try await withTaskExecutorPreference(LoopExecutor(loopGroup.next())) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { await transport.run() }
                try await waitFor(5)
                let first = sink.received
                // Drained: a Ready fits whole again.
                transport.send([message(11), message(12), message(13)])
                try await waitFor(8)
                let second = sink.received
                transport.close()
                tasks.cancelAll()
                return (first, second)
            }
        }
        try await rig.stop()

        #expect(first == [1, 2, 3, 4, 5], "from the full outbox: \(first)")
        #expect(second == [1, 2, 3, 4, 5, 11, 12, 13], "after it drained: \(second)")
    }
}
