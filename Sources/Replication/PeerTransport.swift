import Logging
import NIOCore
import RaftCore
import Remoting
import Synchronization

/// Raft messages to the other members: one bounded outbox and one sender per peer, so a slow or
/// dead peer delays no one else and never blocks the driver. A full outbox drops the message (Raft
/// retries what matters: appends by probing, votes by the next election).
///
/// When the driver runs on the event loop of a peer's connection (RaftReplica.run) and nothing
/// for that peer is queued or being sent, `send` writes the message to the socket itself: the
/// driver's appends leave before it blocks in its own fdatasync, and no sender has to be scheduled.
/// Messages to one peer keep their order either way.
final class PeerTransport: Sendable {
    private struct Link {
        var queue: [Message] = []
        /// The sender holds a batch it took from `queue` and has not written yet.
        var senderBusy = false
        var senderWaiting: CheckedContinuation<Void, Never>?
        /// The connection the sender last wrote to, while it is open.
        var connection: RemotingConnection?
        var closed = false
    }

    private final class PeerLink: Sendable {
        let state = Mutex(Link())
    }

    private let addresses: [NodeID: String]
    private let links: [NodeID: PeerLink]
    private let outboxLimit: Int
    private let client: RemotingClient
    private let logger: Logger
    private let connectionLost: @Sendable (NodeID) -> Void
    /// Messages `send` wrote to the socket itself (the rest went through a sender), and in how many
    /// writes.
    let directWrites = Atomic<Int>(0)
    let directWriteCalls = Atomic<Int>(0)

    /// `connectionLost` is called (on an event loop) when an established connection to a peer closes.
    init(selfID: NodeID, addresses: [NodeID: String], client: RemotingClient, outboxLimit: Int, logger: Logger,
         connectionLost: @escaping @Sendable (NodeID) -> Void) {
        self.addresses = addresses
        self.connectionLost = connectionLost
        var links: [NodeID: PeerLink] = [:]
        for id in addresses.keys where id != selfID { links[id] = PeerLink() }
        self.links = links
        self.outboxLimit = outboxLimit
        self.client = client
        self.logger = logger
    }

    func send(_ m: Message) {
        send(CollectionOfOne(m), to: m.to)
    }

    /// Sends a Ready's messages: those to one peer leave in one write (a follower that stepped
    /// several appends answers them all with one syscall; in order per peer, as ever).
    func send(_ messages: [Message]) {
        guard messages.count > 1 else {
            if let m = messages.first { send(m) }
            return
        }
        var peers: [NodeID] = []
        for m in messages where !peers.contains(m.to) { peers.append(m.to) }
        if peers.count == 1 { return send(messages, to: peers[0]) }
        for p in peers { send(messages.filter { $0.to == p }, to: p) }
    }

    private enum SendStep { case write(RemotingConnection), queued(CheckedContinuation<Void, Never>?, dropped: Int) }

    private func send<C: Collection>(_ messages: C, to peer: NodeID) where C.Element == Message {
        guard let link = links[peer], !messages.isEmpty else { return }
        let step = link.state.withLock { l -> SendStep in
            if l.closed { return .queued(nil, dropped: messages.count) }
            if l.queue.isEmpty, !l.senderBusy, let c = l.connection, c.channel.eventLoop.inEventLoop { return .write(c) }
            // The first that fit: what is dropped is the newest, as for one message at a time.
            let room = max(0, outboxLimit - l.queue.count)
            guard room > 0 else { return .queued(nil, dropped: messages.count) }
            l.queue.append(contentsOf: messages.prefix(room))
            defer { l.senderWaiting = nil }
            return .queued(l.senderWaiting, dropped: max(0, messages.count - room))
        }
        switch step {
        case .write(let c):
            directWrites.add(messages.count, ordering: .relaxed)
            directWriteCalls.add(1, ordering: .relaxed)
            c.oneway(batch: messages.map(Self.command))
        case .queued(let waiter, let dropped):
            waiter?.resume()
            if dropped > 0 { logger.debug("peer outbox full or closed: messages dropped", metadata: ["to": "\(peer)", "dropped": "\(dropped)"]) }
        }
    }

    private static func command(_ m: Message) -> RemotingCommand {
        // Binary (ROCKETMQ) headers.
        .request(code: RequestCode.raftMessage, opaque: 0, body: RaftWire.encode(m), oneway: true, serializeType: .rocketmq)
    }

    /// Waits for queued messages and takes up to `max` of them (marking the sender busy); empty once
    /// closed.
    private func take(_ link: PeerLink, max: Int) async -> [Message] {
        while true {
            let batch: [Message]? = link.state.withLock { l in
                if l.closed { return [] }
                guard !l.queue.isEmpty else { return nil }
                l.senderBusy = true
                if l.queue.count <= max {
                    defer { l.queue.removeAll(keepingCapacity: true) }
                    return l.queue
                }
                defer { l.queue.removeFirst(max) }
                return Array(l.queue.prefix(max))
            }
            if let batch { return batch }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = link.state.withLock { l -> Bool in
                    if l.closed || !l.queue.isEmpty { return true }
                    l.senderWaiting = c
                    return false
                }
                if now { c.resume() }
            }
        }
    }

    /// Runs every sender until cancelled.
    func run() async {
        await withDiscardingTaskGroup { group in
            for (id, link) in links {
                let address = addresses[id]!
                group.addTask { [client, logger, connectionLost] in
                    var lastFailure = ""
                    var watched: RemotingConnection?
                    while !Task.isCancelled {
                        let batch = await self.take(link, max: 256)
                        if batch.isEmpty { return }
                        defer { link.state.withLock { $0.senderBusy = false } }
                        do {
                            let connection = try await client.connection(to: address)
                            if connection != watched {
                                // A crashed peer's kernel closes this socket at once: tell the
                                // node, which campaigns early if that peer was its leader.
                                watched = connection
                                link.state.withLock { $0.connection = connection }
                                connection.channel.closeFuture.whenComplete { _ in
                                    link.state.withLock { if $0.connection == connection { $0.connection = nil } }
                                    connectionLost(id)
                                }
                            }
                            // The whole batch in one write. On the connection's loop (the replica's
                            // LoopExecutor) it is written before `senderBusy` clears, which is what
                            // keeps `send`'s direct writes behind it.
                            assert(connection.channel.eventLoop.inEventLoop, "a peer sender runs on its connection's event loop")
                            connection.oneway(batch: batch.map(Self.command))
                            lastFailure = ""
                        } catch {
                            // Unreachable peer: the messages are lost, as on a partitioned network.
                            let text = "\(error)"
                            if text != lastFailure {
                                logger.info("cannot reach Raft peer", metadata: ["peer": "\(id)", "address": "\(address)", "error": "\(text)"])
                                lastFailure = text
                            }
                        }
                    }
                }
            }
        }
    }

    func close() {
        for link in links.values {
            let waiter = link.state.withLock { l -> CheckedContinuation<Void, Never>? in
                l.closed = true
                l.queue.removeAll()
                l.connection = nil
                defer { l.senderWaiting = nil }
                return l.senderWaiting
            }
            waiter?.resume()
        }
    }
}
