import NIOCore
import NIOPosix
import Synchronization

/// One directed Raft link (`from` -> `to`) through a TCP proxy of ours: node `from` is configured to
/// reach peer `to` at this proxy's address, and the proxy forwards to `to`'s real peer port. The
/// proxy understands the remoting framing (a 4-byte length, then the frame), so it drops whole Raft
/// messages while the link is cut, as a lossy network does, and never corrupts a frame. `reset()`
/// closes the link's connections, as a broken network path eventually does.
final class FaultProxy: Sendable {
    let from: Int
    let to: Int
    let listenHost: String
    let listenPort: Int
    let targetHost: String
    let targetPort: Int
    private let cut = Atomic<Bool>(false)
    let forwarded = Atomic<Int>(0)
    let dropped = Atomic<Int>(0)
    private let open = Mutex<[ObjectIdentifier: any Channel]>([:])
    /// Set once `run` bound its port, or failed to.
    let bound = Atomic<Bool>(false)
    let bindError = Mutex<String?>(nil)
    /// The largest frame forwarded; a longer length prefix closes the connection.
    static let frameLimit = 64 << 20

    init(from: Int, to: Int, listenHost: String, listenPort: Int, targetHost: String, targetPort: Int) {
        (self.from, self.to, self.listenHost, self.listenPort, self.targetHost, self.targetPort) = (from, to, listenHost, listenPort, targetHost, targetPort)
    }

    var isCut: Bool { cut.load(ordering: .relaxed) }

    func setCut(_ value: Bool) { cut.store(value, ordering: .relaxed) }

    /// Closes every connection through this link; the sender reconnects.
    func reset() {
        let channels = open.withLock { o -> [any Channel] in
            defer { o.removeAll() }
            return Array(o.values)
        }
        for c in channels { c.close(promise: nil) }
    }

    /// Binds and proxies until cancelled.
    func run(group: any EventLoopGroup) async {
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: listenHost, port: listenPort) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        } catch {
            bindError.withLock { $0 = "cannot bind \(listenHost):\(listenPort) for the link n\(from) -> n\(to): \(error)" }
            bound.store(true, ordering: .releasing)
            return
        }
        bound.store(true, ordering: .releasing)
        await withDiscardingTaskGroup { tasks in
            await withTaskCancellationHandler {
                try? await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        tasks.addTask { await self.serve(connection, group: group) }
                    }
                }
            } onCancel: {
                server.channel.close(promise: nil)
                self.reset()
            }
        }
    }

    private func serve(_ inbound: NIOAsyncChannel<ByteBuffer, ByteBuffer>, group: any EventLoopGroup) async {
        let upstream: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            upstream = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(1))
                .connect(host: targetHost, port: targetPort) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            // The peer is down: the sender sees its connection close, as it would without us.
            try? await inbound.channel.close()
            return
        }
        open.withLock {
            $0[ObjectIdentifier(inbound.channel)] = inbound.channel
            $0[ObjectIdentifier(upstream.channel)] = upstream.channel
        }
        defer {
            _ = open.withLock {
                $0.removeValue(forKey: ObjectIdentifier(inbound.channel))
                $0.removeValue(forKey: ObjectIdentifier(upstream.channel))
            }
        }
        try? await inbound.executeThenClose { inIn, inOut in
            try await upstream.executeThenClose { upIn, upOut in
                await withDiscardingTaskGroup { pumps in
                    // Replies (the peer port answers nothing to one-way messages, but may to requests).
                    pumps.addTask {
                        do { for try await b in upIn { try await inOut.write(b) } } catch {}
                        inbound.channel.close(promise: nil)
                    }
                    pumps.addTask {
                        var pending = ByteBuffer()
                        do {
                            for try await b in inIn {
                                var chunk = b
                                pending.writeBuffer(&chunk)
                                var frames: [ByteBuffer] = []
                                while let length = pending.getInteger(at: pending.readerIndex, as: UInt32.self) {
                                    guard Int(length) <= Self.frameLimit else { throw ProxyFrameTooLong() }
                                    guard pending.readableBytes >= 4 + Int(length), let frame = pending.readSlice(length: 4 + Int(length)) else { break }
                                    if self.isCut {
                                        self.dropped.add(1, ordering: .relaxed)
                                    } else {
                                        self.forwarded.add(1, ordering: .relaxed)
                                        frames.append(frame)
                                    }
                                }
                                pending.discardReadBytes()
                                if !frames.isEmpty { try await upOut.write(contentsOf: frames) }
                            }
                        } catch {}
                        upstream.channel.close(promise: nil)
                    }
                }
            }
        }
    }
}

struct ProxyFrameTooLong: Error {}
