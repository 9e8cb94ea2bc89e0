import Client
import Foundation
import Logging
import NIOCore
import NIOPosix
import Remoting
import Synchronization

struct ChaosFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// One chaos run, from the first process to the last check.
final class ChaosRun: @unchecked Sendable {
    struct Episode {
        var description: String
        var start: Double
        var healed: Double
        /// Seconds from healing to a leader a majority follows; nil when none came within 10 s.
        var electedAfter: Double?
        var end: Double
        var unavailable: Double = 0
    }

    let command: ChaosCommand
    let seed: UInt64
    let cluster: ChaosCluster
    let client: RemotingClient
    /// The checker's own connections (state polls): it reconnects within 100 ms of a restart, so a
    /// time to a leader measures the cluster, not a client's reconnect backoff (the producers' client
    /// keeps the default, up to 2 s, as a user's would; the hour-long run of 2026-12-03 measured that
    /// backoff in its slowest kill-all healings).
    let observer: RemotingClient
    let loops: MultiThreadedEventLoopGroup
    let kinds: [FaultKind]
    let record = ChaosRecord()
    let topic = "ChaosTopic"
    let consumerGroup = "ChaosCheck"
    let queues = 4

    init(command: ChaosCommand, seed: UInt64, cluster: ChaosCluster, client: RemotingClient, loops: MultiThreadedEventLoopGroup, kinds: [FaultKind]) {
        (self.command, self.seed, self.cluster, self.client, self.loops, self.kinds) = (command, seed, cluster, client, loops, kinds)
        var options = RemotingClient.Options()
        options.reconnectBackoffMaxMilliseconds = 100
        observer = RemotingClient(group: loops, options: options, logger: Logger(label: "chaos-observer"))
    }

    func say(_ line: String) {
        print(String(format: "t=%7.2fs ", record.now) + line)
        fflush(nil)
    }

    /// The leader a majority of the nodes follows in one term (the leader itself saying so), by index.
    func majorityLeader(_ states: [NodeState?]) -> Int? {
        let known = states.compactMap { $0 }
        for s in known where s.role == "leader" {
            let followers = known.filter { $0.term == s.term && $0.leaderId == s.selfId }.count
            if followers >= 2, let k = cluster.nodes.firstIndex(where: { $0.name == s.selfId }) { return k }
        }
        return nil
    }

    func leaderElected(within seconds: Double) async -> Double? {
        let start = record.now
        while record.now - start < seconds {
            if majorityLeader(await cluster.states(observer, timeoutMs: 200)) != nil { return record.now - start }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// Returns once every member answers `/raft/state`, or after `seconds`.
    func everyMemberAnswers(within seconds: Double) async {
        let start = record.now
        while record.now - start < seconds {
            if await cluster.states(observer, timeoutMs: 200).allSatisfy({ $0 != nil }) { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    func sleep(_ seconds: Double) async throws { try await Task.sleep(for: .milliseconds(Int64(seconds * 1_000))) }

    func waitForNameServers() async throws {
        for address in cluster.nameServerList {
            let deadline = record.now + 15
            while (try? await client.connection(to: address)) == nil {
                guard record.now < deadline else { throw ChaosFailure("nameserver \(address) is not listening") }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    func execute() async throws -> Bool {
        try cluster.startNameServers()
        try await waitForNameServers()
        for n in cluster.nodes { try cluster.start(n) }
        try await Task.sleep(for: .milliseconds(300))
        if let dead = cluster.nodes.first(where: { !$0.isRunning }) { throw ChaosFailure("\(dead.name) exited at start: \(cluster.tail(dead, lines: 3))") }
        guard await leaderElected(within: 30) != nil else { throw ChaosFailure("no leader within 30 s of the start") }
        say("cluster up: \(describe(await cluster.states(observer)))")

        var producerOptions = Producer.Options()
        producerOptions.sendTimeout = .seconds(5)
        let producer = Producer(nameServers: cluster.nameServerList, remoting: client, logger: Logger(label: "chaos"), options: producerOptions)
        let workload = ChaosWorkload(seed: seed, topic: topic, group: consumerGroup, size: command.size, record: record)
        // The topic exists (created from TBW102 by the first send) before the faults start.
        let firstDeadline = record.now + 30
        while true {
            if let id = record.takeId(limit: command.maxMessages), let r = try? await producer.send(OutgoingMessage(topic: topic, body: workload.payload(id))), r.status == .sendOK {
                record.state.withLock { $0.acked[id] = ChaosRecord.Ack(queueId: r.queue.queueId, offset: r.queueOffset, at: record.now) }
                break
            }
            record.state.withLock { $0.unknown += 1 }
            guard record.now < firstDeadline else { throw ChaosFailure("no send was acknowledged within 30 s") }
            try await Task.sleep(for: .milliseconds(200))
        }

        var consumerOptions = Consumer.Options(group: consumerGroup, topic: topic)
        consumerOptions.commitInterval = .milliseconds(500)
        let consumer = Consumer(nameServers: cluster.nameServerList, remoting: client, logger: Logger(label: "chaos"), options: consumerOptions)
        let observers = Task {
            await withDiscardingTaskGroup { g in
                g.addTask { await workload.observe(self.cluster, self.observer) }
                g.addTask { await workload.watchOffsets(self.cluster, self.observer, queues: self.queues) }
            }
        }
        let consuming = Task { await workload.consume(consumer) }
        let supervising = Task { await supervise() }
        let producing = Atomic<Bool>(true)
        let producers = Task {
            await workload.produce(producer, concurrency: command.concurrency, limit: command.maxMessages) { !producing.load(ordering: .relaxed) }
        }

        // The faults.
        var pick = SeededRandom(seed: seed)
        var episodes: [Episode] = []
        let faultsEnd = record.now + command.duration
        try await sleep(2)
        while record.now < faultsEnd {
            let leader = majorityLeader(record.state.withLock { $0.lastStates })
            let kind = kinds[Int.random(in: 0..<kinds.count, using: &pick)]
            var applied = [cluster.apply(kind, leader: leader, pick: &pick)]
            let combinable = kinds.filter { $0 != .killAll && $0 != kind }
            if Double.random(in: 0..<1, using: &pick) < command.mix, kind != .killAll, !combinable.isEmpty {
                let second = combinable[Int.random(in: 0..<combinable.count, using: &pick)]
                applied.append(cluster.apply(second, leader: leader, pick: &pick))
            }
            let description = applied.map { "\($0.kind.rawValue) (\($0.description))" }.joined(separator: " + ")
            let start = record.now
            say("fault: \(description)")
            try await sleep(Double.random(in: 1.5...4, using: &pick))
            for a in applied.reversed() { try a.heal(cluster) }
            let healed = record.now
            let elected = await leaderElected(within: 10)
            say("healed; " + (elected.map { String(format: "a leader in %.0f ms", $0 * 1_000) } ?? "NO LEADER within 10 s") + ": \(describe(record.state.withLock { $0.lastStates }))")
            try await sleep(Double.random(in: 2...4, using: &pick))
            episodes.append(Episode(description: description, start: start, healed: healed, electedAfter: elected, end: record.now))
        }
        producing.store(false, ordering: .relaxed)
        await producers.value
        say("faults over; producers stopped")
        if command.plantDefects {
            // A message nobody recorded sending, an acknowledgement of a message never stored, a
            // second leader in a term, an offset going backwards.
            _ = try? await producer.send(OutgoingMessage(topic: topic, body: workload.payload(999_999_999)))
            record.state.withLock { s in
                s.acked[s.nextId] = ChaosRecord.Ack(queueId: 0, offset: 1 << 40, at: record.now)
                s.nextId += 1
                s.leadersByTerm[1_000_000] = ["n0", "n1"]
                s.offsetRegressions.append("planted")
            }
        }

        // Heal everything, let the group settle, then check.
        cluster.healNetwork()
        for n in cluster.nodes {
            cluster.setDiskFaults(n)
            if !n.isRunning { try cluster.start(n) }
            cluster.resume(n)
        }
        let settled = await leaderElected(within: 15)
        // Supervised until every member answers again: one that stopped on a full disk near the
        // end may still be exiting (a stopping broker can take seconds), and is restarted only
        // once it has exited. The replica check below reports one that never comes back.
        await everyMemberAnswers(within: 30)
        supervising.cancel()
        await supervising.value
        let report = ChaosReport(run: self, episodes: episodes, settled: settled)
        try await report.check(consumer: consumer, stopConsumer: {
            consuming.cancel()
            await consuming.value
            observers.cancel()
            await observers.value
        })
        let passed = report.print(json: command.json)
        if command.plantDefects {
            let f = report.failures
            plantedCaught = [
                ("lost", f.contains { $0.contains("acknowledged message(s) lost") }),
                ("phantom", f.contains { $0.contains("never sent") }),
                ("leaders", f.contains { $0.contains("term 1000000 had 2 leaders") }),
                ("offsets", f.contains { $0.contains("went backwards") }),
                ("replicas", f.contains { $0.contains("differs from n0's") }),
            ]
        }
        return passed
    }

    /// With --plant-defects: which check caught its planted defect.
    var plantedCaught: [(String, Bool)] = []

    /// Unexpected exits, by description; a stop on a full disk is expected (fail-stop) and not here.
    let crashes = Mutex<[String]>([])

    /// Restarts, as systemd's Restart=on-failure would, a broker that exited while no fault holds it
    /// down: at once, or once its disk has space again. An exit not explained by a full disk is a
    /// failure of the run.
    func supervise() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            for n in cluster.nodes {
                let (exited, mayFailStop, status): (Bool, Bool, Int32) = cluster.lock.withLock {
                    guard let p = n.process, !p.isRunning, !n.heldDown, !n.diskFull else { return (false, false, 0) }
                    return (true, n.mayFailStop, p.terminationStatus)
                }
                guard exited else { continue }
                let last = cluster.tail(n, lines: 2)
                // Expected: a full disk since its last start, and the stop says so (a stopping broker
                // may take seconds to exit, well after the space came back).
                let expected = mayFailStop && last.contains("No space left on device")
                if expected {
                    say("\(n.name) had stopped on its full disk (exit \(status)); space is back: restarting it")
                } else {
                    say("\(n.name) EXITED (status \(status)) with no fault to explain it; restarting it. Log: \(last)")
                    crashes.withLock { $0.append("\(n.name) exited with status \(status): \(last)") }
                }
                try? cluster.start(n)
            }
        }
    }

    func describe(_ states: [NodeState?]) -> String {
        zip(cluster.nodes, states).map { n, s in
            guard let s else { return "\(n.name):\(n.isRunning ? (n.stopped ? "stopped" : "silent") : "down")" }
            return "\(n.name):\(s.role)/t\(s.term)"
        }.joined(separator: " ")
    }
}
