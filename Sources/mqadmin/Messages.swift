import ArgumentParser
import Client
import Foundation
import Logging
import Remoting
import Synchronization

/// `mqadmin sendMessage -n NS -t TOPIC -p BODY [-k KEYS] [-c TAGS] [--count N]`: sends through the
/// Swift producer and prints RocketMQ's SendResult fields, one line per message.
struct SendMessage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sendMessage", abstract: "Send a message (and print its SendResult).")

    @Option(name: .customShort("n"), help: "Nameservers (default $NAMESRV_ADDR).")
    var namesrv: String?
    @Option(name: .customShort("t"), help: "Topic.")
    var topic: String
    @Option(name: .customShort("p"), help: "Message body.")
    var body: String
    @Option(name: .customShort("k"), help: "Keys, separated by spaces.")
    var keys: String?
    @Option(name: .customShort("c"), help: "Tag.")
    var tags: String?
    @Option(name: .long, help: "How many messages (the body gets a ' #i' suffix when more than one).")
    var count: Int = 1

    func run() async throws {
        let servers = try nameServerList(namesrv)
        guard (1...1_000_000).contains(count) else { throw ValidationError("--count must be 1...1000000") }
        let (topic, body, keys, tags, count) = (topic, body, keys, tags, count)
        let lines: [String] = try await withClient { client in
            let producer = Producer(nameServers: servers, remoting: client, logger: Logger(label: "mqadmin"))
            var out: [String] = []
            out.append(["#Broker Name".padded(20), "#QID".padded(5), "#Queue Offset".padded(14), "#Send Result".padded(21), "#MsgId".padded(33), "#OffsetMsgId"].joined())
            for i in 0..<count {
                let text = count == 1 ? body : "\(body) #\(i)"
                do {
                    let r = try await producer.send(OutgoingMessage(topic: topic, body: Array(text.utf8), tags: tags,
                                                                    keys: keys.map { $0.split(separator: " ").map(String.init) } ?? []))
                    out.append([r.queue.brokerName.padded(20), "\(r.queue.queueId)".padded(5), "\(r.queueOffset)".padded(14),
                                r.status.rawValue.padded(21), (r.msgIds.first ?? "").padded(33), r.offsetMsgIds.first ?? ""].joined())
                } catch {
                    throw fail("sending failed: \(error)")
                }
            }
            return out
        }
        print(lines.joined(separator: "\n"))
    }
}

/// `mqadmin consumeMessage -n NS -t TOPIC [-g GROUP] [-c COUNT] [--timeout S]`: consumes as a
/// member of GROUP and prints each message, until COUNT messages or the timeout.
struct ConsumeMessage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "consumeMessage", abstract: "Consume messages of a topic as a group member and print them.")

    @Option(name: .customShort("n"), help: "Nameservers (default $NAMESRV_ADDR).")
    var namesrv: String?
    @Option(name: .customShort("t"), help: "Topic.")
    var topic: String
    @Option(name: .customShort("g"), help: "Consumer group.")
    var group: String = "mqadmin_consumer"
    @Option(name: .customShort("s"), help: "Subscription expression (tags joined by ||, or *).")
    var expression: String = "*"
    @Option(name: .customShort("c"), help: "Stop after this many messages.")
    var count: Int = 1
    @Option(name: .long, help: "Stop after this many seconds.")
    var timeout: Double = 10

    func run() async throws {
        let servers = try nameServerList(namesrv)
        let (topic, group, expression, count, timeout) = (topic, group, expression, count, timeout)
        let got: Int = try await withClient { client in
            var options = Consumer.Options(group: group, topic: topic)
            options.expression = expression
            options.suspendMs = 1_000
            let consumer = Consumer(nameServers: servers, remoting: client, logger: Logger(label: "mqadmin"), options: options)
            let seen = Counter()
            await withTaskGroup(of: Void.self) { tasks in
                tasks.addTask {
                    await consumer.run { messages in
                        for m in messages {
                            let n = seen.increment()
                            guard n <= count else { return }
                            print("\(m.queue.brokerName) \(m.queue.queueId) \(m.queueOffset) \(m.msgId) \(m.tags ?? "") \(String(decoding: m.body, as: UTF8.self))")
                        }
                    }
                }
                let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
                while seen.value < count && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
                tasks.cancelAll()
            }
            return min(seen.value, count)
        }
        if got < count { throw fail("consumed \(got) of \(count) messages before the timeout") }
    }
}

final class Counter: Sendable {
    private let n = Mutex(0)
    func increment() -> Int { n.withLock { $0 += 1; return $0 } }
    var value: Int { n.withLock { $0 } }
}

extension String {
    func padded(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}
