import ArgumentParser
import Glibc
import NIOCore
import LogFormat
import RaftCore
import Remoting
import Replication

/// `mqbench codec`: the CPU a send's remoting frames cost, on one thread, without a network or a
/// broker. A producer's SEND_MESSAGE_V2 request (the header a RocketMQ 4.x client sends, its
/// properties, a body) and the broker's answer, encoded and decoded in a loop. Measured in thread CPU
/// time (`CLOCK_THREAD_CPUTIME_ID`), so another tenant's load on the machine changes the figures far
/// less than it changes wall-clock runs: this is where a change to the frame or header code shows.
struct CodecBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "CPU per step of a send's write path without a network: its frames, its record, its log entry.")

    @Option(help: "Operations per round.")
    var iterations = 20_000

    @Option(help: "Rounds; the median round is reported.")
    var rounds = 5

    @Option(help: "Body bytes of the request.")
    var size = 1024

    @Flag(help: "Print one JSON object with every figure at the end.")
    var json = false

    func validate() throws {
        guard (1...10_000_000).contains(iterations) else { throw ValidationError("--iterations takes 1...10000000") }
        guard (1...50).contains(rounds) else { throw ValidationError("--rounds takes 1...50") }
        guard (0...(4 << 20)).contains(size) else { throw ValidationError("--size takes 0...4194304") }
    }

    func run() throws {
        let request = Self.sendRequest(bodyBytes: size)
        let answer = Self.sendAnswer(to: request)
        var requestFrame = ByteBuffer()
        RemotingFrame.encode(request, into: &requestFrame)
        var answerFrame = ByteBuffer()
        RemotingFrame.encode(answer, into: &answerFrame)
        // Checked once, so the loops measure work that gives the right result.
        var check = requestFrame
        guard let decoded = try RemotingFrame.decode(&check), decoded.extFields == request.extFields, decoded.body?.readableBytes == size
        else { throw ValidationError("the request frame does not decode to the request") }

        // The record and the log entry the broker makes of it (what every send pays before the
        // Raft group sees it, and every member pays again for the entry).
        let properties = request.extFields["i"] ?? ""
        let body = [UInt8](repeating: UInt8(ascii: "m"), count: size)
        let host = MessageHost.v4(address: (127, 0, 0, 1), port: 30911)
        func record() throws -> [UInt8] {
            guard let propertyBytes = MessageProperties.rewritten(properties, setting: "CLUSTER", to: "DefaultCluster", removing: "WAIT", unlessPresent: "DELAY")
            else { throw ValidationError("the sample properties take the general path") }
            return try body.withUnsafeBytes { b in
                try propertyBytes.withUnsafeBytes { p in
                    try MessageRecord.encoded(queueId: 2, flag: 0, sysFlag: 0, bornTimestamp: 1_733_472_000_123, bornHost: host,
                                              storeTimestamp: 1_733_472_000_125, storeHost: host, reconsumeTimes: 0,
                                              body: b, topic: "BenchTopic", propertyBytes: p)
                }
            }
        }
        let sampleRecord = try record()
        var entry: [UInt8] = []
        entry.reserveCapacity(sampleRecord.count * 2)

        // A leader's AppendEntries of 32 such entries to one follower, and that follower's decoding.
        let batch = 32
        let append = Message(from: NodeID(1), to: NodeID(2), term: RaftCore.Term(3), body: .append(
            prevIndex: RaftCore.LogIndex(1_000), prevTerm: RaftCore.Term(3),
            entries: (1...batch).map { RaftCore.Entry(term: RaftCore.Term(3), index: RaftCore.LogIndex(UInt64(1_000 + $0)), data: sampleRecord) },
            commit: RaftCore.LogIndex(990)))
        var appendFrame = ByteBuffer()
        RaftWire.encode(append, into: &appendFrame)
        guard try RaftWire.decode(appendFrame) == append else { throw ValidationError("AppendEntries does not decode to itself") }

        var out = ByteBuffer()
        out.reserveCapacity(requestFrame.readableBytes * 2)
        var sink = 0
        let rows: [(key: String, name: String, op: () throws -> Void)] = [
            ("requestDecode", "decode a SEND_MESSAGE_V2 request, read its send fields (broker)", {
                // What the broker's send processor reads: the one-letter fields b...m, in one walk.
                var b = requestFrame
                if let c = try RemotingFrame.decode(&b) {
                    c.extFields.forEachField { name, value in
                        if name.count == 1, name[0] >= UInt8(ascii: "b"), name[0] <= UInt8(ascii: "m") { sink &+= value()?.utf8.count ?? 0 }
                    }
                }
            }),
            ("answerEncode", "encode its answer (broker)", {
                out.clear()
                RemotingFrame.encode(answer, into: &out)
                sink &+= out.readableBytes
            }),
            ("answerBuildEncode", "build and encode its answer (broker)", {
                out.clear()
                RemotingFrame.encode(Self.sendAnswer(to: request), into: &out)
                sink &+= out.readableBytes
            }),
            ("requestEncode", "encode the request (client)", {
                out.clear()
                RemotingFrame.encode(request, into: &out)
                sink &+= out.readableBytes
            }),
            ("answerDecode", "decode the answer, its fields as a dictionary (client)", {
                var b = answerFrame
                if let c = try RemotingFrame.decode(&b) { sink &+= c.extFields.dictionary.count }
            }),
            ("recordBuild", "build the message record from the request (broker)", {
                sink &+= try record().count
            }),
            ("entryEncode", "encode the record as a log entry, CRC32C (every member)", {
                entry.removeAll(keepingCapacity: true)
                sampleRecord.withUnsafeBytes { r in
                    _ = LogEntryCodec.append(kind: .normal, index: LogIndex(42), term: Term(3), position: LogPosition(1 << 20),
                                             body: r, previousChainCRC: 7, to: &entry)
                }
                sink &+= entry.count
            }),
            ("bodyCRC32", "zlib CRC32 of the body (the record's body CRC)", {
                sink &+= Int(body.withUnsafeBytes { CRC32IEEE.rocketMQBodyCRC($0) })
            }),
            ("recordCRC32C", "CRC32C of the record (the entry's body CRC)", {
                sink &+= Int(sampleRecord.withUnsafeBytes { CRC32C.checksum($0) })
            }),
            ("appendEncodePerEntry", "encode an AppendEntries of \(batch), per entry (leader, each follower)", {
                out.clear()
                RaftWire.encode(append, into: &out)
                sink &+= out.readableBytes
            }),
            ("appendDecodePerEntry", "decode it, per entry (follower)", {
                if case .append(_, _, let entries, _) = try RaftWire.decode(appendFrame).body { sink &+= entries.count }
            }),
        ]
        print("| step | ns per op (median of \(rounds) rounds of \(iterations)) | min round |")
        print("|---|---:|---:|")
        var fields: [String] = []
        for row in rows {
            var perRound: [Double] = []
            for _ in 0..<rounds {
                let start = threadCPUNanoseconds()
                for _ in 0..<iterations { try row.op() }
                let perOp = Double(threadCPUNanoseconds() - start) / Double(iterations)
                perRound.append(row.key.hasSuffix("PerEntry") ? perOp / Double(batch) : perOp)
            }
            perRound.sort()
            let median = perRound[perRound.count / 2]
            print("| \(row.name) | \(format(median, 0)) | \(format(perRound[0], 0)) |")
            fields.append("\"\(row.key)Ns\":\(format(median, 1))")
        }
        if sink == 42 { print("") }   // keeps the loops' results alive
        if json { print("{" + fields.joined(separator: ",") + "}") }
    }

    /// A send as a RocketMQ 4.9 Java producer makes it: SEND_MESSAGE_V2's one-letter header, the
    /// properties a keyed, tagged message carries, `size` bytes of body.
    static func sendRequest(bodyBytes: Int) -> RemotingCommand {
        let properties = ["KEYS": "order-20261206-000042", "UNIQ_KEY": "7F0000010A2B18B4AAC2155C4D2A0000", "WAIT": "true", "TAGS": "TagA"]
            .sorted { $0.key < $1.key }
            .map { "\($0.key)\u{1}\($0.value)" }.joined(separator: "\u{2}") + "\u{2}"
        var body = ByteBuffer()
        body.writeRepeatingByte(UInt8(ascii: "m"), count: bodyBytes)
        return .request(code: 310, opaque: 4_242, extFields: [
            "a": "ProducerGroupName", "b": "BenchTopic", "c": "TBW102", "d": "4", "e": "2", "f": "0",
            "g": "1733472000123", "h": "0", "i": properties, "j": "0", "k": "false", "l": "0", "m": "false",
        ], body: body)
    }

    /// The broker's SEND_OK answer to `request`, with the fields `BrokerService.sendAnswer` sets.
    static func sendAnswer(to request: RemotingCommand) -> RemotingCommand {
        .response(to: request, code: 0, extFields: [
            "msgId": "7F00000100002A9F00000000000A1B2C", "queueId": String(2), "queueOffset": String(123_456),
            "MSG_REGION": "DefaultRegion", "TRACE_ON": "true",
        ])
    }
}

/// CPU time this thread has used, in nanoseconds.
func threadCPUNanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}
