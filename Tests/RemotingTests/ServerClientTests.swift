import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import Remoting
import TestSupport

/// A gate a handler waits at until the test opens it.
private actor Gate {
    private var open = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    func wait() async {
        if open { return }
        await withCheckedContinuation { waiters.append($0) }
    }
    func release() {
        open = true
        for w in waiters { w.resume() }
        waiters.removeAll()
    }
}

private final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = RemotingCommand
    let sink: AsyncStream<RemotingCommand>.Continuation
    init(sink: AsyncStream<RemotingCommand>.Continuation) { self.sink = sink }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { sink.yield(unwrapInboundIn(data)) }
}

private actor Log {
    var codes: [Int32] = []
    func add(_ c: Int32) { codes.append(c) }
}

/// Runs `body` against a server on 127.0.0.1 (a free port) with `processors`, then stops it.
private func withServer(_ processors: [RemotingProcessor], port: Int = 0,
                        _ body: @Sendable (String, RemotingClient) async throws -> Void) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let logger = Logger(label: "test")
    let server = RemotingServer(options: RemotingServerOptions(host: "127.0.0.1", port: port), processors: processors, group: group, logger: logger)
    let (bound, boundContinuation) = AsyncStream.makeStream(of: Int.self)
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await server.run { boundContinuation.yield($0.port ?? 0) } }
        var it = bound.makeAsyncIterator()
        let p = await it.next()!
        let client = RemotingClient(group: group, logger: logger)
        do {
            try await body("127.0.0.1:\(p)", client)
        } catch {
            await client.close()
            tasks.cancelAll()
            throw error
        }
        await client.close()
        tasks.cancelAll()
    }
    try await group.shutdownGracefully()
}

private let echo = RemotingProcessor(name: "echo", codes: [100], maxQueuedRequests: 64, workers: 2) { request, _ in
    .response(to: request, code: ResponseCode.success, extFields: request.extFields, body: request.body)
}

/// Requests that must be answered wait up to 10 s: only a hang should fail them. The suite runs
/// beside every other suite on two cores, and a 2 s bound once ran out while the run started
/// (CI, 2026-12-07).
@Suite(.ownThreads) struct ServerClientTests {
    @Test func aRequestIsAnsweredWithItsOpaqueInItsSerialization() async throws {
        try await withServer([echo]) { address, client in
            for type in [SerializeType.json, .rocketmq] {
                var body = ByteBuffer()
                body.writeString("hello")
                let r = try await client.request(address, .request(code: 100, opaque: 0, extFields: ["k": "v"], body: body, serializeType: type), timeoutMilliseconds: 10_000)
                #expect(r.isResponse && r.code == 0 && r.extFields == ["k": "v"])
                #expect(r.serializeType == type)
                #expect(r.body.map { String(buffer: $0) } == "hello")
            }
        }
    }

    @Test func anUnknownCodeIsAnsweredRequestCodeNotSupported() async throws {
        try await withServer([echo]) { address, client in
            let r = try await client.request(address, .request(code: 4242, opaque: 0), timeoutMilliseconds: 10_000)
            #expect(r.code == ResponseCode.requestCodeNotSupported)
            #expect(r.remark == " request type 4242 not supported")
        }
    }

    @Test func oneWayRequestsAreNeverAnswered() async throws {
        let log = Log()
        let recorder = RemotingProcessor(name: "rec", codes: [7, 8], maxQueuedRequests: 8) { request, _ in
            await log.add(request.code)
            return .response(to: request, code: 0)
        }
        try await withServer([recorder]) { address, _ in
            // A bare connection that records every frame the server sends.
            let (host, port) = RemotingClient.split(address)!
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let (frames, sink) = AsyncStream.makeStream(of: RemotingCommand.self)
            let raw = try await ClientBootstrap(group: group).channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RemotingFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(Collector(sink: sink))
                }
            }.connect(host: host, port: port).get()
            var out = ByteBuffer()
            RemotingFrame.encode(.request(code: 7, opaque: 70, oneway: true), into: &out)
            RemotingFrame.encode(.request(code: 9999, opaque: 71, oneway: true), into: &out)  // unknown and one-way: silent too
            RemotingFrame.encode(.request(code: 8, opaque: 72), into: &out)
            try await raw.writeAndFlush(out)
            var it = frames.makeAsyncIterator()
            let first = await it.next()
            #expect(first?.opaque == 72, "the only answer is to the two-way request")
            #expect(await log.codes == [7, 8], "the one-way request was processed")
            try await raw.close()
            try await group.shutdownGracefully()
        }
    }

    @Test func aFullQueueAnswersSystemBusy() async throws {
        let gate = Gate()
        let started = Mutex(0)
        let slow = RemotingProcessor(name: "slow", codes: [1], maxQueuedRequests: 1, workers: 1) { request, _ in
            started.withLock { $0 += 1 }
            await gate.wait()
            return .response(to: request, code: 0)
        }
        try await withServer([slow]) { address, client in
            async let first = client.request(address, .request(code: 1, opaque: 0), timeoutMilliseconds: 20_000)
            // The first is with the worker before the others are sent (polled: a fixed sleep can be
            // too short under CI's load).
            let arrival = ContinuousClock.now
            while started.withLock({ $0 }) < 1 && ContinuousClock.now - arrival < .seconds(20) {
                try await Task.sleep(for: .milliseconds(5))
            }
            // Five more while it runs: one takes the queue's only slot, four are refused at once,
            // so the first four answers come before the gate opens.
            let (refused, rest) = try await withThrowingTaskGroup(of: RemotingCommand.self) { g in
                for _ in 0..<5 { g.addTask { try await client.request(address, .request(code: 1, opaque: 0), timeoutMilliseconds: 20_000) } }
                var refused: [RemotingCommand] = []
                for _ in 0..<4 { if let r = try await g.next() { refused.append(r) } }
                await gate.release()
                var rest: [RemotingCommand] = []
                for try await r in g { rest.append(r) }
                return (refused, rest)
            }
            #expect(refused.count == 4 && refused.allSatisfy { $0.code == ResponseCode.systemBusy && $0.remark?.contains("[REJECTREQUEST]") == true },
                    "\(refused.map { ($0.code, $0.remark ?? "") })")
            #expect(rest.map(\.code) == [0], "the queued request is served once the worker is free")
            #expect(try await first.code == 0)
        }
    }

    /// A processor never runs more than `workers` requests at once, and a worker that finishes takes
    /// the next waiting request (finished requests are not kept: the group discards them).
    @Test func workersAreReusedAndNeverExceeded() async throws {
        let running = Mutex((now: 0, most: 0, done: 0))
        let busy = RemotingProcessor(name: "busy", codes: [2], maxQueuedRequests: 512, workers: 3) { request, _ in
            running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
            try? await Task.sleep(for: .milliseconds(2))
            running.withLock { $0.now -= 1; $0.done += 1 }
            return .response(to: request, code: 0)
        }
        try await withServer([busy]) { address, client in
            try await withThrowingTaskGroup(of: Int32.self) { tasks in
                for _ in 0..<300 {
                    tasks.addTask { try await client.request(address, .request(code: 2, opaque: 0), timeoutMilliseconds: 10_000).code }
                }
                for try await code in tasks { #expect(code == 0) }
            }
        }
        let r = running.withLock { $0 }
        #expect(r.done == 300)
        #expect(r.most == 3, "at most 3 at once, and all 3 used: \(r.most)")
    }

    /// A stopping server cancels the requests its workers run (a long-polled pull waits no longer)
    /// and returns only once they ended: none outlives it.
    @Test func aStopCancelsRunningRequestsAndWaitsForThem() async throws {
        let ended = Mutex((count: 0, cancelled: 0))
        let started = Mutex(0)
        let poll = RemotingProcessor(name: "poll", codes: [3], maxQueuedRequests: 8, workers: 4) { request, _ in
            started.withLock { $0 += 1 }
            try? await Task.sleep(for: .seconds(60))
            try? await Task.sleep(for: .milliseconds(50))  // still running a moment after the cancel
            ended.withLock { $0.count += 1; if Task.isCancelled { $0.cancelled += 1 } }
            return .response(to: request, code: 0)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let logger = Logger(label: "test")
        let server = RemotingServer(options: RemotingServerOptions(host: "127.0.0.1", port: 0), processors: [poll], group: group, logger: logger)
        let (bound, boundContinuation) = AsyncStream.makeStream(of: Int.self)
        let running = Task { try await server.run { boundContinuation.yield($0.port ?? 0) } }
        var it = bound.makeAsyncIterator()
        let port = await it.next()!
        let client = RemotingClient(group: group, logger: logger)
        let requests = Task {
            await withTaskGroup(of: Void.self) { g in
                for _ in 0..<3 { g.addTask { _ = try? await client.request("127.0.0.1:\(port)", .request(code: 3, opaque: 0), timeoutMilliseconds: 30_000) } }
            }
        }
        // All three are with workers before the stop (a fixed sleep was too short under CI's load:
        // the stop then found nothing running and the test failed without a defect).
        let arrival = ContinuousClock.now
        while started.withLock({ $0 }) < 3 && ContinuousClock.now - arrival < .seconds(20) {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(started.withLock { $0 } == 3, "the three requests reached their workers")
        let stop = ContinuousClock.now
        running.cancel()
        try await running.value
        let took = ContinuousClock.now - stop
        let e = ended.withLock { $0 }
        #expect(e.count == 3 && e.cancelled == 3, "every running request ended, cancelled, before run returned: \(e)")
        #expect(took < .seconds(10), "the stop did not wait out the requests' 60 s: \(took)")
        await requests.value
        await client.close()
        try await group.shutdownGracefully()
    }

    @Test func answersMayComeOutOfOrderAndStillMatch() async throws {
        let slowFirst = RemotingProcessor(name: "sleepy", codes: [1], maxQueuedRequests: 8, workers: 4) { request, _ in
            let ms = Int(request.extFields["ms"] ?? "0") ?? 0
            try? await Task.sleep(for: .milliseconds(ms))
            return .response(to: request, code: 0, extFields: ["ms": "\(ms)"])
        }
        try await withServer([slowFirst]) { address, client in
            async let slow = client.request(address, .request(code: 1, opaque: 0, extFields: ["ms": "300"]), timeoutMilliseconds: 5_000)
            async let fast = client.request(address, .request(code: 1, opaque: 0, extFields: ["ms": "1"]), timeoutMilliseconds: 5_000)
            let (f, sl) = try await (fast, slow)
            #expect(f.extFields["ms"] == "1")
            #expect(sl.extFields["ms"] == "300")
        }
    }

    /// Many requests in flight on one connection, answered all at once from many tasks (as a Raft
    /// commit answers a batch of sends): the answers written together are flushed together, and
    /// every one arrives, matched to its request.
    @Test func answersReleasedTogetherAllArriveMatched() async throws {
        let gate = Gate()
        let held = RemotingProcessor(name: "held", codes: [7], maxQueuedRequests: 4_096, workers: 4_096) { request, _ in
            await gate.wait()
            return .response(to: request, code: 0, extFields: ["n": request.extFields["n"] ?? ""])
        }
        try await withServer([held]) { address, client in
            let n = 2_000
            try await withThrowingTaskGroup(of: (Int, String?).self) { tasks in
                for k in 0..<n {
                    tasks.addTask {
                        let r = try await client.request(address, .request(code: 7, opaque: 0, extFields: ["n": "\(k)"]), timeoutMilliseconds: 10_000)
                        return (k, r.extFields["n"])
                    }
                }
                try await Task.sleep(for: .milliseconds(200))
                await gate.release()
                var seen = 0
                for try await (k, answer) in tasks {
                    #expect(answer == "\(k)", "request \(k) got the answer of \(answer ?? "none")")
                    seen += 1
                }
                #expect(seen == n)
            }
        }
    }

    @Test func aRequestWithoutAnAnswerTimesOut() async throws {
        let silent = RemotingProcessor(name: "silent", codes: [1], maxQueuedRequests: 8) { _, _ in nil }
        try await withServer([silent]) { address, client in
            await #expect(throws: RemotingCallError.timeout(milliseconds: 200)) {
                _ = try await client.request(address, .request(code: 1, opaque: 0), timeoutMilliseconds: 200)
            }
            // The connection survives a timeout.
            let r = try await client.request(address, .request(code: 2, opaque: 0), timeoutMilliseconds: 10_000)
            #expect(r.code == ResponseCode.requestCodeNotSupported)
        }
    }

    /// A connection that closed after the caller took it fails the request at once: the write fails
    /// before any handler sees the request, and that failure must reach the caller (it used to wait
    /// forever: a writer of the process tests hung so when a killed leader's connection reset).
    @Test func aRequestOnAConnectionThatClosedFailsAtOnce() async throws {
        let silent = RemotingProcessor(name: "silent", codes: [1], maxQueuedRequests: 8) { _, _ in nil }
        try await withServer([silent]) { address, client in
            let connection = try await client.connection(to: address)
            // (Already closed is as good: a server closes a connection idle too long, as one did
            // here when the test's tasks were held back for minutes.)
            do { try await connection.channel.close() } catch ChannelError.alreadyClosed {}
            let started = ContinuousClock.now
            // An unstructured task: if the request hung, the test must still end (and fail).
            let outcome = Mutex<String?>(nil)
            Task {
                do {
                    _ = try await connection.request(.request(code: 1, opaque: 0), timeoutMilliseconds: 60_000)
                    outcome.withLock { $0 = "answered" }
                } catch {
                    outcome.withLock { $0 = "\(error)" }
                }
            }
            while outcome.withLock({ $0 }) == nil && ContinuousClock.now - started < .seconds(5) { try await Task.sleep(for: .milliseconds(5)) }
            let result = outcome.withLock { $0 } ?? "still waiting after 5 s"
            #expect(result == "\(RemotingCallError.connectionClosed)", "\(result)")
            // From the closed channel, not the request's 60 s timeout: the wait above gives up at 5 s.
            // (Not a tighter bound: under the whole suite's load on 2 cores it took 1.8 s once.)
            #expect(ContinuousClock.now - started < .seconds(5))
        }
    }

    @Test func garbageClosesOnlyItsOwnConnection() async throws {
        try await withServer([echo]) { address, client in
            let (host, port) = RemotingClient.split(address)!
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let raw = try await ClientBootstrap(group: group).connect(host: host, port: port).get()
            var junk = ByteBuffer()
            junk.writeInteger(Int32(12))
            junk.writeInteger(UInt32(3) << 24)  // serialize type 3 does not exist
            junk.writeBytes([1, 2, 3, 4, 5, 6, 7, 8])
            try await raw.writeAndFlush(junk)
            try await raw.closeFuture.get()  // the server hung up
            try await group.shutdownGracefully()
            let r = try await client.request(address, .request(code: 100, opaque: 0), timeoutMilliseconds: 10_000)
            #expect(r.code == 0, "other connections are served")
        }
    }

    @Test func theClientReconnectsWithABackoffThatDoublesWithEachFailure() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var options = RemotingClient.Options()
        options.reconnectBackoffMinMilliseconds = 300
        options.reconnectBackoffMaxMilliseconds = 2_000
        let client = RemotingClient(group: group, options: options, logger: Logger(label: "test"))
        // Nothing listens here (a port from the ephemeral range, bound and released).
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = probe.localAddress!.port!
        try await probe.close()
        let address = "127.0.0.1:\(port)"
        @Sendable func attempt() async -> (any Error)? {
            do {
                _ = try await client.request(address, .request(code: 100, opaque: 0), timeoutMilliseconds: 2_000)
                return nil
            } catch { return error }
        }
        let first = try #require(await attempt(), "nothing listens yet")
        // Within the backoff: refused at once, in the same words (so callers log it once).
        #expect(await attempt().map { "\($0)" } == "\(first)")
        try await Task.sleep(for: .milliseconds(400))  // past the first backoff (300 ms)
        #expect(await attempt() != nil, "the second connect fails too")
        let secondFailure = ContinuousClock.now
        try await withServer([echo], port: port) { _, _ in
            // The second failure doubled the backoff to 600 ms: with the server up, a request 400 ms
            // after it (past a backoff that did not double) is still refused without a connect.
            // (Unless this machine stalled so long that the backoff is over anyway: then there is
            // nothing to see.)
            try await Task.sleep(until: secondFailure + .milliseconds(400))
            let error = await attempt()
            if ContinuousClock.now - secondFailure < .milliseconds(550) {
                #expect(error != nil, "no backoff after the second failure")
            }
            try await Task.sleep(until: secondFailure + .milliseconds(700))
            #expect(await attempt() == nil, "connected once the backoff was over")
        }
        await client.close()
        try await group.shutdownGracefully()
    }

    @Test func addressesParse() {
        #expect(RemotingClient.split("127.0.0.1:9876")! == ("127.0.0.1", 9876))
        #expect(RemotingClient.split("[::1]:10911")! == ("::1", 10911))
        #expect(RemotingClient.split("mq1") == nil)
        #expect(RemotingClient.split("mq1:0") == nil)
        #expect(RemotingClient.split(":80") == nil)
    }
}
