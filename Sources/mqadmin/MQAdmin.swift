import ArgumentParser
import Glibc
import Logging
import NIOCore
import NIOPosix
import Remoting
import Replication

/// `mqadmin`: RocketMQ's admin command. This stage has the Raft group commands, which speak the
/// raw-log API (docs/raw-log-api.md) on the broker port; the nameserver commands come with issue 5.
@main
struct MQAdmin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqadmin",
        abstract: "RaftMQ admin commands (RocketMQ's mqadmin).",
        subcommands: [ClusterList.self, TopicList.self, TopicRoute.self, TopicStatus.self, UpdateTopic.self, DeleteTopic.self, ConsumerProgress.self, QueryMsgById.self, QueryMsgByKey.self, SendMessage.self, ConsumeMessage.self, GetBrokerConfig.self, RaftState.self, RaftAppend.self, RaftGet.self, LeadershipTransfer.self])
}

/// Broker addresses: "host:port", several separated by ';' or ','.
func brokerList(_ text: String) throws -> [String] {
    let list = text.split(whereSeparator: { $0 == ";" || $0 == "," }).map { String($0).trimmingCharacters(in: " ") }.filter { !$0.isEmpty }
    guard !list.isEmpty else { throw ValidationError("-b names no broker address") }
    for a in list where RemotingClient.split(a) == nil {
        throw ValidationError("\"\(a)\" is not host:port")
    }
    return list
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s.removeFirst() }
        while s.last == set { s.removeLast() }
        return String(s)
    }
}

func fail(_ message: String) -> ExitCode {
    var text = "mqadmin: " + message + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    return ExitCode(1)
}

/// An event loop and a remoting client for the length of one command.
func withClient<T: Sendable>(_ body: (RemotingClient) async throws -> T) async throws -> T {
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = .error
        return h
    }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let client = RemotingClient(group: group, logger: Logger(label: "mqadmin"))
    do {
        let result = try await body(client)
        await client.close()
        try? await group.shutdownGracefully()
        return result
    } catch {
        await client.close()
        try? await group.shutdownGracefully()
        throw error
    }
}

/// The group the first answering node serves (METADATA without a group).
func discoverGroup(_ client: RemotingClient, _ addresses: [String]) async throws -> String {
    let probe = RaftLogClient(group: "", addresses: addresses, client: client)
    var last = ""
    for a in addresses {
        do {
            let m = try await probe.metadata(at: a)
            if let g = m.fields["group"] { return g }
        } catch {
            last = "\(error)"
        }
    }
    throw fail("no broker of \(addresses.joined(separator: ";")) answered METADATA: \(last)")
}

struct RaftState: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raftState", abstract: "Print a broker's Raft state (the /raft/state JSON) through METADATA.")

    @Option(name: .customShort("b"), help: "Broker address, host:port (the broker's listenPort).")
    var broker: String

    func run() async throws {
        let address = try brokerList(broker)[0]
        let json: String = try await withClient { client in
            do {
                return try await RaftLogClient(group: "", addresses: [address], client: client).metadata(at: address).stateJSON
            } catch {
                throw fail("\(error)")
            }
        }
        print(json)
    }
}

struct RaftAppend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raftAppend",
        abstract: "Append entries to a Raft group's log; each line printed is a committed entry.",
        discussion: "Follows NOT_LEADER answers to the leader and retries, until --wait-ms, what surely was not written.")

    @Option(name: .customShort("b"), help: "Broker addresses of the group, e.g. '127.0.0.1:30911;127.0.0.2:30911'.")
    var brokers: String

    @Option(name: .customShort("g"), help: "The group (dLegerGroup); learned from the brokers when left out.")
    var group: String?

    @Option(name: .customShort("m"), help: "The entry's text.")
    var message: String?

    @Option(name: .long, help: "Append entries of this many bytes instead of -m.")
    var size: Int?

    @Option(name: .customShort("c"), help: "How many entries to append, one after another.")
    var count = 1

    @Option(name: .long, help: "How long one append may keep retrying while leadership moves (ms).")
    var waitMs = 5_000

    func validate() throws {
        guard (message == nil) != (size == nil) else { throw ValidationError("give either -m TEXT or --size BYTES") }
        if let size, size <= 0 { throw ValidationError("--size must be positive") }
        guard count > 0 else { throw ValidationError("-c must be positive") }
        if let message, message.isEmpty { throw ValidationError("-m: an entry carries at least one byte") }
    }

    func run() async throws {
        let addresses = try brokerList(brokers)
        let data = message.map { Array($0.utf8) } ?? [UInt8](repeating: UInt8(ascii: "x"), count: size!)
        let wait = waitMs
        let count = self.count
        let given = group
        try await withClient { client in
            let g: String
            if let given { g = given } else { g = try await discoverGroup(client, addresses) }
            let log = RaftLogClient(group: g, addresses: addresses, client: client)
            for _ in 0..<count {
                let start = ContinuousClock.now
                do {
                    let a = try await log.append(data, deadline: start + .milliseconds(wait))
                    let took = (ContinuousClock.now - start).components
                    let ms = Double(took.seconds) * 1_000 + Double(took.attoseconds) / 1e15
                    print("index=\(a.index) term=\(a.term) leader=\(a.leaderAddress) attempts=\(a.attempts) ms=\(String(format: ms))")
                } catch {
                    throw fail("append failed: \(error)")
                }
            }
        }
    }
}

func String(format ms: Double) -> String {
    let tenths = Int((ms * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}

struct RaftGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raftGet", abstract: "Print committed entries of a broker's log, from an index on.")

    @Option(name: .customShort("b"), help: "Broker address, host:port.")
    var broker: String

    @Option(name: .customShort("g"), help: "The group (dLegerGroup); learned from the broker when left out.")
    var group: String?

    @Option(name: .customShort("i"), help: "The first index (0 is the log's first entry).")
    var index: Int64

    @Option(name: .customShort("c"), help: "How many entries at most.")
    var count = 1

    @Flag(name: .long, help: "Print bodies in hex.")
    var hex = false

    func validate() throws {
        guard index >= 0 else { throw ValidationError("-i must be 0 or more") }
        guard count > 0 else { throw ValidationError("-c must be positive") }
    }

    func run() async throws {
        let address = try brokerList(broker)[0]
        let (index, count, hex, given) = (self.index, self.count, self.hex, group)
        let lines: [String] = try await withClient { client in
            let g: String
            if let given { g = given } else { g = try await discoverGroup(client, [address]) }
            do {
                let entries = try await RaftLogClient(group: g, addresses: [address], client: client).get(at: address, from: index, maxCount: count)
                return entries.map { e in
                    let printable = !hex && e.body.allSatisfy { $0 >= 0x20 && $0 < 0x7f }
                    let body = printable ? String(decoding: e.body, as: UTF8.self) : e.body.map { h($0) }.joined()
                    return "index=\(e.index) term=\(e.term) pos=\(e.position) kind=\(e.isNoop ? "noop" : "normal") size=\(e.body.count) bodyCrc=\(e.bodyCRC) chainCrc=\(e.chainCRC) body=\(body)"
                }
            } catch {
                throw fail("\(error)")
            }
        }
        for l in lines { print(l) }
    }
}

func h(_ b: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
}

struct LeadershipTransfer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leadershipTransfer", abstract: "Move a Raft group's leadership to one of its members.")

    @Option(name: .customShort("g"), help: "The group (dLegerGroup).")
    var group: String

    @Option(name: .customShort("i"), help: "The member to lead, e.g. n1.")
    var nodeId: String

    @Option(name: .customShort("b"), help: "Broker addresses of the group (until the nameserver knows them: issue 5).")
    var brokers: String

    @Option(name: .long, help: "How long to keep trying (ms).")
    var waitMs = 10_000

    func run() async throws {
        let addresses = try brokerList(brokers)
        let (group, node, wait) = (self.group, nodeId, waitMs)
        let leader: String = try await withClient { client in
            do {
                return try await RaftLogClient(group: group, addresses: addresses, client: client)
                    .transferLeadership(to: node, deadline: .now + .milliseconds(wait))
            } catch {
                throw fail("leadership transfer to \(node) failed: \(error)")
            }
        }
        print("\(node) leads \(group) at \(leader)")
    }
}
