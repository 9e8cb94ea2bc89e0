import Client
import Foundation
import Logging
import Remoting
import Synchronization

/// The workload of a chaos run: producers sending unique payloads (`chaos <seed> <id> ....`) and
/// recording every SEND_OK with its queue and offset, a consumer group recording what it receives,
/// and the observers (every node's Raft state each 100 ms; the group's committed offsets each 500 ms).
final class ChaosRecord: Sendable {
    struct Ack: Sendable { var queueId: Int32; var offset: Int64; var at: Double }
    struct State {
        var nextId = 0
        var acked: [Int: Ack] = [:]
        var ackTimes: [Double] = []
        var unknown = 0
        var firstFailure: String?
        var received: [Int: Int] = [:]      // id -> times received
        var receivedUnknownBodies = 0
        /// term -> node names seen as leader in it
        var leadersByTerm: [Int: Set<String>] = [:]
        var lastStates: [NodeState?] = []
        /// queue -> the highest committed offset seen, and every decrease
        var offsets: [Int32: Int64] = [:]
        var offsetRegressions: [String] = []
        var offsetAnswers = 0
    }
    let state = Mutex(State())
    let started = ContinuousClock.now

    var now: Double {
        let d = ContinuousClock.now - started
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    func takeId(limit: Int) -> Int? {
        state.withLock { s in
            guard s.nextId < limit else { return nil }
            defer { s.nextId += 1 }
            return s.nextId
        }
    }
}

struct ChaosWorkload {
    let seed: UInt64
    let topic: String
    let group: String
    let size: Int
    let record: ChaosRecord

    func payload(_ id: Int) -> [UInt8] {
        var b = Array("chaos \(seed) \(id) ".utf8)
        if b.count < size { b += [UInt8](repeating: UInt8(ascii: "."), count: size - b.count) }
        return b
    }

    /// The id in a payload of this run, nil for anything else.
    func id(of body: [UInt8]) -> Int? {
        let head = body.prefix(64).split(separator: UInt8(ascii: " "), maxSplits: 3, omittingEmptySubsequences: false)
        guard head.count >= 3, String(decoding: head[0], as: UTF8.self) == "chaos",
              UInt64(String(decoding: head[1], as: UTF8.self)) == seed else { return nil }
        return Int(String(decoding: head[2], as: UTF8.self))
    }

    /// `concurrency` senders until `until` returns true or `limit` ids are used.
    func produce(_ producer: Producer, concurrency: Int, limit: Int, until stop: @escaping @Sendable () -> Bool) async {
        await withDiscardingTaskGroup { tasks in
            for _ in 0..<concurrency {
                tasks.addTask {
                    while !stop(), !Task.isCancelled, let id = record.takeId(limit: limit) {
                        do {
                            let r = try await producer.send(OutgoingMessage(topic: topic, body: payload(id), keys: ["k\(id)"]))
                            let at = record.now
                            record.state.withLock { s in
                                if r.status == .sendOK {
                                    s.acked[id] = ChaosRecord.Ack(queueId: r.queue.queueId, offset: r.queueOffset, at: at)
                                    s.ackTimes.append(at)
                                } else {
                                    s.unknown += 1
                                }
                            }
                        } catch {
                            // The outcome is unknown: it may be stored (and then must be consistent).
                            record.state.withLock { s in
                                s.unknown += 1
                                if s.firstFailure == nil { s.firstFailure = "\(error)" }
                            }
                            try? await Task.sleep(for: .milliseconds(50))
                        }
                    }
                }
            }
        }
    }

    func consume(_ consumer: Consumer) async {
        await consumer.run { (messages: [ReceivedMessage]) -> Consumer.ConsumeStatus in
            record.state.withLock { s in
                for m in messages {
                    if let id = id(of: m.body) { s.received[id, default: 0] += 1 } else { s.receivedUnknownBodies += 1 }
                }
            }
            return .success
        }
    }

    /// Every node's state each 100 ms: who claimed leadership in which term.
    func observe(_ cluster: ChaosCluster, _ client: RemotingClient) async {
        while !Task.isCancelled {
            let states = await cluster.states(client)
            record.state.withLock { s in
                s.lastStates = states
                for st in states.compactMap({ $0 }) where st.role == "leader" { s.leadersByTerm[st.term, default: []].insert(st.selfId) }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The group's committed offsets, asked of whichever node answers as leader, each 500 ms.
    func watchOffsets(_ cluster: ChaosCluster, _ client: RemotingClient, queues: Int) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            // Whoever claims leadership in the highest term (a deposed leader may not know yet).
            let leader = record.state.withLock { s in s.lastStates.compactMap { $0 }.filter { $0.role == "leader" }.max { $0.term < $1.term }?.selfId }
            guard let leader, let node = cluster.nodes.first(where: { $0.name == leader }) else { continue }
            for q in 0..<Int32(queues) {
                let request = RemotingCommand.request(code: RequestCode.queryConsumerOffset, opaque: 0, extFields: [
                    "consumerGroup": group, "topic": topic, "queueId": "\(q)",
                ])
                guard let answer = try? await client.request(node.brokerAddress, request, timeoutMilliseconds: 400),
                      answer.code == ResponseCode.success, let o = answer.extFields["offset"].flatMap({ Int64($0) }) else { continue }
                let at = record.now
                record.state.withLock { s in
                    if let seen = s.offsets[q], o < seen {
                        s.offsetRegressions.append(String(format: "t=%.1fs queue %d: %d after %d (from %@)", at, q, o, seen, leader))
                    }
                    s.offsets[q] = max(o, s.offsets[q] ?? o)
                    s.offsetAnswers += 1
                }
            }
        }
    }
}
