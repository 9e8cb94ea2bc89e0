import Foundation
import Glibc
import LogStore
import NIOCore
import Remoting
import Synchronization

/// GET_BROKER_RUNTIME_INFO (28), what `mqadmin clusterList` prints per broker: the version, the rates
/// of messages stored and of messages served to consumers (putTps and getTransferedTps over the last
/// 10 s, 1 min, 10 min; a follower stores none itself), the commitlog's offsets and its disk's usage.
/// Only measured figures; what is not measured is left out.
final class RuntimeInfo: Sendable {
    /// Role fields of the table (dLegerRole and commitIndex of a Raft member; brokerRole of a classic broker).
    private let role: @Sendable () -> [String: String]
    private let store: LogStore
    private let storeDirectory: String
    /// Messages stored and served since start.
    private let totals: @Sendable () -> (put: Int64, get: Int64)
    /// (seconds since start, put, get) once a second, the last 600 s.
    private let samples = Mutex<[(Int64, Int64, Int64)]>([])
    private let started = ContinuousClock.now

    init(role: @escaping @Sendable () -> [String: String], store: LogStore, storeDirectory: String, totals: @escaping @Sendable () -> (put: Int64, get: Int64)) {
        self.role = role
        self.store = store
        self.storeDirectory = storeDirectory
        self.totals = totals
    }

    private func sample() {
        let t = (ContinuousClock.now - started).components.seconds
        let (put, get) = totals()
        samples.withLock { list in
            if let last = list.last, last.0 == t { return }
            list.append((t, put, get))
            if list.count > 601 { list.removeFirst(list.count - 601) }
        }
    }

    private func tps(over seconds: Int64, _ value: ((Int64, Int64, Int64)) -> Int64) -> Double {
        samples.withLock { list in
            guard let last = list.last, let first = list.last(where: { last.0 - $0.0 >= seconds }) ?? list.first, last.0 > first.0 else { return 0 }
            return Double(value(last) - value(first)) / Double(last.0 - first.0)
        }
    }

    var processor: RemotingProcessor {
        RemotingProcessor(name: "runtime", codes: [RequestCode.getBrokerRuntimeInfo], maxQueuedRequests: 256, workers: 2) { [self] request, _ in
            sample()
            func f(_ v: Double) -> String { String(format: "%.2f", v) }
            var table: [String: JSONText] = [
                "brokerVersionDesc": .string("V4_9_1"),
                "brokerVersion": .string("\(RemotingCommand.ourVersion)"),
                "putTps": .string([10, 60, 600].map { f(tps(over: $0) { $0.1 }) }.joined(separator: " ")),
                "getTransferedTps": .string([10, 60, 600].map { f(tps(over: $0) { $0.2 }) }.joined(separator: " ")),
                "msgPutTotalTodayNow": .string("\(totals().put)"),
                "msgGetTotalTodayNow": .string("\(totals().get)"),
                "commitLogMinOffset": .string("\(store.firstPosition.rawValue)"),
                "commitLogMaxOffset": .string("\(store.writePosition.rawValue)"),
                "runtime": .string("[ \((ContinuousClock.now - started).components.seconds) seconds ]"),
            ]
            if let ratio = try? LogStoreOptions.statvfsDiskUsage(storeDirectory) { table["commitLogDiskRatio"] = .string(String(format: "%.4f", ratio)) }
            for (k, v) in role() { table[k] = .string(v) }
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
