import AdminHTTP
import Client
import Foundation
import Logging
import Remoting
import Replication

/// The dashboard behind `GET /` (docs/operations.md): `GET /api/overview` gathers what the page
/// shows from the nameservers and every broker they list (the cluster, each member's /raft/state
/// through METADATA, topics with their queues, consumer groups with their lag), and
/// `POST /api/leadership-transfer` moves a Raft group's leader. The broker serving the page does
/// the asking, so the browser talks to one origin only.
///
/// An overview is gathered at most once a second however many pages watch; while nobody asks,
/// nothing is gathered.
actor Dashboard {
    struct Options: Sendable {
        var nameServers: [String]
        /// This broker, shown even without nameservers.
        var selfState: @Sendable () -> String
        var selfAddress: String
        var clusterName: String
        var brokerName: String
        /// Topics whose queues are asked for in one overview; the rest are counted, not listed.
        var maxTopics = 200
        /// Consumer groups asked for in one overview.
        var maxGroups = 100
        /// Requests in flight at once while gathering.
        var parallelism = 8
        var requestTimeoutMs: Int64 = 1_500
        /// Items (topics, consumer groups) not started within this much of a gather are reported as not
        /// asked, so a slow or partly dead cluster still gets an overview in bounded time.
        var gatherBudget: Duration = .seconds(5)
        var refreshInterval: Duration = .seconds(1)
        /// The names this broker may be reached by (besides IP literals and localhost): a transfer whose
        /// Host is another name is refused, so a DNS-rebinding page cannot pass for this origin.
        var allowedHosts: Set<String> = []
    }

    private let options: Options
    private let remoting: RemotingClient
    private let logger: Logger
    private var latest: (at: ContinuousClock.Instant, json: String, generation: Int)?
    private var gathering: (generation: Int, task: Task<String, Never>)?
    /// Bumped by a leadership transfer: overviews gathered before it are not served after it.
    private var generation = 0
    /// The last cluster info seen, for finding a group's members on a transfer.
    private var lastGroups: [ClusterQueries.ClusterInfo.Group] = []

    init(options: Options, remoting: RemotingClient, logger: Logger) {
        self.options = options
        self.remoting = remoting
        self.logger = logger
    }

    /// The routes the dashboard adds to the admin port.
    nonisolated func routes() -> [String: AdminRoute] {
        [
            "/": .get { DashboardPage.response },
            "/api/overview": .getLater { _ in
                AdminResponse(status: .ok, body: await self.overview())
            },
            "/api/leadership-transfer": .post { request in await self.transfer(request) },
        ]
    }

    /// The latest overview. One older than the refresh interval is gathered anew and awaited, unless a
    /// gather is already running: then the older one is answered at once (the page asks again in a
    /// second), so waiting pages never pile up on the admin port's workers.
    func overview() async -> String {
        if let latest, latest.generation == generation {
            if ContinuousClock.now - latest.at < options.refreshInterval { return latest.json }
            if gathering?.generation == generation { return latest.json }
        }
        let task: Task<String, Never>
        if let g = gathering, g.generation == generation {
            task = g.task
        } else {
            let gen = generation
            // Owned here and cancelled with the request that started it (the server's shutdown).
            task = Task { await self.gather(generation: gen) }
            gathering = (gen, task)
        }
        return await withTaskCancellationHandler { await task.value } onCancel: { task.cancel() }
    }

    // MARK: Gathering

    private func gather(generation gen: Int) async -> String {
        let json = await gatherOverview()
        if gen == generation { latest = (.now, json, gen) }
        if gathering?.generation == gen { gathering = nil }
        return json
    }

    private func gatherOverview() async -> String {
        let started = ContinuousClock.now
        let budgetEnd = started + options.gatherBudget
        var out: [String: Any] = [
            "generatedAtMs": Int64(Date().timeIntervalSince1970 * 1_000),
            "servedBy": ["addr": options.selfAddress, "brokerName": options.brokerName, "cluster": options.clusterName],
        ]
        var errors: [String] = []

        // Every nameserver, each asked on its own: the page shows which ones answer.
        let answers = await withTaskGroup(of: (String, Result<ClusterQueries.ClusterInfo, ClientError>).self) { tasks in
            for ns in options.nameServers {
                let q = ClusterQueries(nameServers: [ns], remoting: remoting, timeoutMilliseconds: options.requestTimeoutMs)
                tasks.addTask {
                    do throws(ClientError) { return (ns, .success(try await q.clusterInfo())) } catch { return (ns, .failure(error)) }
                }
            }
            var all: [String: Result<ClusterQueries.ClusterInfo, ClientError>] = [:]
            for await (ns, r) in tasks { all[ns] = r }
            return all
        }
        var info: ClusterQueries.ClusterInfo?
        var nameServers: [[String: Any]] = []
        for ns in options.nameServers {
            switch answers[ns] {
            case .success(let i):
                nameServers.append(["addr": ns, "ok": true])
                // The answer with the most registered brokers is the freshest view.
                if info == nil || i.groups.reduce(0, { $0 + $1.addresses.count }) > info!.groups.reduce(0, { $0 + $1.addresses.count }) { info = i }
            case .failure(let e):
                nameServers.append(["addr": ns, "ok": false, "error": e.description])
            case nil:
                nameServers.append(["addr": ns, "ok": false, "error": "not asked"])
            }
        }
        out["nameServers"] = nameServers
        var groups = info?.groups ?? []
        if !groups.contains(where: { $0.addresses.values.contains(options.selfAddress) }) {
            // Without nameservers (or before this broker registered) the page still shows this broker.
            groups.append(.init(cluster: options.clusterName, brokerName: options.brokerName, addresses: [-1: options.selfAddress]))
        }
        lastGroups = groups
        out["clusters"] = await clusters(groups)

        if info != nil {
            // The nameservers that answered are asked first from here on.
            let answering = options.nameServers.filter { if case .success = answers[$0] { true } else { false } }
            let q = ClusterQueries(nameServers: answering + options.nameServers.filter { !answering.contains($0) }, remoting: remoting,
                                   timeoutMilliseconds: options.requestTimeoutMs)
            do {
                let (topics, omitted, consumerGroups) = try await topicsAndGroups(q, until: budgetEnd)
                out["topics"] = topics
                out["topicsOmitted"] = omitted
                out["consumerGroups"] = consumerGroups
            } catch {
                errors.append("topics: \(error)")
            }
        } else if !options.nameServers.isEmpty {
            errors.append("no nameserver answered: the cluster is shown as this broker sees it")
        }
        out["topics"] = out["topics"] ?? []
        out["consumerGroups"] = out["consumerGroups"] ?? []
        out["errors"] = errors
        let took = ContinuousClock.now - started
        out["gatherMs"] = took.components.seconds * 1_000 + took.components.attoseconds / 1_000_000_000_000_000
        guard let data = try? JSONSerialization.data(withJSONObject: out, options: [.sortedKeys]) else {
            return #"{"errors":["the overview could not be encoded"]}"#
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Each group with its members' state: every registered address asked for METADATA, and the
    /// members the leader knows but the nameservers do not list (down, or not yet registered) shown
    /// from the leader's view.
    private func clusters(_ groups: [ClusterQueries.ClusterInfo.Group]) async -> [[String: Any]] {
        let addresses = Set(groups.flatMap { $0.addresses.values })
        let states = await boundedMap(Array(addresses), until: .now + options.gatherBudget,
                                      skipped: { ($0, .failure(ClientError("not asked: the overview's time ran out"))) }) { [options, remoting] addr -> (String, Result<[String: Any], ClientError>) in
            if addr == options.selfAddress, let s = Self.object(options.selfState()) { return (addr, .success(s)) }
            do {
                let m = try await RaftLogClient(group: "", addresses: [addr], client: remoting, requestTimeoutMilliseconds: options.requestTimeoutMs).metadata(at: addr)
                guard let state = Self.object(m.stateJSON) else { return (addr, .failure(ClientError("METADATA answered no state object"))) }
                return (addr, .success(state))
            } catch {
                return (addr, .failure(ClientError("\(error)")))
            }
        }
        var byAddress: [String: Result<[String: Any], ClientError>] = [:]
        for (a, r) in states { byAddress[a] = r }

        var byCluster: [String: [[String: Any]]] = [:]
        for g in groups {
            let registered = g.addresses.sorted(by: { $0.key < $1.key })
            var mode = "unknown"
            // The leader of the highest term: an old leader cut off from the others may still say it leads.
            var leaderState: [String: Any]?
            for (_, addr) in registered {
                guard case .success(let s) = byAddress[addr] else { continue }
                if let m = s["mode"] as? String { mode = m }
                if s["role"] as? String == "leader", (s["term"] as? Int ?? 0) >= (leaderState?["term"] as? Int ?? -1) { leaderState = s }
            }
            let peers = (leaderState?["peers"] as? [[String: Any]]) ?? []
            var members: [[String: Any]] = []
            var seenIds: Set<String> = []
            for (id, addr) in registered {
                var m: [String: Any] = ["addr": addr, "registeredId": id]
                switch byAddress[addr] {
                case .success(let s):
                    m["state"] = s
                    if let selfId = s["selfId"] as? String {
                        seenIds.insert(selfId)
                        m["nodeId"] = selfId
                    }
                case .failure(let e):
                    m["error"] = e.description
                    // A Raft follower registers as its dLegerSelfId's digit + 1: name it from the leader's peers.
                    if id > 0, let p = peers.first(where: { ($0["id"] as? String).flatMap { Int64($0.dropFirst()) } == id - 1 }), let pid = p["id"] as? String {
                        m["nodeId"] = pid
                        m["peer"] = p
                        seenIds.insert(pid)
                    }
                case nil: m["error"] = "not asked"
                }
                members.append(m)
            }
            // Members of a Raft group that the nameservers do not list: the leader's view of them.
            for p in peers {
                guard let id = p["id"] as? String, !seenIds.contains(id) else { continue }
                members.append(["peer": p, "nodeId": id, "error": "not registered with the nameservers (down, or not yet registered)"])
            }
            var group: [String: Any] = ["brokerName": g.brokerName, "mode": mode, "members": members]
            if let leader = leaderState {
                group["leaderId"] = leader["selfId"]
                group["term"] = leader["term"]
                group["lastIndex"] = leader["lastIndex"]
                group["commitIndex"] = leader["commitIndex"]
            }
            byCluster[g.cluster, default: []].append(group)
        }
        return byCluster.keys.sorted().map { ["name": $0, "groups": byCluster[$0]!] }
    }

    /// RocketMQ's system topics, which the page hides unless asked.
    static func isSystemTopic(_ t: String, clusterNames: Set<String>, brokerNames: Set<String>) -> Bool {
        t == "TBW102" || t == "SELF_TEST_TOPIC" || t == "OFFSET_MOVED_EVENT" || t == "SCHEDULE_TOPIC_XXXX" || t == "BenchmarkTest"
            || t == "RMQ_SYS_TRANS_HALF_TOPIC" || t == "RMQ_SYS_TRACE_TOPIC" || t.hasPrefix("rmq_sys_") || t.hasPrefix("%RETRY%") || t.hasPrefix("%DLQ%")
            || clusterNames.contains(t) || brokerNames.contains(t) || t.hasSuffix("_REPLY_TOPIC")
    }

    private func topicsAndGroups(_ q: ClusterQueries, until budgetEnd: ContinuousClock.Instant) async throws -> ([[String: Any]], Int, [[String: Any]]) {
        let all = try await q.topicList().sorted()
        let clusterNames = Set(lastGroups.map(\.cluster)), brokerNames = Set(lastGroups.map(\.brokerName))
        // User topics first, then system ones, up to the limit.
        let ordered = all.filter { !Self.isSystemTopic($0, clusterNames: clusterNames, brokerNames: brokerNames) }
            + all.filter { Self.isSystemTopic($0, clusterNames: clusterNames, brokerNames: brokerNames) }
        let shown = Array(ordered.prefix(options.maxTopics))
        let notAsked = "not asked: the overview's \(options.gatherBudget) ran out (the cluster answers slowly)"
        let topics = await boundedMap(shown, until: budgetEnd, skipped: { ["topic": $0, "queues": [] as [Any], "error": notAsked] as [String: Any] }) { topic -> [String: Any] in
            var t: [String: Any] = ["topic": topic, "system": Self.isSystemTopic(topic, clusterNames: clusterNames, brokerNames: brokerNames)]
            do {
                let rows = try await q.topicStats(topic)
                t["queues"] = rows.map { ["brokerName": $0.brokerName, "queueId": $0.queueId, "minOffset": $0.minOffset,
                                          "maxOffset": $0.maxOffset, "lastUpdateTimestamp": $0.lastUpdateTimestamp] as [String: Any] }
                t["messages"] = rows.reduce(Int64(0)) { $0 + max(0, $1.maxOffset - $1.minOffset) }
            } catch {
                t["queues"] = [] as [Any]
                t["error"] = "\(error)"
            }
            return t
        }
        let groupNames: [String] = all.filter { $0.hasPrefix("%RETRY%") }.map { String($0.dropFirst(7)) }
        let groups = await boundedMap(Array(groupNames.prefix(options.maxGroups)), until: budgetEnd,
                                      skipped: { ["group": $0, "error": notAsked] as [String: Any] }) { name -> [String: Any] in
            var g: [String: Any] = ["group": name]
            do {
                let route = try await q.route("%RETRY%" + name)
                let rows = try await q.consumeStats(name, route: route)
                g["lag"] = rows.reduce(Int64(0)) { $0 + $1.lag }
                g["queues"] = rows.map { ["topic": $0.topic, "brokerName": $0.brokerName, "queueId": $0.queueId, "brokerOffset": $0.brokerOffset,
                                          "consumerOffset": $0.consumerOffset, "lag": $0.lag, "lastTimestamp": $0.lastTimestamp] as [String: Any] }
                g["topics"] = Array(Set(rows.map(\.topic).filter { !$0.hasPrefix("%RETRY%") })).sorted()
                if let first = route.brokers.first, let addr = route.masterAddress(first.brokerName), let c = try? await q.connections(name, at: addr) {
                    g["online"] = c.count
                    g["consumeType"] = c.consumeType
                    g["messageModel"] = c.messageModel
                } else {
                    g["online"] = 0
                }
            } catch {
                g["error"] = "\(error)"
            }
            return g
        }
        return (topics.sorted { ($0["topic"] as! String) < ($1["topic"] as! String) }, max(0, ordered.count - shown.count),
                groups.sorted { ($0["group"] as! String) < ($1["group"] as! String) })
    }

    /// `f` over `items`, at most `options.parallelism` at a time, results in any order; the items
    /// not started by `deadline` (or after a cancellation) get `skipped` instead.
    private func boundedMap<T: Sendable, R>(_ items: [T], until deadline: ContinuousClock.Instant, skipped: (T) -> R,
                                            _ f: @escaping @Sendable (T) async -> R) async -> [R] {
        let width = options.parallelism
        return await withTaskGroup(of: Sendable1<R>.self) { tasks in
            var results: [R] = []
            var next = 0
            func startNext() {
                while next < items.count, ContinuousClock.now >= deadline || Task.isCancelled {
                    results.append(skipped(items[next]))
                    next += 1
                }
                guard next < items.count else { return }
                let item = items[next]
                tasks.addTask { Sendable1(await f(item)) }
                next += 1
            }
            for _ in 0..<width { startNext() }
            while let r = await tasks.next() {
                results.append(r.value)
                startNext()
            }
            return results
        }
    }

    static func object(_ json: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any]
    }

    // MARK: Leadership transfer

    /// `POST /api/leadership-transfer` with `{"group": "RaftNode00", "nodeId": "n1"}`: asks the group's
    /// leader to hand over and answers once `nodeId` leads (or why not).
    func transfer(_ request: AdminRequest) async -> AdminResponse {
        guard !request.isCrossOrigin else { return .error(.forbidden, "a leadership transfer from another origin is refused") }
        guard Self.isOwnHost(request.headers["host"], allowed: options.allowedHosts) else {
            return .error(.forbidden, "the request names a host that is not one of this broker's names or addresses (a DNS-rebinding guard)")
        }
        guard request.headers["content-type"]?.lowercased().hasPrefix("application/json") == true else {
            return .error(.unsupportedMediaType, "send the transfer as application/json: {\"group\": ..., \"nodeId\": ...}")
        }
        guard let body = (try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any],
              let group = body["group"] as? String, let node = body["nodeId"] as? String, !group.isEmpty, !node.isEmpty else {
            return .error(.badRequest, "the body must be a JSON object with the strings group and nodeId")
        }
        if lastGroups.first(where: { $0.brokerName == group }) == nil { _ = await overview() }
        guard let g = lastGroups.first(where: { $0.brokerName == group }) else { return .error(.notFound, "no group \(group) at the nameservers") }
        let addresses = g.addresses.sorted { $0.key < $1.key }.map(\.value)
        logger.notice("leadership transfer asked through the dashboard", metadata: ["group": "\(group)", "to": "\(node)"])
        do {
            let leader = try await RaftLogClient(group: group, addresses: addresses, client: remoting)
                .transferLeadership(to: node, deadline: .now + .seconds(10))
            latest = nil  // the next overview shows the new leader, never one gathered before
            generation += 1
            let o: [String: Any] = ["group": group, "nodeId": node, "leaderAddr": leader, "ok": true]
            let data = (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])) ?? Data()
            return AdminResponse(status: .ok, body: String(decoding: data, as: UTF8.self))
        } catch {
            if case .refused(let code, let remark, _) = error {
                return .error(code == RaftLogResponse.unknownMember ? .notFound : .conflict, "\(group) refused the transfer to \(node): \(remark)")
            }
            return .error(.gatewayTimeout, "leadership transfer of \(group) to \(node) failed: \(error)")
        }
    }
}

extension Dashboard {
    /// True for a Host header (`name[:port]`) naming an IP address, localhost, or one of `allowed`.
    static func isOwnHost(_ header: String?, allowed: Set<String>) -> Bool {
        guard var host = header?.lowercased(), !host.isEmpty else { return false }
        if host.hasPrefix("[") { return host.contains("]") }  // an IPv6 literal
        if let colon = host.lastIndex(of: ":"), host[host.index(after: colon)...].allSatisfy({ $0.isASCII && $0.isNumber }) { host = String(host[..<colon]) }
        if host == "localhost" || allowed.contains(host) { return true }
        // ASCII digits only: Character.isNumber also takes "½", which Int() does not.
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in p.count <= 3 && (Int(p).map { (0...255).contains($0) } ?? false) && p.allSatisfy(\.isASCII) }
    }
}

/// A value carried out of a child task (the overview's JSON objects are Foundation values).
private struct Sendable1<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
