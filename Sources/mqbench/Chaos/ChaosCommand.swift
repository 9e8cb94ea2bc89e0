import ArgumentParser
import Client
import Foundation
import Glibc
import Logging
import NIOCore
import NIOPosix
import Remoting

/// `mqbench chaos`: the fault-injection suite on real processes. Starts three nameservers and a
/// three-node Raft group on 127.0.0.1-3 (the peer links through fault proxies of ours), runs a
/// workload of producers and a consumer group, injects faults from a seed, heals, and checks:
/// every acknowledged message is stored at its acknowledged queue offset and consumed (lost = 0), no
/// message appears that was never sent, the replicas' commitlogs and consume queues are identical,
/// at most one leader per term was observed, a leader was elected within 2 s of every healing, and
/// the group's committed offsets never went backwards. Exits 1 when a check fails; the seed replays
/// the run's decisions.
struct ChaosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Inject faults into a local 3-node Raft group under load and check that nothing acknowledged is lost.",
        discussion: "Faults: \(FaultKind.allCases.map(\.rawValue).joined(separator: ", ")). Uses 127.0.0.1-3 ports 29876, 31911, 31913, 41911 and 42000-42002.")

    @Option(help: "Seed of the fault schedule (random when left out; printed either way).")
    var seed: UInt64?

    @Option(help: "Seconds of faults (the checks follow).")
    var duration: Double = 60

    @Option(help: "Faults to draw from, comma-separated (default: all).")
    var faults: String?

    @Option(help: "Probability that a fault is combined with a second one.")
    var mix: Double = 0.3

    @Option(help: "Sends in flight.")
    var concurrency = 8

    @Option(help: "Message size in bytes.")
    var size = 256

    @Option(help: "At most this many messages.")
    var maxMessages = 1_000_000

    @Option(help: "flushDiskType of the brokers: ASYNC_FLUSH or SYNC_FLUSH.")
    var flush = "ASYNC_FLUSH"

    @Option(help: "The brokers' commitlog segment size (mappedFileSizeCommitLog); small ones roll often.")
    var segmentBytes = 4 << 20

    @Option(help: "Directory for configs, stores and logs (default: a new one under /tmp).")
    var dir: String?

    @Option(help: "Directory holding mqbroker and mqnamesrv (default: mqbench's own).")
    var bin: String?

    @Flag(help: "Keep the directory after a passing run (a failing run always keeps it).")
    var keep = false

    @Flag(help: "End with one JSON line.")
    var json = false

    @Flag(help: "Checker self-test: plant one defect for each check (a lost ack, a phantom message, a second leader in a term, an offset going backwards, a replica byte flipped); passes only if every check catches its defect.")
    var plantDefects = false

    func validate() throws {
        guard duration > 0, concurrency > 0, size >= 32, maxMessages > 0, (0...1).contains(mix) else {
            throw ValidationError("--duration, --concurrency and --max-messages must be positive, --size at least 32, --mix within 0...1")
        }
        guard flush == "ASYNC_FLUSH" || flush == "SYNC_FLUSH" else { throw ValidationError("--flush is ASYNC_FLUSH or SYNC_FLUSH") }
        _ = try kinds()
    }

    func kinds() throws -> [FaultKind] {
        guard let faults else { return FaultKind.allCases }
        return try faults.split(separator: ",").map { name in
            guard let k = FaultKind(rawValue: String(name).trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("unknown fault \"\(name)\"; known: \(FaultKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return k
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .critical
            return h
        }
        let seed = self.seed ?? UInt64.random(in: 1...999_999_999)
        let directory = dir ?? NSTemporaryDirectory() + "raftmq-chaos-\(seed)-\(getpid())"
        let binDirectory = bin ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        for exe in ["mqbroker", "mqnamesrv"] where !FileManager.default.isExecutableFile(atPath: binDirectory + "/" + exe) {
            throw ValidationError("\(binDirectory)/\(exe) is not there; build first or give --bin")
        }
        var flags = "--duration \(Int(duration)) --concurrency \(concurrency) --size \(size) --flush \(flush) --mix \(mix)"
        if let faults { flags += " --faults \(faults)" }
        print("chaos: seed \(seed); replay: mqbench chaos --seed \(seed) \(flags)")
        print("chaos: directory \(directory)")

        let cluster = ChaosCluster(dir: directory, binDirectory: binDirectory, flushDiskType: flush)
        cluster.segmentBytes = segmentBytes
        try cluster.writeConfigs()
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let client = RemotingClient(group: loops, logger: Logger(label: "chaos"))
        let run = ChaosRun(command: self, seed: seed, cluster: cluster, client: client, loops: loops, kinds: try kinds())
        // Ctrl-C or SIGTERM: stop the processes this run started (by PID) before leaving.
        let interrupts = ([SIGINT, SIGTERM] as [Int32]).map { sig -> any DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                print("chaos: interrupted; stopping the cluster (seed \(seed), directory \(directory))")
                cluster.stopEverything()
                Glibc.exit(130)
            }
            source.resume()
            return source
        }
        defer { interrupts.forEach { $0.cancel() } }
        let proxies = Task { await withDiscardingTaskGroup { g in for p in cluster.links { g.addTask { await p.run(group: loops) } } } }
        // Every link bound before any process starts: a link that is not there would make its faults no-ops.
        let bindDeadline = Date().addingTimeInterval(10)
        while !cluster.links.allSatisfy({ $0.bound.load(ordering: .acquiring) }) && Date() < bindDeadline { try await Task.sleep(for: .milliseconds(10)) }
        let bindErrors = cluster.links.compactMap { $0.bindError.withLock { $0 } } + (cluster.links.allSatisfy { $0.bound.load(ordering: .acquiring) } ? [] : ["a fault proxy did not bind within 10 s"])
        if !bindErrors.isEmpty {
            proxies.cancel()
            print("chaos: \(bindErrors.joined(separator: "; "))")
            throw ExitCode(2)
        }
        let passed: Bool
        do {
            passed = try await run.execute()
        } catch {
            print("chaos: stopped: \(error)")
            for n in cluster.nodes { print("--- \(n.name) log\n\(cluster.tail(n))") }
            cluster.stopEverything()
            proxies.cancel()
            throw ExitCode(2)
        }
        cluster.stopEverything()
        proxies.cancel()
        await proxies.value
        await client.close()
        await run.observer.close()
        try? await loops.shutdownGracefully()
        if plantDefects {
            let caught = run.plantedCaught
            print("chaos: checker self-test: \(caught.filter(\.1).count) of \(caught.count) planted defects caught: " + caught.map { "\($0.0) \($0.1 ? "caught" : "MISSED")" }.joined(separator: ", "))
            try? FileManager.default.removeItem(atPath: directory)
            if caught.allSatisfy(\.1) { return }
            throw ExitCode(1)
        }
        if passed && !keep { try? FileManager.default.removeItem(atPath: directory) }
        if !passed {
            print("chaos: FAILED (seed \(seed)); everything is kept in \(directory)")
            throw ExitCode(1)
        }
        print("chaos: passed")
    }
}
