import Broker
import Foundation
import Glibc
import LogStore
import Metrics
import Prometheus
import Synchronization

/// `/metrics` of a broker: Prometheus text exposition through swift-prometheus's registry, which is
/// also swift-metrics' backend for the process (`MetricsSystem.bootstrap`), so any swift-metrics
/// instrument made anywhere in the process is exported here too.
///
/// Two kinds of figures:
/// - traffic (messages and bytes in and out per topic, append and pull latency), recorded as it
///   happens through `BrokerObserver`;
/// - state (Raft or classic role, indexes, per-peer progress, the log's size, syncs, disk, process),
///   read at each scrape from what the broker already keeps. Counters the broker keeps as totals
///   (elections, syncs) advance by the difference since the last scrape, so they stay counters.
///
/// Names and labels: docs/operations.md (the table of every metric).
final class BrokerMetrics: BrokerObserver, @unchecked Sendable {
    // @unchecked: the registry and its instruments are Sendable; the mutable parts are behind Mutexes.
    let registry: PrometheusCollectorRegistry
    private let store: LogStore
    private let storeDirectory: String

    private struct TopicInstruments {
        var messagesIn, bytesIn, messagesOut, bytesOut: Prometheus.Counter
    }
    private let topics = Mutex<[String: TopicInstruments]>([:])
    private let appendLatency: DurationHistogram
    private let pullLatency: DurationHistogram
    private let longPolls: Prometheus.Counter

    // State gauges and delta-fed counters, touched only at scrape time (under `scrape`).
    fileprivate struct Scraped {
        var counters: [String: (counter: Prometheus.Counter, last: Double)] = [:]
        var labeledGauges: [String: Prometheus.Gauge] = [:]
    }
    private let scraped = Mutex(Scraped())
    private let started = Date()
    /// Prometheus's text exposition format, version 0.0.4.
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private static let latencyBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2_500), .seconds(5),
    ]

    /// Bootstraps swift-metrics with the registry (once per process).
    init(store: LogStore, storeDirectory: String) {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        self.registry = registry
        self.store = store
        self.storeDirectory = storeDirectory
        appendLatency = registry.makeDurationHistogram(
            descriptor: Self.describe("raftmq_append_latency_seconds",
                                      "Time from handing a send to the write path until it was committed (on a Raft group: a quorum holds it)"),
            buckets: Self.latencyBuckets)
        pullLatency = registry.makeDurationHistogram(
            descriptor: Self.describe("raftmq_pull_latency_seconds", "Time spent serving a pull, a long poll's wait excluded"), buckets: Self.latencyBuckets)
        longPolls = registry.makeCounter(descriptor: Self.describe("raftmq_pull_long_polls_total", "Pulls that waited for messages (long polling)"))
    }

    /// A full metric name with its help text.
    static func describe(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    // MARK: BrokerObserver (the request path)

    private func instruments(_ topic: String) -> TopicInstruments {
        topics.withLock { table in
            if let t = table[topic] { return t }
            let labels = [("topic", topic)]
            func counter(_ name: String, _ help: String) -> Prometheus.Counter {
                registry.makeCounter(descriptor: Self.describe(name, help), labels: labels)
            }
            let t = TopicInstruments(
                messagesIn: counter("raftmq_messages_in_total", "Messages stored, per topic"),
                bytesIn: counter("raftmq_bytes_in_total", "Bytes of messages stored (as stored), per topic"),
                messagesOut: counter("raftmq_messages_out_total", "Messages served to consumers, per topic"),
                bytesOut: counter("raftmq_bytes_out_total", "Bytes of messages served to consumers, per topic"))
            table[topic] = t
            return t
        }
    }

    func stored(topic: String, messages: Int, bytes: Int, appendDuration: Duration) {
        let t = instruments(topic)
        t.messagesIn.increment(by: Int64(messages))
        t.bytesIn.increment(by: Int64(bytes))
        appendLatency.record(appendDuration)
    }

    func served(topic: String, messages: Int, bytes: Int, duration: Duration, suspended: Bool) {
        if messages > 0 {
            let t = instruments(topic)
            t.messagesOut.increment(by: Int64(messages))
            t.bytesOut.increment(by: Int64(bytes))
        }
        if suspended { longPolls.increment() }
        pullLatency.record(duration)
    }

    // MARK: Scrape

    /// What a scrape writes state into: gauges by name and labels, counters fed with totals.
    struct Writer {
        fileprivate let metrics: BrokerMetrics
        fileprivate var s: Scraped
        /// Label sets set during this scrape (the rest are removed: a peer no longer followed, a
        /// role no longer held).
        fileprivate var seen: Set<String> = []

        private static func key(_ name: String, _ labels: [(String, String)]) -> String {
            labels.reduce(name) { $0 + "\u{1}" + $1.0 + "=" + $1.1 }
        }

        mutating func gauge(_ name: String, _ labels: [(String, String)], _ value: Double, help: String) {
            let k = Self.key(name, labels)
            seen.insert(k)
            let g: Prometheus.Gauge
            if let existing = s.labeledGauges[k] {
                g = existing
            } else {
                g = metrics.registry.makeGauge(descriptor: BrokerMetrics.describe(name, help), labels: labels)
                s.labeledGauges[k] = g
            }
            g.set(value)
        }

        mutating func gauge<I: BinaryInteger>(_ name: String, _ labels: [(String, String)], _ value: I, help: String) {
            gauge(name, labels, Double(value), help: help)
        }

        mutating func gauge(_ name: String, _ value: Double, help: String) { gauge(name, [], value, help: help) }

        mutating func gauge<I: BinaryInteger>(_ name: String, _ value: I, help: String) { gauge(name, [], Double(value), help: help) }

        /// A counter whose total the broker keeps: it advances by the growth since the last scrape
        /// (a total that shrank, after a restart of what counts, starts the counter over).
        mutating func total(_ name: String, _ value: Double, help: String) {
            if var entry = s.counters[name] {
                if value >= entry.last { entry.counter.increment(by: value - entry.last) } else { entry.counter.reset(); entry.counter.increment(by: value) }
                entry.last = value
                s.counters[name] = entry
            } else {
                let c = metrics.registry.makeCounter(descriptor: BrokerMetrics.describe(name, help))
                c.increment(by: value)
                s.counters[name] = (c, value)
            }
        }

        mutating func total<I: BinaryInteger>(_ name: String, _ value: I, help: String) { total(name, Double(value), help: help) }
    }

    /// `scrape(keepingTopics:_:)` with the topics `messages` knows, and after the mode's state the
    /// series both modes take from the message store (the key index's failures).
    func scrape(_ messages: MessageStore, _ mode: (inout Writer) -> Void) -> String {
        let live = messages.topics.topics
        return scrape(keepingTopics: { live[$0] != nil }) { w in
            mode(&w)
            w.total("raftmq_key_index_failures_total", Int64(messages.keyIndexFailures),
                    help: "Messages dispatch could not put every key of into the key index (queryMsgByKey misses them; they stay consumable)")
        }
    }

    /// The exposition, after `mode` has written the mode's state (Raft or classic). The per-topic
    /// series of topics `live` no longer knows (deleted) are dropped first.
    func scrape(keepingTopics live: (String) -> Bool, _ mode: (inout Writer) -> Void) -> String {
        let gone = topics.withLock { table -> [TopicInstruments] in
            let names = table.keys.filter { !live($0) }
            return names.compactMap { table.removeValue(forKey: $0) }
        }
        for t in gone {
            for c in [t.messagesIn, t.bytesIn, t.messagesOut, t.bytesOut] { registry.unregisterCounter(c) }
        }
        return scraped.withLock { s in
            var w = Writer(metrics: self, s: s)
            mode(&w)
            common(&w)
            // Gauges not set this time (a peer's progress on a node that no longer leads) go away.
            for (k, g) in w.s.labeledGauges where !w.seen.contains(k) {
                registry.unregisterGauge(g)
                w.s.labeledGauges[k] = nil
            }
            s = w.s
            return registry.emitToString()
        }
    }

    private func common(_ w: inout Writer) {
        let st = store.statistics
        w.total("raftmq_log_entries_appended_total", Int64(st.entriesAppended), help: "Entries appended to the commitlog")
        w.total("raftmq_log_syncs_total", Int64(st.dataSyncs), help: "fdatasync calls of the commitlog (group commit and interval flushes)")
        w.total("raftmq_log_synced_bytes_total", Int64(st.syncedBytes), help: "Bytes the commitlog's syncs made durable (bytes per sync = this / raftmq_log_syncs_total)")
        w.total("raftmq_log_sync_seconds_total", Double(st.syncNanoseconds) / 1e9, help: "Seconds spent in the commitlog's group-commit fdatasyncs (the flusher's and the Raft driver's)")
        w.total("raftmq_log_prepared_bytes_total", Int64(st.preparedBytes), help: "Bytes of zeros written and synced ahead of the commitlog's end (warmMapedFileEnable)")
        w.total("raftmq_log_prepare_syncs_total", Int64(st.prepareSyncs), help: "fdatasync calls of the preparer, one per chunk of zeros (not in raftmq_log_syncs_total)")
        w.total("raftmq_log_prepare_failures_total", Int64(st.prepareFailures), help: "Chunks of zeros the preparer could not write (no space, I/O errors; it pauses a second); the log then grows its file itself. A failed sync stops the store instead")
        w.gauge("raftmq_log_first_position_bytes", Int64(store.firstPosition.rawValue), help: "Physical offset of the commitlog's first byte (retention moves it)")
        w.gauge("raftmq_log_end_position_bytes", Int64(store.writePosition.rawValue), help: "Physical offset just past the commitlog's last entry")
        w.gauge("raftmq_log_size_bytes", Int64(store.writePosition.rawValue &- store.firstPosition.rawValue), help: "Bytes the commitlog holds")
        if let ratio = try? LogStoreOptions.statvfsDiskUsage(storeDirectory) {
            w.gauge("raftmq_disk_used_ratio", ratio, help: "Used share of the commitlog's file system (diskMaxUsedSpaceRatio refuses writes above it)")
        }
        var fs = statvfs()
        if statvfs(storeDirectory, &fs) == 0 {
            w.gauge("raftmq_disk_free_bytes", Double(fs.f_bavail) * Double(fs.f_frsize), help: "Bytes free for the broker on the commitlog's file system")
        }
        // The process, in the names of Prometheus's own client libraries.
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
           let rss = statm.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) {
            w.gauge("process_resident_memory_bytes", rss * Double(sysconf(Int32(_SC_PAGESIZE))), help: "Resident memory size in bytes")
        }
        var usage = rusage()
        if getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 {
            let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
            w.total("process_cpu_seconds_total", cpu, help: "Total user and system CPU time spent in seconds")
        }
        w.gauge("process_start_time_seconds", started.timeIntervalSince1970, help: "Start time of the process since the Unix epoch in seconds")
        if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            w.gauge("process_open_fds", Int64(fds.count), help: "Number of open file descriptors")
        }
    }
}
