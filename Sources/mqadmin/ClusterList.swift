import ArgumentParser
import Client
import Foundation
import NIOCore
import Remoting

/// The nameservers of `-n`, or $NAMESRV_ADDR.
func nameServerList(_ option: String?) throws -> [String] {
    let text = option ?? ProcessInfo.processInfo.environment["NAMESRV_ADDR"] ?? ""
    let list = text.split(whereSeparator: { $0 == ";" || $0 == "," }).map(String.init).filter { !$0.isEmpty }
    guard !list.isEmpty else { throw ValidationError("no nameserver: give -n 'host:9876;host2:9876' or set NAMESRV_ADDR") }
    for a in list where RemotingClient.split(a) == nil { throw ValidationError("\"\(a)\" is not host:port") }
    return list
}

/// Asks the nameservers in turn until one answers.
func askNameServers(_ client: RemotingClient, _ servers: [String], _ command: RemotingCommand) async throws -> RemotingCommand {
    do {
        return try await ClusterQueries(nameServers: servers, remoting: client).askNameServers(command).0
    } catch {
        throw fail("\(error)")
    }
}

/// `mqadmin clusterList -n NAMESRV`: every broker of every cluster, with RocketMQ's columns.
struct ClusterList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clusterList", abstract: "List the clusters, their broker groups and every broker's id and address (RocketMQ's columns).")

    @Option(name: .customShort("n"), help: "Nameservers, e.g. '127.0.0.1:9876;127.0.0.2:9876' (default $NAMESRV_ADDR).")
    var namesrv: String?

    @Option(name: .customShort("c"), help: "Only this cluster.")
    var cluster: String?

    func run() async throws {
        let servers = try nameServerList(namesrv)
        let only = cluster
        let lines: [String] = try await withClient { client in
            let answer = try await askNameServers(client, servers, .request(code: RequestCode.getBrokerClusterInfo, opaque: 0))
            guard answer.code == ResponseCode.success, let info = jsonBody(answer) as? [String: Any],
                  let clusters = info["clusterAddrTable"] as? [String: [String]], let brokers = info["brokerAddrTable"] as? [String: Any] else {
                throw fail("the nameserver's cluster info is not what RocketMQ sends (code \(answer.code))")
            }
            var out = [row("#Cluster Name", "#Broker Name", "#BID", "#Addr", "#Version", "#InTPS(LOAD)", "#OutTPS(LOAD)", "#PCWait(ms)", "#Hour", "#SPACE")]
            for clusterName in clusters.keys.sorted() where only == nil || only == clusterName {
                for brokerName in clusters[clusterName]!.sorted() {
                    guard let data = brokers[brokerName] as? [String: Any], let addrs = data["brokerAddrs"] as? [String: String] else { continue }
                    for (idText, addr) in addrs.sorted(by: { (Int($0.key) ?? 0) < (Int($1.key) ?? 0) }) {
                        var table: [String: String] = [:]
                        if let r = try? await client.request(addr, .request(code: RequestCode.getBrokerRuntimeInfo, opaque: 0), timeoutMilliseconds: 2_000),
                           r.code == ResponseCode.success, let body = jsonBody(r) as? [String: Any], let t = body["table"] as? [String: String] {
                            table = t
                        }
                        func first(_ key: String) -> Double { Double(table[key]?.split(separator: " ").first ?? "") ?? 0 }
                        func v(_ key: String) -> String { table[key] ?? "-" }
                        out.append(row(clusterName, brokerName, idText, addr, v("brokerVersionDesc"),
                                       pad(String(format: "%.2f", first("putTps")), 9, right: true) + "(\(v("sendThreadPoolQueueSize")),\(v("sendThreadPoolQueueHeadWaitTimeMills"))ms)",
                                       pad(String(format: "%.2f", first("getTransferedTps")), 9, right: true) + "(\(v("pullThreadPoolQueueSize")),\(v("pullThreadPoolQueueHeadWaitTimeMills"))ms)",
                                       v("pageCacheLockTimeMills"), v("earliestMessageTimeStamp"), v("commitLogDiskRatio")))
                    }
                }
            }
            return out
        }
        for l in lines { print(l) }
    }
}

/// Java's `%-Ns` / `%Ns`.
func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}

/// One line in ClusterListSubCommand's format: `%-16s  %-22s  %-4s  %-22s %-16s %19s %19s %10s %5s %6s`.
func row(_ c: String, _ b: String, _ id: String, _ addr: String, _ version: String, _ inTPS: String, _ outTPS: String,
         _ pcWait: String, _ hour: String, _ space: String) -> String {
    pad(c, 16) + "  " + pad(b, 22) + "  " + pad(id, 4) + "  " + pad(addr, 22) + " " + pad(version, 16) + " " + pad(inTPS, 19, right: true)
        + " " + pad(outTPS, 19, right: true) + " " + pad(pcWait, 10, right: true) + " " + pad(hour, 5, right: true) + " " + pad(space, 6, right: true)
}

/// `mqadmin topicList -n NAMESRV`: every topic the nameservers route, one a line.
struct TopicList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "topicList", abstract: "List every topic the nameserver knows.")

    @Option(name: .customShort("n"), help: "Nameservers (default $NAMESRV_ADDR).")
    var namesrv: String?

    func run() async throws {
        let servers = try nameServerList(namesrv)
        let topics: [String] = try await withClient { client in
            let answer = try await askNameServers(client, servers, .request(code: RequestCode.getAllTopicListFromNameserver, opaque: 0))
            guard answer.code == ResponseCode.success, let body = jsonBody(answer) as? [String: Any], let list = body["topicList"] as? [String] else {
                throw fail("the nameserver answered \(answer.code): \(answer.remark ?? "no topic list")")
            }
            return list
        }
        for t in topics { print(t) }
    }
}

/// `mqadmin topicRoute -t TOPIC -n NAMESRV`: the route as pretty JSON, as RocketMQ prints it.
struct TopicRoute: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "topicRoute", abstract: "Print a topic's route (TopicRouteData) from the nameserver.")

    @Option(name: .customShort("t"), help: "The topic.")
    var topic: String

    @Option(name: .customShort("n"), help: "Nameservers (default $NAMESRV_ADDR).")
    var namesrv: String?

    func run() async throws {
        let servers = try nameServerList(namesrv)
        let topic = self.topic
        let text: String = try await withClient { client in
            let answer = try await askNameServers(client, servers, .request(code: RequestCode.getRouteInfoByTopic, opaque: 0, extFields: ["topic": topic]))
            guard answer.code == ResponseCode.success else { throw fail("\(answer.remark ?? "the nameserver answered \(answer.code)")") }
            guard let body = jsonBody(answer), let json = JSONText(foundation: body) else { throw fail("the route is not JSON") }
            return json.pretty
        }
        print(text)
    }
}
