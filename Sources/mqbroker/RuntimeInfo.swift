import Foundation
import Glibc
import LogStore
import NIOCore
import Remoting
import Replication
import Synchronization

/// GET_BROKER_RUNTIME_INFO (28), what `mqadmin clusterList` prints per broker: the version, the rate of
/// committed entries (putTps over the last 10 s, 1 min, 10 min), the commitlog's offsets and its
/// disk's usage. Only measured figures; what is not measured yet is left out.
final class RuntimeInfo: Sendable {
    private let replica: RaftReplica
    private let store: LogStore
    private let storeDirectory: String
    /// (seconds since start, commit index) once a second, the last 600 s.
    private let samples = Mutex<[(Int64, Int64)]>([])
    private let started = ContinuousClock.now

    init(replica: RaftReplica, store: LogStore, storeDirectory: String) {
        self.replica = replica
        self.store = store
        self.storeDirectory = storeDirectory
    }

    private func sample() {
        let t = (ContinuousClock.now - started).components.seconds
        guard let s = replica.status else { return }
        let commit = s.storeNumber(s.raft.commit)
        samples.withLock { list in
            if let last = list.last, last.0 == t { return }
            list.append((t, commit))
            if list.count > 601 { list.removeFirst(list.count - 601) }
        }
    }

    private func tps(over seconds: Int64) -> Double {
        samples.withLock { list in
            guard let last = list.last, let first = list.last(where: { last.0 - $0.0 >= seconds }) ?? list.first, last.0 > first.0 else { return 0 }
            return Double(last.1 - first.1) / Double(last.0 - first.0)
        }
    }

    var processor: RemotingProcessor {
        RemotingProcessor(name: "runtime", codes: [RequestCode.getBrokerRuntimeInfo], maxQueuedRequests: 256, workers: 2) { [self] request, _ in
            sample()
            func f(_ v: Double) -> String { String(format: "%.2f", v) }
            var table: [String: JSONText] = [
                "brokerVersionDesc": .string("V4_9_1"),
                "brokerVersion": .string("\(RemotingCommand.ourVersion)"),
                "putTps": .string("\(f(tps(over: 10))) \(f(tps(over: 60))) \(f(tps(over: 600)))"),
                // Nothing is pulled through this broker yet (issue 5): measured, it is zero.
                "getTransferedTps": .string("0.00 0.00 0.00"),
                "commitLogMinOffset": .string("\(store.firstPosition.rawValue)"),
                "commitLogMaxOffset": .string("\(store.writePosition.rawValue)"),
                "runtime": .string("[ \((ContinuousClock.now - started).components.seconds) seconds ]"),
            ]
            if let ratio = try? LogStoreOptions.statvfsDiskUsage(storeDirectory) { table["commitLogDiskRatio"] = .string(String(format: "%.4f", ratio)) }
            if let s = replica.status {
                table["dLegerRole"] = .string(s.raft.role.rawValue.uppercased())
                table["commitIndex"] = .string("\(s.storeNumber(s.raft.commit))")
            }
            var body = ByteBuffer()
            body.writeString(JSONText.object(["table": .object(table)]).serialized)
            return .response(to: request, code: ResponseCode.success, body: body)
        }
    }

    /// Samples once a second until cancelled.
    func run() async {
        while !Task.isCancelled {
            sample()
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
