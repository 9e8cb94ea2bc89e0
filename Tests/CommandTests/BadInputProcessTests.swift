import Foundation
import LogFormat
import Logging
import NIOCore
import NIOPosix
import Remoting
import Testing

/// Sends `bytes` on a new connection and reads until the peer closes or `seconds` pass; returns what
/// came back and whether the peer closed.
func rawExchange(host: String, port: UInt16, _ bytes: [UInt8], seconds: Int = 3) -> (received: [UInt8], closed: Bool)? {
    guard let fd = connectBlocking(host: host, port: port, timeoutSeconds: seconds) else { return nil }
    defer { close(fd) }
    var sent = 0
    while sent < bytes.count {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { break }  // the peer may close before taking everything
        sent += n
    }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    let deadline = Date().addingTimeInterval(Double(seconds))
    while Date() < deadline {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n == 0 { return (out, true) }
        if n < 0 { return (out, errno == ECONNRESET) }
        out += buffer[0..<n]
    }
    return (out, false)
}

func bigEndian32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }

/// HTTP/2 frames for the h2c checks: 9-byte header, then the payload.
func h2Frame(type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
    Array(bigEndian32(UInt32(payload.count)).dropFirst()) + [type, flags] + bigEndian32(stream) + payload
}

/// (type, stream) of every whole frame in `bytes`, after the server's preface-less start.
func h2Frames(_ bytes: [UInt8]) -> [(type: UInt8, stream: UInt32)] {
    var out: [(UInt8, UInt32)] = []
    var at = 0
    while at + 9 <= bytes.count {
        let length = Int(bytes[at]) << 16 | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2])
        let stream = bytes[(at + 5)..<(at + 9)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7fff_ffff
        out.append((bytes[at + 3], stream))
        at += 9 + length
    }
    return out
}

extension RaftGroupProcessTests {
    /// Bad input on every interface of a running group: each gets a clear error, a response code or
    /// a closed connection; the broker keeps serving; what it stored before is read back unchanged.
    @Test func badInputOnEveryInterfaceIsRefusedAndHarmsNothingStored() async throws {
        defer { killAll() }
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        for n in nodes { try start(n) }
        let first = try #require(try await agreedLeader(among: nodes, within: 30), "no leader\n\(logs())")
        let leader = try #require(nodes.first { $0.name == first.leader })
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RemotingClient(group: group, logger: Logger(label: "test"))
        func send(_ topic: String, _ body: [UInt8], queue: String = "0", extra: [String: String] = [:], code: Int32 = RequestCode.sendMessageV2) async throws -> RemotingCommand {
            var f = ["a": "g", "b": topic, "c": "TBW102", "d": "4", "e": queue, "f": "0", "g": "0", "h": "0"]
            f.merge(extra) { $1 }
            return try await client.request(leader.brokerAddress, .request(code: code, opaque: 0, extFields: ExtFields(f), body: ByteBuffer(bytes: body)), timeoutMilliseconds: 10_000)
        }
        // Twenty good messages first (the leader takes writes once its first entry is dispatched).
        var ready = false
        for _ in 0..<100 where !ready {
            ready = (try? await send("Bad", Array("warm-up".utf8)))?.code == ResponseCode.success
            if !ready { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(ready, "the leader never took a send\n\(logs())")
        var bodies: [[UInt8]] = [Array("warm-up".utf8)]
        for k in 0..<20 {
            let b = Array("kept-\(k)".utf8)
            #expect(try await send("Bad", b).code == ResponseCode.success)
            bodies.append(b)
        }

        // Requests with bad values: answered with a code and a remark naming the problem.
        let badName = try await send("bad topic!", Array("x".utf8))
        #expect(badName.code == ResponseCode.systemError && (badName.remark ?? "").contains("not a valid topic name"), "\(badName.code) \(badName.remark ?? "")")
        let longName = try await send(String(repeating: "t", count: 128), Array("x".utf8))
        #expect(longName.code == ResponseCode.systemError, "a 128-character topic: \(longName.code)")
        let huge = try await send("Bad", [UInt8](repeating: 0x61, count: (4 << 20) + 1))
        #expect(huge.code == ResponseCode.messageIllegal && (huge.remark ?? "").contains("maxMessageSize"), "\(huge.code) \(huge.remark ?? "")")
        let badQueue = try await send("Bad", Array("x".utf8), queue: "x")
        #expect(badQueue.code != ResponseCode.success, "queueId x: \(badQueue.code)")
        let badQueueId = try await send("Bad", Array("x".utf8), queue: "99")
        #expect(badQueueId.code != ResponseCode.success && (badQueueId.remark ?? "").contains("queueId"), "\(badQueueId.code) \(badQueueId.remark ?? "")")
        // A batch whose second item claims more bytes than there are.
        var item = bigEndian32(27) + bigEndian32(0) + bigEndian32(0) + bigEndian32(0) + bigEndian32(2) + Array("ok".utf8) + [0, 3] + Array("a=b".utf8)
        item += bigEndian32(999) + bigEndian32(0)
        let badBatch = try await send("Bad", item, extra: ["m": "true"], code: RequestCode.sendBatchMessage)
        #expect(badBatch.code == ResponseCode.messageIllegal, "a batch with a bad item: \(badBatch.code) \(badBatch.remark ?? "")")
        let unknown = try await client.request(leader.brokerAddress, .request(code: 31_337, opaque: 0), timeoutMilliseconds: 5_000)
        #expect(unknown.code == ResponseCode.requestCodeNotSupported)

        // Broken frames: the connection closes (nothing else does).
        let host = leader.host
        let tooLong = try #require(rawExchange(host: host, port: 30911, bigEndian32(0x7fff_ffff) + bigEndian32(10)))
        #expect(tooLong.closed && tooLong.received.isEmpty, "a 2 GiB length prefix closes the connection")
        let headerPastFrame = try #require(rawExchange(host: host, port: 30911, bigEndian32(12) + bigEndian32(500) + Array("{}{}{}{}".utf8)))
        #expect(headerPastFrame.closed, "a header longer than its frame closes the connection")
        let notJSON = try #require(rawExchange(host: host, port: 30911, bigEndian32(4 + 9) + bigEndian32(9) + Array("{not json".utf8)))
        #expect(notJSON.closed || !notJSON.received.isEmpty, "a header that is not JSON is refused")
        let wrongTypes = Array(#"{"code":"ten","opaque":[],"flag":{},"extFields":7}"#.utf8)
        let typed = try #require(rawExchange(host: host, port: 30911, bigEndian32(UInt32(4 + wrongTypes.count)) + bigEndian32(UInt32(wrongTypes.count)) + wrongTypes))
        #expect(typed.closed || !typed.received.isEmpty, "header values of the wrong type are refused")
        let truncated = try #require(rawExchange(host: host, port: 30911, bigEndian32(100) + bigEndian32(20) + Array("{\"code\"".utf8), seconds: 1))
        #expect(!truncated.closed || truncated.received.isEmpty, "a truncated frame waits for the rest, answering nothing")

        // HTTP/1.1: a 100 KiB header is refused; an 8 MiB body to a GET-only path gets 405.
        let bigHeader = Array("GET /raft/state HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "h", count: 100 << 10))\r\n\r\n".utf8)
        let h1 = try #require(rawExchange(host: host, port: 30913, bigHeader))
        let h1Text = String(decoding: h1.received, as: UTF8.self)
        #expect(h1.closed && (h1Text.isEmpty || h1Text.hasPrefix("HTTP/1.1 4")), "a 100 KiB header: \(h1Text.prefix(60))")
        let post = Array("POST /raft/state HTTP/1.1\r\nHost: x\r\nContent-Length: \(8 << 20)\r\n\r\n".utf8) + [UInt8](repeating: 0x62, count: 8 << 20)
        let h1Post = try #require(rawExchange(host: host, port: 30913, post, seconds: 10))
        #expect(String(decoding: h1Post.received, as: UTF8.self).hasPrefix("HTTP/1.1 405"), "an 8 MiB body: \(String(decoding: h1Post.received.prefix(60), as: UTF8.self))")

        // h2c: a 20 KiB header resets its stream only; the next stream on the connection is answered.
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        let good = [0x82, 0x86, 0x44, 0x0b] + Array("/raft/state".utf8) + [0x41, 0x01, 0x78]
        let value = [UInt8](repeating: 0x76, count: 20_000)
        // Literal header field without indexing, new name "x-big", value length 20000 (HPACK integer).
        var n = 20_000 - 127
        var lengthBytes: [UInt8] = [0x7f]
        while n >= 128 { lengthBytes.append(UInt8(n % 128 + 128)); n /= 128 }
        lengthBytes.append(UInt8(n))
        let bad = good + [0x00, 0x05] + Array("x-big".utf8) + lengthBytes + value
        // The block is sent as HEADERS (no END_HEADERS) and CONTINUATIONs within the 16 KiB frame size.
        var h2 = preface + h2Frame(type: 4, flags: 0, stream: 0, [])
        let pieces = stride(from: 0, to: bad.count, by: 8_000).map { Array(bad[$0..<min(bad.count, $0 + 8_000)]) }
        for (k, piece) in pieces.enumerated() {
            let last = k == pieces.count - 1
            h2 += h2Frame(type: k == 0 ? 1 : 9, flags: (k == 0 ? 0x1 : 0) | (last ? 0x4 : 0), stream: 1, piece)
        }
        h2 += h2Frame(type: 1, flags: 0x5, stream: 3, good)
        let answer = try #require(rawExchange(host: host, port: 30913, h2, seconds: 2))
        let frames = h2Frames(answer.received)
        #expect(frames.contains { $0.type == 3 && $0.stream == 1 }, "stream 1 (20 KiB of headers) is reset: \(frames)")
        #expect(frames.contains { $0.type == 1 && $0.stream == 3 }, "stream 3 is answered: \(frames)")

        // Every node still serves, and the stored messages read back as they were written.
        for n in nodes { #expect(n.process?.isRunning == true, "\(n.name) exited\n\(logs())") }
        #expect(try await send("Bad", Array("after".utf8)).code == ResponseCode.success)
        bodies.append(Array("after".utf8))
        var read: [[UInt8]] = []
        var offset = 0
        while offset < bodies.count {
            let r = try await client.request(leader.brokerAddress, .request(code: RequestCode.pullMessage, opaque: 0, extFields: [
                "consumerGroup": "badInput", "topic": "Bad", "queueId": "0", "queueOffset": "\(offset)", "maxMsgNums": "32", "sysFlag": "0",
                "commitOffset": "0", "suspendTimeoutMillis": "0"]), timeoutMilliseconds: 5_000)
            guard r.code == ResponseCode.success, var body = r.body else { break }
            var got = 0
            while body.readableBytes >= 4, let size = body.getInteger(at: body.readerIndex, as: Int32.self), let record = body.readBytes(length: Int(size)) {
                let decoded = try record.withUnsafeBytes { try MessageRecord.decode($0).body }
                read.append(decoded)
                got += 1
            }
            if got == 0 { break }
            offset += got
        }
        #expect(read == bodies, "read back \(read.count) of \(bodies.count) messages, unchanged: \(read.map { String(decoding: $0, as: UTF8.self) })")
        await client.close()
        try? await group.shutdownGracefully()
    }
}

