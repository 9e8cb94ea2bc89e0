import Logging
import NIOCore
import RaftCore
import Remoting

/// Raft messages to the other members: one bounded outbox and one sender per peer, so a slow or
/// dead peer delays no one else and never blocks the driver. A full outbox drops the message (Raft
/// retries what matters: appends by probing, votes by the next election).
final class PeerTransport: Sendable {
    private let addresses: [NodeID: String]
    private let outboxes: [NodeID: Mailbox<Message>]
    private let client: RemotingClient
    private let logger: Logger
    private let connectionLost: @Sendable (NodeID) -> Void

    /// `connectionLost` is called (on an event loop) when an established connection to a peer closes.
    init(selfID: NodeID, addresses: [NodeID: String], client: RemotingClient, outboxLimit: Int, logger: Logger,
         connectionLost: @escaping @Sendable (NodeID) -> Void) {
        self.addresses = addresses
        self.connectionLost = connectionLost
        var boxes: [NodeID: Mailbox<Message>] = [:]
        for id in addresses.keys where id != selfID { boxes[id] = Mailbox(limit: outboxLimit) }
        self.outboxes = boxes
        self.client = client
        self.logger = logger
    }

    func send(_ m: Message) {
        guard let box = outboxes[m.to] else { return }
        if !box.offer(m) {
            logger.debug("peer outbox full: message dropped", metadata: ["to": "\(m.to)"])
        }
    }

    /// Runs every sender until cancelled.
    func run() async {
        await withDiscardingTaskGroup { group in
            for (id, box) in outboxes {
                let address = addresses[id]!
                group.addTask { [client, logger, connectionLost] in
                    var lastFailure = ""
                    var watched: RemotingConnection?
                    while !Task.isCancelled {
                        let batch = await box.take(max: 256)
                        if batch.isEmpty { return }
                        do {
                            let connection = try await client.connection(to: address)
                            if connection != watched {
                                // A crashed peer's kernel closes this socket at once: tell the
                                // node, which campaigns early if that peer was its leader.
                                watched = connection
                                connection.channel.closeFuture.whenComplete { _ in connectionLost(id) }
                            }
                            // Binary (ROCKETMQ) headers, and the whole batch in one write.
                            connection.oneway(batch: batch.map {
                                .request(code: RequestCode.raftMessage, opaque: 0, body: RaftWire.encode($0), oneway: true, serializeType: .rocketmq)
                            })
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
        for box in outboxes.values { box.close() }
    }
}
