import Client
import Foundation

/// The checks at the end of a chaos run and what it prints.
final class ChaosReport: @unchecked Sendable {
    let run: ChaosRun
    var episodes: [ChaosRun.Episode]
    let settled: Double?
    var failures: [String] = []
    var figures: [(String, String)] = []
    var json: [String: Any] = [:]

    init(run: ChaosRun, episodes: [ChaosRun.Episode], settled: Double?) {
        self.run = run
        self.episodes = episodes
        self.settled = settled
    }

    func fail(_ line: String) { failures.append(line) }

    func check(consumer: Consumer, stopConsumer: () async -> Void) async throws {
        let record = run.record
        if settled == nil { fail("no leader within 15 s after the final healing") }
        let acked = record.state.withLock { $0.acked }

        // 1. The live consumer group receives every acknowledged message.
        let deadline = record.now + 60
        var missing: [Int] = []
        repeat {
            missing = record.state.withLock { s in acked.keys.filter { s.received[$0] == nil } }
            if missing.isEmpty { break }
            try await Task.sleep(for: .milliseconds(500))
        } while record.now < deadline
        if !missing.isEmpty {
            // Where they are: per queue, how many and which offsets (a stuck queue shows one run up
            // to its end, a skipped batch a hole), beside what was received there.
            var byQueue: [Int32: [Int64]] = [:]
            for id in missing { if let a = acked[id] { byQueue[a.queueId, default: []].append(a.offset) } }
            let received = record.state.withLock { s in s.received }
            let queues = byQueue.keys.sorted().map { q -> String in
                let offsets = byQueue[q]!.sorted()
                let highestReceived = acked.filter { $0.value.queueId == q && received[$0.key] != nil }.map(\.value.offset).max() ?? -1
                return "queue \(q): \(offsets.count) at offsets \(offsets.first!)...\(offsets.last!) (highest received \(highestReceived))"
            }
            fail("the consumer group never received \(missing.count) acknowledged message(s), e.g. ids \(missing.sorted().prefix(10)); \(queues.joined(separator: "; "))")
        }

        // 2. Once every replica applied the same log end: every queue read from offset 0 to its end
        // (at least past its highest acknowledged offset); each acknowledged message at its
        // acknowledged offset, and nothing that was never sent.
        let caughtUp = try await allCaughtUp(within: 30)
        var stored: [Int32: [Int64: Int?]] = [:]
        for q in 0..<Int32(run.queues) {
            let mq = MessageQueue(topic: run.topic, brokerName: ChaosCluster.group, queueId: q)
            var offset: Int64 = 0
            var target = (acked.values.filter { $0.queueId == q }.map(\.offset).max() ?? -1) + 1
            let scanDeadline = record.now + 60
            while offset < target || offset == 0 {
                guard record.now < scanDeadline else {
                    fail("the scan of queue \(q) stopped at offset \(offset) of \(target) (60 s)")
                    break
                }
                guard let r = try? await consumer.pull(mq, from: offset, max: 32) else {
                    try await Task.sleep(for: .milliseconds(100))
                    continue
                }
                target = max(target, r.maxOffset)
                for m in r.messages { stored[q, default: [:]][m.queueOffset] = run.workloadID(m.body) }
                if let last = r.messages.last { offset = max(offset, last.queueOffset + 1, r.nextOffset) }
                else if r.nextOffset > offset { offset = r.nextOffset }
                else if offset >= target { break }
                else { try await Task.sleep(for: .milliseconds(100)) }
            }
        }
        var lost: [String] = []
        for (id, a) in acked {
            switch stored[a.queueId]?[a.offset] {
            case .some(.some(let found)) where found == id: continue
            case .some(.some(let found)): lost.append("id \(id) acknowledged at queue \(a.queueId) offset \(a.offset), which holds id \(found)")
            case .some(.none): lost.append("id \(id) acknowledged at queue \(a.queueId) offset \(a.offset), which holds a foreign message")
            case .none: lost.append("id \(id) acknowledged at queue \(a.queueId) offset \(a.offset), which is not there")
            }
        }
        let attempted = record.state.withLock { $0.nextId }
        var phantom = 0, places: [Int: Int] = [:], messages = 0
        for (_, byOffset) in stored {
            for (_, id) in byOffset {
                messages += 1
                guard let id, id < attempted else { phantom += 1; continue }
                places[id, default: 0] += 1
            }
        }
        let duplicates = places.values.reduce(0) { $0 + max(0, $1 - 1) }
        if !lost.isEmpty { fail("\(lost.count) acknowledged message(s) lost: \(lost.sorted().prefix(5).joined(separator: "; "))") }
        if phantom > 0 { fail("\(phantom) stored message(s) were never sent") }

        // 3. One leader per term, offsets never backwards.
        let (terms, regressions, unknown, firstFailure, received) = record.state.withLock { ($0.leadersByTerm, $0.offsetRegressions, $0.unknown, $0.firstFailure, $0.received) }
        let (offsetAnswers, foreignReceived) = record.state.withLock { ($0.offsetAnswers, $0.receivedUnknownBodies) }
        if offsetAnswers == 0 { fail("no committed-offset query was ever answered: the offset check saw nothing") }
        if foreignReceived > 0 { fail("the consumer group received \(foreignReceived) message(s) that this run never sent") }
        for (t, names) in terms where names.count > 1 { fail("term \(t) had \(names.count) leaders: \(names.sorted())") }
        if !regressions.isEmpty { fail("the group's committed offset went backwards \(regressions.count) time(s): \(regressions.prefix(5).joined(separator: "; "))") }
        for e in episodes {
            if let t = e.electedAfter, t > 2 { fail(String(format: "%.2f s to a leader after healing \"%@\"", t, e.description)) }
            if e.electedAfter == nil { fail("no leader within 10 s of healing \"\(e.description)\"") }
        }

        for c in run.crashes.withLock({ $0 }) { fail("a broker crashed: \(c)") }

        // 4. Replicas: caught up (above), stopped cleanly together, then their commitlogs and consume
        // queues compared.
        await stopConsumer()
        for n in run.cluster.nodes where !n.isRunning { fail("\(n.name) was not running at the end: \(run.cluster.tail(n, lines: 2))") }
        await withTaskGroup(of: Void.self) { g in for n in run.cluster.nodes { g.addTask { self.run.cluster.terminate(n) } } }
        for n in run.cluster.nodes where !run.cluster.exitedCleanly(n) {
            fail("\(n.name) did not stop cleanly on SIGTERM (status \(n.process?.terminationStatus ?? -1)): \(run.cluster.tail(n, lines: 2))")
        }
        if run.command.plantDefects, let victim = files(under: run.cluster.nodes[2].store + "/commitlog/data").keys.sorted().first {
            // One byte of one replica's first segment, flipped after the stop.
            let path = run.cluster.nodes[2].store + "/commitlog/data/" + victim
            if var bytes = FileManager.default.contents(atPath: path), bytes.count > 100 {
                bytes[100] ^= 0x01
                try? bytes.write(to: URL(fileURLWithPath: path))
            }
        }
        var identical = true
        if !caughtUp {
            identical = false
            fail("the replicas did not reach the same applied index within 30 s: \(run.describe(await run.cluster.states(run.observer)))")
        } else {
            for sub in ["commitlog/data", "consumequeue"] {
                // A consume queue file is preallocated with zeros, or cut to its entries by a restart's
                // recovery: what counts is its entries (no entry is all zeros: sizes are positive).
                // A commitlog segment has zeros written ahead of the log (warmMapedFileEnable), as far
                // as each member got: trimmed too (a log ending in zero bytes loses them on every
                // member alike, and the comparison is of prefixes).
                let trees = run.cluster.nodes.map { files(under: $0.store + "/" + sub).mapValues { trimZeros($0) } }
                // The stop is not atomic: a member may append (its stop's offset flush, a new
                // leader's first entry) after another stopped. So one replica's files must be a
                // prefix of the other's, byte for byte; the caught-up check above showed the same end.
                for k in 1..<trees.count {
                    let names = Set(trees[0].keys).union(trees[k].keys).sorted()
                    let differing = names.filter { name in
                        let (a, b) = (trees[0][name] ?? Data(), trees[k][name] ?? Data())
                        let m = min(a.count, b.count)
                        return a.prefix(m) != b.prefix(m)
                    }
                    // A file one side lacks counts when the other side's holds entries.
                    let missing = names.filter { (trees[0][$0] == nil) != (trees[k][$0] == nil) && !(trees[0][$0] ?? trees[k][$0] ?? Data()).isEmpty }
                    // A whole file only one side has is allowed as its newest (a segment begun after the other stopped).
                    let misplaced = missing.filter { $0 != names.last }
                    if !differing.isEmpty || !misplaced.isEmpty {
                        identical = false
                        fail("\(run.cluster.nodes[k].name)'s \(sub) differs from n0's: \((differing + misplaced).prefix(5).joined(separator: ", "))")
                    }
                }
            }
        }

        // Unavailability: the longest stretch without an acknowledgement, per fault.
        let times = record.state.withLock { $0.ackTimes }.sorted()
        for i in episodes.indices {
            let e = episodes[i]
            var last = e.start, longest = 0.0
            for t in times where t >= e.start && t <= e.end {
                longest = max(longest, t - last)
                last = t
            }
            episodes[i].unavailable = max(longest, e.end - last)
        }
        let redelivered = received.values.reduce(0) { $0 + max(0, $1 - 1) }
        figures = [
            ("seed", "\(run.seed)"), ("faults", "\(episodes.count)"), ("attempted", "\(attempted)"), ("acked", "\(acked.count)"),
            ("unknownOutcome", "\(unknown)"), ("stored", "\(messages)"), ("lost", "\(lost.count)"), ("phantom", "\(phantom)"),
            ("duplicatesFromRetries", "\(duplicates)"), ("redelivered", "\(redelivered)"), ("consumerMissing", "\(missing.count)"),
            ("termsSeen", "\(terms.count)"), ("offsetAnswers", "\(offsetAnswers)"), ("offsetRegressions", "\(regressions.count)"), ("replicasIdentical", "\(identical)"),
        ]
        if let firstFailure { figures.append(("firstSendFailure", firstFailure)) }
        json = Dictionary(uniqueKeysWithValues: figures.map { ($0.0, Int($0.1).map { $0 as Any } ?? $0.1 as Any) })
        json["replicasIdentical"] = identical
        json["failures"] = failures
        json["episodes"] = episodes.map { e -> [String: Any] in
            ["fault": e.description, "atS": round(e.start * 10) / 10, "heldS": round((e.healed - e.start) * 10) / 10,
             "leaderAfterHealMs": e.electedAfter.map { Int($0 * 1_000) } as Any, "unavailableMs": Int(e.unavailable * 1_000)]
        }
    }

    func allCaughtUp(within seconds: Double) async throws -> Bool {
        let deadline = run.record.now + seconds
        while run.record.now < deadline {
            let s = await run.cluster.states(run.observer, timeoutMs: 500).compactMap { $0 }
            if s.count == 3, Set(s.map(\.lastIndex)).count == 1, s.allSatisfy({ $0.appliedIndex == $0.lastIndex && $0.commitIndex == $0.lastIndex }) { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    func trimZeros(_ d: Data) -> Data {
        guard let last = d.lastIndex(where: { $0 != 0 }) else { return Data() }
        return d.prefix(through: last)
    }

    /// Every file under `root`, by relative path, with its bytes.
    func files(under root: String) -> [String: Data] {
        var out: [String: Data] = [:]
        guard let walker = FileManager.default.enumerator(atPath: root) else { return out }
        while let rel = walker.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: root + "/" + rel, isDirectory: &isDirectory), !isDirectory.boolValue {
                out[rel] = FileManager.default.contents(atPath: root + "/" + rel) ?? Data()
            }
        }
        return out
    }

    /// Prints the fault table and the figures; true when every check held.
    func print(json asJSON: Bool) -> Bool {
        Swift.print("\nfault                                                            at(s)  held(s)  leader after heal  unavailable")
        for e in episodes {
            let name = e.description.count > 64 ? String(e.description.prefix(61)) + "..." : e.description.padding(toLength: 64, withPad: " ", startingAt: 0)
            Swift.print(name + String(format: " %6.1f  %7.1f  %17@  %9.0f ms", e.start, e.healed - e.start,
                                      (e.electedAfter.map { String(format: "%.0f ms", $0 * 1_000) } ?? "none") as NSString, e.unavailable * 1_000))
        }
        Swift.print("")
        for (k, v) in figures { Swift.print("\(k): \(v)") }
        if failures.isEmpty {
            Swift.print("checks: lost = 0, no phantom, replicas identical, one leader per term, a leader within 2 s of every healing, offsets never backwards: all held")
        } else {
            for f in failures { Swift.print("CHECK FAILED: \(f)") }
        }
        if asJSON, let data = try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]) {
            Swift.print(String(decoding: data, as: UTF8.self))
        }
        return failures.isEmpty
    }
}

extension ChaosRun {
    func workloadID(_ body: [UInt8]) -> Int? {
        ChaosWorkload(seed: seed, topic: topic, group: consumerGroup, size: command.size, record: record).id(of: body)
    }
}
