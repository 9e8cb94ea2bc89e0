import Foundation
import LogFormat
import Logging

/// Delay levels (messageDelayLevel) and the leader's schedule service: a message with property DELAY
/// is stored in SCHEDULE_TOPIC_XXXX, queue level - 1, with its real topic and queue in REAL_TOPIC and
/// REAL_QID; its consume-queue tags code is the time it is due (deterministic on every member: the
/// store time plus the level's delay). When it is due, the leader puts it to its real topic (through
/// the write path, so numbered like any send) and records the level's progress as a consumer offset
/// of the group `%SCHEDULE%` in the log, so a new leader continues where the old one stopped (at
/// least once: a message re-put just before a kill may be re-put again).
public struct DelayLevels: Sendable {
    public static let topic = "SCHEDULE_TOPIC_XXXX"
    public static let progressGroup = "%SCHEDULE%"
    /// Milliseconds of each level, level 1 first.
    public let delays: [Int64]

    /// From `1s 5s 10s 30s 1m 2m ... 2h` (s, m, h, d).
    public init(_ text: String) {
        delays = text.split(separator: " ").compactMap { token -> Int64? in
            guard let unit = token.last, let n = Int64(token.dropLast()) else { return nil }
            switch unit {
            case "s": return n * 1000
            case "m": return n * 60_000
            case "h": return n * 3_600_000
            case "d": return n * 86_400_000
            default: return nil
            }
        }
    }

    public var maxLevel: Int { delays.count }

    /// When a message stored at `storeTimestamp` with `level` is due.
    public func due(level: Int, storeTimestamp: Int64) -> Int64 {
        storeTimestamp + delays[max(0, min(level, maxLevel) - 1)]
    }
}

extension BrokerService {
    /// One pass of the schedule service: every level's due messages go to their real topics.
    func deliverDueMessages() async {
        guard writes.isCaughtUpLeader, options.delayLevels.maxLevel > 0 else { return }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for level in 1...options.delayLevels.maxLevel {
            let key = QueueKey(DelayLevels.topic, Int32(level - 1))
            guard let cq = store.queue(key) else { continue }
            var next = offset(group: DelayLevels.progressGroup, key) ?? Int64(cq.minOffset)
            next = max(next, Int64(cq.minOffset))
            while next < Int64(cq.maxOffset), !Task.isCancelled {
                guard let entries = try? cq.read(from: UInt64(next), maxCount: 32), !entries.isEmpty else { break }
                var delivered = 0
                for e in entries {
                    if e.isBlank { delivered += 1; continue }
                    // Due, or due implausibly late (a clock that jumped back, or an old leader's clock far
                    // ahead of this one's): RocketMQ's correctDeliverTimestamp, with a minute of slack for
                    // clocks that merely differ a little between members.
                    let (latest, overflow) = now.addingReportingOverflow(options.delayLevels.delays[level - 1] &+ 60_000)
                    guard e.tagsCode <= now || (!overflow && e.tagsCode > latest) else { break }
                    guard let bytes = store.record(atPhysicalOffset: e.commitLogOffset),
                          var r = try? bytes.withUnsafeBytes({ try MessageRecord.decode($0, verifyBodyCRC: false) }) else {
                        logger.warning("skipping a delayed message that does not read", metadata: ["level": "\(level)", "offset": "\(next + Int64(delivered))"])
                        delivered += 1
                        continue
                    }
                    guard let realTopic = r.properties[PropertyName.realTopic], let realQueue = r.properties[PropertyName.realQueueId].flatMap({ Int32($0) }) else {
                        delivered += 1
                        continue
                    }
                    r.properties[PropertyName.delay] = nil
                    r.properties[PropertyName.realTopic] = nil
                    r.properties[PropertyName.realQueueId] = nil
                    r.topic = realTopic
                    r.queueId = realQueue
                    r.storeTimestamp = now
                    guard let encoded = try? r.encoded() else { delivered += 1; continue }
                    do {
                        _ = try await writes.append(queue: QueueKey(realTopic, realQueue), count: 1, timeout: .seconds(3)) { first, _ in
                            var out = encoded
                            MessageRecord.patch(queueOffset: first, physicalOffset: nil, in: &out)
                            return out
                        }
                    } catch {
                        logger.warning("re-putting a delayed message failed; retried", metadata: ["level": "\(level)", "error": "\(error)"])
                        break
                    }
                    delivered += 1
                }
                guard delivered > 0 else { break }
                next += Int64(delivered)
                commitOffset(group: DelayLevels.progressGroup, key, next)
                if delivered < entries.count { break }
            }
        }
    }
}
