import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Testing
import TestSupport
@testable import Remoting

private func frame(_ c: RemotingCommand) -> ByteBuffer {
    var b = ByteBuffer()
    RemotingFrame.encode(c, into: &b)
    return b
}

/// A frame with a hand-written JSON header, as another client would send it.
private func jsonFrame(_ header: String, body: [UInt8] = []) -> ByteBuffer {
    var b = ByteBuffer()
    let h = Array(header.utf8)
    b.writeInteger(Int32(4 + h.count + body.count))
    b.writeInteger(UInt32(h.count))
    b.writeBytes(h)
    b.writeBytes(body)
    return b
}

private func randomCommand(_ r: inout SplitMix64) -> RemotingCommand {
    func word() -> String {
        let alphabet = Array("abcXYZ019 _-\"\\\n\t/é中😀".unicodeScalars)
        return String(String.UnicodeScalarView((0..<Int(r.next() % 12)).map { _ in alphabet[Int(r.next() % UInt64(alphabet.count))] }))
    }
    var ext: [String: String] = [:]
    for _ in 0..<Int(r.next() % 6) { ext[word()] = word() }
    var body: ByteBuffer?
    if r.next() % 2 == 0 {
        var b = ByteBuffer()
        b.writeBytes((0..<Int(r.next() % 300)).map { _ in UInt8(truncatingIfNeeded: r.next()) })
        body = b.readableBytes > 0 ? b : nil
    }
    let remark = r.next() % 3 == 0 ? nil : "r" + word()
    return RemotingCommand(code: Int32(Int16(truncatingIfNeeded: r.next())), language: LanguageCode.allCases[Int(r.next() % 12)],
                           version: Int32(Int16(truncatingIfNeeded: r.next())), opaque: Int32(truncatingIfNeeded: r.next()),
                           flag: Int32(r.next() % 4), remark: remark, extFields: ExtFields(ext),
                           serializeType: r.next() % 2 == 0 ? .json : .rocketmq, body: body)
}

/// The JSON header as first written here (sorted key array, `ByteBuffer` writes, a walk over
/// `String.UTF8View`): the reference the raw-pointer writer must match byte for byte.
private func referenceJSONHeader(_ c: RemotingCommand) -> [UInt8] {
    // Built as bytes: a String cannot hold the raw non-ASCII bytes one at a time.
    func quotedBytes(_ s: String) -> [UInt8] {
        var o: [UInt8] = [UInt8(ascii: "\"")]
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): o += Array("\\\"".utf8)
            case UInt8(ascii: "\\"): o += Array("\\\\".utf8)
            case 0x0A: o += Array("\\n".utf8)
            case 0x0D: o += Array("\\r".utf8)
            case 0x09: o += Array("\\t".utf8)
            case 0..<0x20: o += Array(("\\u00" + String(b >> 4, radix: 16) + String(b & 0xF, radix: 16)).utf8)
            default: o.append(b)
            }
        }
        o.append(UInt8(ascii: "\""))
        return o
    }
    var o = Array("{\"code\":\(c.code),\"extFields\":{".utf8)
    for (k, key) in c.extFields.keys.sorted().enumerated() {
        if k > 0 { o.append(UInt8(ascii: ",")) }
        o += quotedBytes(key) + [UInt8(ascii: ":")] + quotedBytes(c.extFields[key]!)
    }
    o += Array("},\"flag\":\(c.flag),\"language\":\"\(c.language.name)\",\"opaque\":\(c.opaque)".utf8)
    if let remark = c.remark { o += Array(",\"remark\":".utf8) + quotedBytes(remark) }
    o += Array(",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":\(c.version)}".utf8)
    return o
}

/// What the promises of an EmbeddedChannel's writes came to (its loop is the test's thread).
private final class Outcomes: @unchecked Sendable {
    private(set) var count = 0
    private(set) var failures = 0
    func add(_ r: Result<Void, any Error>) {
        count += 1
        if case .failure = r { failures += 1 }
    }
}

/// The buffers handed on past the encoder, flushed or not.
private final class WritesSeen: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = ByteBuffer
    private(set) var sizes: [Int] = []
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        sizes.append(unwrapOutboundIn(data).readableBytes)
        context.write(data, promise: promise)
    }
}

/// The buffers and flushes that reach the channel.
private final class FlushesSeen: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = ByteBuffer
    private(set) var sizes: [Int] = []
    private(set) var flushes = 0
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        sizes.append(unwrapOutboundIn(data).readableBytes)
        context.write(data, promise: promise)
    }
    func flush(context: ChannelHandlerContext) {
        flushes += 1
        context.flush()
    }
}

@Suite(.ownThreads) struct FrameCodecTests {
    @Test func everyCommandRoundTripsInBothSerializations() throws {
        var r = SplitMix64(seed: 1)
        for _ in 0..<2_000 {
            let c = randomCommand(&r)
            var b = frame(c)
            let back = try #require(try RemotingFrame.decode(&b))
            #expect(back == c)
            #expect(b.readableBytes == 0)
        }
    }

    @Test func aCodeBeyondSixteenBitsGoesWithAJSONHeader() throws {
        // DLedger's request codes (50000...) do not fit the ROCKETMQ header's int16.
        let c = RemotingCommand.request(code: 50_001, opaque: 3, extFields: ["group": "g"], serializeType: .rocketmq)
        var b = frame(c)
        #expect(b.getInteger(at: 4, as: UInt8.self) == SerializeType.json.rawValue)
        let back = try #require(try RemotingFrame.decode(&b))
        #expect(back.code == 50_001)
        #expect(back.serializeType == .json)
        #expect(back.extFields == ["group": "g"])
    }

    @Test func theJSONWriterMatchesTheReferenceByteForByte() {
        var r = SplitMix64(seed: 11)
        let alphabet = Array("aZ09 _-:,{}\"\\/\u{1}\u{2}\u{7}\u{1F}\u{7F}\r\n\té中😀".unicodeScalars)
        func word() -> String {
            String(String.UnicodeScalarView((0..<Int(r.next() % 20)).map { _ in alphabet[Int(r.next() % UInt64(alphabet.count))] }))
        }
        let edges: [Int32] = [0, -1, 1, 9, 10, -10, 99_999, Int32.max, Int32.min]
        func int() -> Int32 { r.next() % 3 == 0 ? edges[Int(r.next() % UInt64(edges.count))] : Int32(truncatingIfNeeded: r.next()) }
        for _ in 0..<5_000 {
            var ext: [String: String] = [:]
            for _ in 0..<Int(r.next() % 16) { ext[word()] = word() }
            let c = RemotingCommand(code: int(), language: LanguageCode.allCases[Int(r.next() % UInt64(LanguageCode.allCases.count))],
                                    version: int(), opaque: int(), flag: int(), remark: r.next() % 3 == 0 ? nil : word(),
                                    extFields: ExtFields(ext), serializeType: .json)
            var b = ByteBuffer()
            JSONHeader.write(c, into: &b)
            let written = b.readBytes(length: b.readableBytes) ?? []
            #expect(written == referenceJSONHeader(c), "\(c)")
        }
    }

    /// A send's answer kept typed (`SendResponseFields`) reads, and is written, exactly as the same
    /// fields in a dictionary: every view, both serializations, byte for byte.
    @Test func aTypedSendAnswerIsTheDictionaryItStandsFor() throws {
        var r = SplitMix64(seed: 43)
        let regions = ["DefaultRegion", "", "cn-\"q\"\\\u{1}", "région 😀"]
        let offsets: [Int64] = [0, 1, 42, Int64.max, Int64.min, -1]
        for k in 0..<2_000 {
            let id: SendResponseFields.MessageID
            let idText: String
            if k % 4 == 3 {
                idText = ["", "A,B", "00000000000000000000000000000000000000000000000000000000", "\u{7}\""][Int(r.next() % 4)]
                id = .text(idText)
            } else {
                let word = r.next(), offset = k % 5 == 0 ? offsets[Int(r.next() % UInt64(offsets.count))] : Int64(bitPattern: r.next())
                id = .ipv4(hostAndPort: word, physicalOffset: offset)
                idText = String(format: "%016llX%016llX", word, UInt64(bitPattern: offset))
            }
            let f = SendResponseFields(msgId: id, queueId: k % 7 == 0 ? Int32.min : Int32(truncatingIfNeeded: r.next()),
                                       queueOffset: k % 6 == 0 ? Int64.min : Int64(bitPattern: r.next()),
                                       region: regions[Int(r.next() % UInt64(regions.count))], traceOn: r.next() % 2 == 0)
            let map = ["msgId": idText, "queueId": "\(f.queueId)", "queueOffset": "\(f.queueOffset)", "MSG_REGION": f.region,
                       "TRACE_ON": f.traceOn ? "true" : "false"]
            let typed = ExtFields(f)
            #expect(typed.dictionary == map)
            #expect(typed == ExtFields(map))
            for name in map.keys { #expect(typed[name] == map[name]) }
            #expect(typed["msgid"] == nil && typed["other"] == nil)
            var seen: [String: String] = [:]
            typed.forEachField { name, value in seen[String(decoding: name, as: UTF8.self)] = value() }
            #expect(seen == map)
            let request = RemotingCommand.request(code: 310, opaque: Int32(truncatingIfNeeded: r.next()))
            for type in [SerializeType.json, .rocketmq] {
                var a = RemotingCommand.response(to: request, code: 0, extFields: typed)
                var b = RemotingCommand.response(to: request, code: 0, extFields: ExtFields(map))
                a.serializeType = type
                b.serializeType = type
                var fa = ByteBuffer(), fb = ByteBuffer()
                RemotingFrame.encode(a, into: &fa)
                RemotingFrame.encode(b, into: &fb)
                if type == .json { #expect(fa == fb, "\(f)") }
                let back = try #require(try RemotingFrame.decode(&fa))
                #expect(back.extFields.dictionary == map)
            }
        }
    }

    @Test func aJSONHeaderIsWrittenAsFastjsonWritesIt() {
        var request = RemotingCommand.request(code: 310, opaque: 7)
        request.language = .go
        let response = RemotingCommand.response(to: request, code: 0,
                                                extFields: ["queueId": "0", "msgId": "C0A8"])
        var b = frame(response)
        b.moveReaderIndex(forwardBy: 8)
        #expect(b.readString(length: b.readableBytes) ==
                #"{"code":0,"extFields":{"msgId":"C0A8","queueId":"0"},"flag":1,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":396}"#)
    }

    @Test func responsesCopyOpaqueAndSerializationAndAlwaysCarryExtFields() throws {
        var req = RemotingCommand.request(code: 105, opaque: 42, serializeType: .rocketmq)
        req.language = .cpp
        let resp = RemotingCommand.response(to: req, code: 17, remark: "No topic route info")
        #expect(resp.opaque == 42 && resp.isResponse && !resp.isOneway)
        #expect(resp.serializeType == .rocketmq && resp.language == .java && resp.version >= 396)
        var b = frame(RemotingCommand.response(to: RemotingCommand.request(code: 1, opaque: 1), code: 0))
        b.moveReaderIndex(forwardBy: 8)
        #expect(b.readString(length: b.readableBytes)!.contains(#""extFields":{}"#))
    }

    /// rocketmq-protocol.md §9 items 1-2: what real clients send.
    @Test func headersFromOtherClientsAreAccepted() throws {
        // C++: trailing newline, numbers and booleans in extFields, empty AccessKey.
        var cpp = jsonFrame(#"{"code":310,"language":"CPP","version":334,"opaque":5,"flag":0,"remark":"","extFields":{"a":"g","b":"T","d":4,"e":-1,"m":false,"z":1.5e3,"n":null,"AccessKey":""}}"# + "\n")
        let c = try #require(try RemotingFrame.decode(&cpp))
        #expect(c.code == 310 && c.language == .cpp && c.opaque == 5)
        #expect(c.extFields == ["a": "g", "b": "T", "d": "4", "e": "-1", "m": "false", "z": "1.5e3", "AccessKey": ""])
        // Go: no remark; Java: serializeTypeCurrentRPC and unknown keys, with nesting and escapes.
        var go = jsonFrame(#"{"code":105,"language":"GO","version":317,"opaque":1,"flag":0,"extFields":{"topic":"T\u00e9\ud83d\ude00"}}"#)
        let g = try #require(try RemotingFrame.decode(&go))
        #expect(g.remark == nil && g.extFields["topic"] == "Té😀")
        var java = jsonFrame(#" { "code" : 34 , "opaque" : 9 , "future" : {"x": [1, {"y": [true, null, "s\"]"]}], "z": {}} , "serializeTypeCurrentRPC" : "JSON" } "#, body: [1, 2, 3])
        let j = try #require(try RemotingFrame.decode(&java))
        #expect(j.code == 34 && j.opaque == 9 && j.extFields.isEmpty && j.language == .other)
        #expect(j.body.map { Array($0.readableBytesView) } == [1, 2, 3])
        // Keys escaped for no reason are still the keys they spell; one-byte and empty strings,
        // non-ASCII single bytes repaired, keys that only start like ours are other keys.
        var escaped = jsonFrame(#"{"co\u0064e":12,"\u006fpaque":3,"codex":1,"opaqu":2,"extFields":{"a":"1","b":"","\u0063":"x","d":"\#u{7F}"}}"#)
        let e = try #require(try RemotingFrame.decode(&escaped))
        #expect(e.code == 12 && e.opaque == 3)
        #expect(e.extFields == ["a": "1", "b": "", "c": "x", "d": "\u{7F}"])
        var high = jsonFrame("{\"code\":1,\"opaque\":1,\"extFields\":{\"k\":\"") 
        high.writeBytes([0xE9])
        high.writeString("\"}}")
        high.setInteger(Int32(high.readableBytes - 4), at: 0)
        high.setInteger(UInt32(high.readableBytes - 8), at: 4)
        let h = try #require(try RemotingFrame.decode(&high))
        #expect(h.extFields["k"] == "\u{FFFD}")
    }

    /// Strings with escapes decode straight into the string's storage: every character JSON escapes
    /// (RocketMQ's \u0001 and \u0002 separators, quotes, backslashes, controls), text that is not
    /// ASCII, and raw bytes that are not UTF-8 after an escape (repaired, as before).
    @Test func escapedStringsRoundTripAndBadBytesAreRepaired() throws {
        var r = SplitMix64(seed: 11)
        let alphabet = Array("ab \u{1}\u{2}\u{0}\u{1F}\"\\/\n\t\r\u{8}\u{C}é中😀".unicodeScalars)
        for _ in 0..<2_000 {
            var text = ""
            for _ in 0..<Int(r.next() % 40) { text.unicodeScalars.append(alphabet[Int(r.next() % UInt64(alphabet.count))]) }
            let c = RemotingCommand.response(to: RemotingCommand.request(code: 10, opaque: 3), code: 0, extFields: ["properties": text, text: "k"])
            var b = ByteBuffer()
            RemotingFrame.encode(c, into: &b)
            let d = try #require(try RemotingFrame.decode(&b))
            #expect(d.extFields == ["properties": text, text: "k"], "\(Array(text.utf8))")
        }
        var header = Array(#"{"code":1,"opaque":1,"extFields":{"k":"\u0001"#.utf8) + [0xFF] + Array(#"x\u00e9"}}"#.utf8)
        var b = ByteBuffer()
        b.writeInteger(Int32(4 + header.count))
        b.writeInteger(UInt32(header.count))
        b.writeBytes(header)
        #expect(try RemotingFrame.decode(&b)?.extFields["k"] == "\u{1}\u{FFFD}xé")
        // Cut inside an escape or before the closing quote: a typed error.
        for cut in [#"{"code":1,"opaque":1,"extFields":{"k":"a\u00"#, #"{"code":1,"opaque":1,"extFields":{"k":"a\"#, #"{"code":1,"opaque":1,"extFields":{"k":"\n"#] {
            header = Array(cut.utf8)
            var t = ByteBuffer()
            t.writeInteger(Int32(4 + header.count))
            t.writeInteger(UInt32(header.count))
            t.writeBytes(header)
            #expect(throws: RemotingError.self, "\(cut)") { _ = try RemotingFrame.decode(&t) }
        }
    }

    /// A decoded JSON header keeps `extFields` as its text: every way of reading it (the dictionary,
    /// one lookup, the walk) gives what a dictionary built from the text in order would hold, over
    /// random objects with repeated names, names spelled with escapes, escaped values, numbers,
    /// booleans and nulls; and a change to it keeps the rest.
    @Test func extFieldsReadFromTheTextAgreeWithTheDictionary() throws {
        var r = SplitMix64(seed: 29)
        // Names that repeat, one spelled with an escape ("\u0061" is "a"), one not ASCII, one empty.
        // "\u212A" (the Kelvin sign) is "K" to Swift's `==`, so to the dictionary.
        let names: [(text: String, name: String)] = [("a", "a"), (#"\u0061"#, "a"), ("b", "b"), ("topic", "topic"),
                                                    (#"t\u00e9"#, "t\u{e9}"), ("", ""), ("properties", "properties"),
                                                    ("K", "K"), (#"\u212A"#, "\u{212A}")]
        let values: [(text: String, value: String?)] = [
            (#""x""#, "x"), (#""""#, ""), (#""TAGS\u0001A\u0002KEYS\u0001k""#, "TAGS\u{1}A\u{2}KEYS\u{1}k"), ("12", "12"),
            ("-1", "-1"), ("1.5e3", "1.5e3"), ("true", "true"), ("false", "false"), ("null", nil),
            (#""\ud83d\ude00 \"q\" \\""#, "\u{1F600} \"q\" \\"),
            (#""a long value that does not fit a small string""#, "a long value that does not fit a small string"),
        ]
        for _ in 0..<3_000 {
            var pairs: [String] = []
            var expected: [String: String] = [:]
            var order: [(String, String?)] = []
            for _ in 0..<Int(r.next() % 9) {
                let n = names[Int(r.next() % UInt64(names.count))], v = values[Int(r.next() % UInt64(values.count))]
                pairs.append("\"\(n.text)\"" + (r.next() % 2 == 0 ? " : " : ":") + v.text)
                if let value = v.value { expected[n.name] = value }
                order.append((n.name, v.value))
            }
            var b = jsonFrame("{\"code\":310,\"opaque\":1,\"extFields\":{" + pairs.joined(separator: ",") + "}}")
            let c = try #require(try RemotingFrame.decode(&b))
            #expect(c.extFields.dictionary == expected, "\(pairs)")
            #expect(c.extFields.count == expected.count)
            for (_, name) in names + [("zz", "zz"), ("ab", "ab")] {
                #expect(c.extFields[name] == expected[name], "\(name) in \(pairs)")
            }
            var walked: [(String, String?)] = []
            c.extFields.forEachField { name, value in walked.append((String(decoding: name, as: UTF8.self), value())) }
            #expect(walked.map(\.0) == order.map(\.0) && walked.map(\.1) == order.map(\.1), "\(pairs)")
            var changed = c
            changed.extFields["b"] = "set"
            var want = expected
            want["b"] = "set"
            #expect(changed.extFields.dictionary == want && c.extFields.dictionary == expected)
            // Written again (sorted, as fastjson writes), it reads back the same.
            var again = frame(c)
            #expect(try RemotingFrame.decode(&again)?.extFields == c.extFields)
        }
        // A name that is not UTF-8 is the repaired name in every view, as in the dictionary.
        let header = Array(#"{"code":1,"opaque":1,"extFields":{""#.utf8) + [0xE9] + Array(#"":"v","a":"w"}}"#.utf8)
        var b = ByteBuffer()
        b.writeInteger(Int32(4 + header.count))
        b.writeInteger(UInt32(header.count))
        b.writeBytes(header)
        let c = try #require(try RemotingFrame.decode(&b))
        #expect(c.extFields.dictionary == ["\u{FFFD}": "v", "a": "w"] && c.extFields["\u{FFFD}"] == "v")
        // A frame without a body keeps its extFields in a buffer of its own, not a slice of the
        // receive buffer (a held long-polling pull would keep all of it alive); a send's body does
        // hold the buffer anyway.
        var stream = jsonFrame(#"{"code":11,"opaque":1,"extFields":{"topic":"T","queueId":"0"}}"#)
        var rest = jsonFrame(#"{"code":310,"opaque":2,"extFields":{"b":"T"}}"#, body: [UInt8](repeating: 7, count: 64 << 10))
        stream.writeBuffer(&rest)
        let pull = try #require(try RemotingFrame.decode(&stream))
        guard case .json(let text) = pull.extFields.storage else { Issue.record("not kept as text"); return }
        #expect(text.storageCapacity < 1024 && pull.extFields["topic"] == "T", "\(text.storageCapacity)")
        var walked: [String] = []
        c.extFields.forEachField { name, _ in walked.append(String(decoding: name, as: UTF8.self)) }
        #expect(walked == ["\u{FFFD}", "a"])
    }

    /// What `extFields` is checked for when the frame is decoded (its values are read later).
    @Test func malformedExtFieldsAreRefusedWhenTheFrameIsDecoded() throws {
        for fields in [#"{"a":"\x"}"#, #"{"a":"\ud800"}"#, #"{"a":"\ud800\u0041"}"#, #"{"a":"\udc00"}"#, #"{"a":"\u12"}"#,
                       #"{"a":[1]}"#, #"{"a" "b"}"#, #"{"a":"b",}"#, #"{"a":"b""#, #"{a:"b"}"#, #"{"a":tru}"#, #"{"a":-}"#,
                       #"{"a":1.}"#, "{\"a\":\"\u{1}\"}", #"{"\q":"b"}"#] {
            var b = jsonFrame(#"{"code":1,"opaque":1,"extFields":"# + fields + "}")
            #expect(throws: RemotingError.self, "\(fields)") { _ = try RemotingFrame.decode(&b) }
        }
        var nullFields = jsonFrame(#"{"code":1,"opaque":1,"extFields":null}"#)
        #expect(try RemotingFrame.decode(&nullFields)?.extFields.isEmpty == true)
    }

    @Test func malformedHeadersAreTypedErrors() {
        for header in [#"{"code":1}"#, #"{"opaque":1}"#, #"{"code":"1","opaque":1}"#, #"{"code":1,"opaque":1"#,
                       #"{"code":1,"opaque":1}x"#, #"{"code":1,"opaque":99999999999}"#, #"{"code":1,"opaque":1,"extFields":{"a":[1]}}"#,
                       #"{"code":1,"opaque":1,"remark":"\q"}"#, #"{"code":1,"opaque":1,"x":"# + String(repeating: "[", count: 40) + "]"] {
            var b = jsonFrame(header)
            #expect(throws: RemotingError.self, "\(header)") { _ = try RemotingFrame.decode(&b) }
        }
        var tooBig = ByteBuffer()
        tooBig.writeInteger(Int32(17 << 20))
        #expect(throws: RemotingError.frameTooLarge(bytes: (17 << 20) + 4, limit: 16 << 20)) { _ = try RemotingFrame.decode(&tooBig) }
        var short = ByteBuffer()
        short.writeInteger(Int32(2))
        short.writeInteger(Int16(0))
        #expect(throws: RemotingError.self) { _ = try RemotingFrame.decode(&short) }
        var badType = ByteBuffer()
        badType.writeInteger(Int32(4))
        badType.writeInteger(UInt32(7) << 24)
        #expect(throws: RemotingError.self) { _ = try RemotingFrame.decode(&badType) }
    }

    @Test func randomBytesNeverTrap() {
        var r = SplitMix64(seed: 7)
        var errors = 0
        for _ in 0..<20_000 {
            var b = ByteBuffer()
            let n = Int(r.next() % 64)
            b.writeInteger(Int32(n))
            // Half the time a plausible type/length word, then garbage.
            if r.next() % 2 == 0 { b.writeInteger(UInt32(r.next() % 2) << 24 | UInt32(r.next() % UInt64(max(n, 1)))) }
            b.writeBytes((0..<n).map { _ in UInt8(truncatingIfNeeded: r.next() % 3 == 0 ? UInt64(UInt8(ascii: "{")) : r.next()) })
            do { _ = try RemotingFrame.decode(&b) } catch { errors += 1 }
        }
        #expect(errors > 0)
    }

    /// The decoder handler, fed the same stream byte by byte and in random splits.
    @Test func theDecoderCutsAStreamSplitAnywhere() throws {
        var r = SplitMix64(seed: 3)
        let commands = (0..<50).map { _ in randomCommand(&r) }
        var stream = ByteBuffer()
        for c in commands { RemotingFrame.encode(c, into: &stream) }
        for mode in ["bytes", "random"] {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(RemotingFrameDecoder()))
            var rest = stream
            while rest.readableBytes > 0 {
                let n = mode == "bytes" ? 1 : Int(r.next() % 200) + 1
                let piece = rest.readSlice(length: min(n, rest.readableBytes))!
                try channel.writeInbound(piece)
            }
            var got: [RemotingCommand] = []
            while let c = try channel.readInbound(as: RemotingCommand.self) { got.append(c) }
            #expect(got == commands, "\(mode)")
            _ = try channel.finish()
        }
    }

    @Test func theDecoderRefusesAnOversizedFrameBeforeBufferingIt() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RemotingFrameDecoder(maxFrameBytes: 1024)))
        var b = ByteBuffer()
        b.writeInteger(Int32(1_000_000))
        #expect(throws: RemotingError.self) { try channel.writeInbound(b) }
        _ = try? channel.finish()
    }

    /// The remoting pipeline hands what its decoder reads straight to its connection handler
    /// (`RemotingFrameDecoder`'s sink): requests reach the dispatcher in order, a request on a
    /// connection without one is answered "not supported" through the whole pipeline, and a
    /// response completes the request it answers.
    @Test func thePipelinesDecoderHandsCommandsToItsHandler() throws {
        final class Recorder: RemotingDispatcher, @unchecked Sendable {
            var seen: [Int32] = []
            func dispatch(_ request: RemotingCommand, from connection: RemotingConnection) {
                seen.append(request.opaque)
                connection.respond(.response(to: request, code: 0, remark: "r\(request.opaque)"), to: request)
            }
        }
        let recorder = Recorder()
        let server = EmbeddedChannel()
        try RemotingPipeline.add(to: server, maxFrameBytes: 1 << 20, idleTimeoutSeconds: 120, dispatcher: recorder,
                                 maxPendingRequests: 8, logger: Logger(label: "test"))
        var frames = ByteBuffer()
        for k in 1...5 { RemotingFrame.encode(.request(code: 310, opaque: Int32(k), body: ByteBuffer(string: "m\(k)")), into: &frames) }
        try server.writeInbound(frames)
        server.embeddedEventLoop.run()
        #expect(recorder.seen == [1, 2, 3, 4, 5])
        var answers: [(Int32, String?)] = []
        while var out = try server.readOutbound(as: ByteBuffer.self) {
            while let c = try RemotingFrame.decode(&out) { answers.append((c.opaque, c.remark)) }
        }
        #expect(answers.map(\.0) == [1, 2, 3, 4, 5] && answers.map(\.1) == (1...5).map { "r\($0)" })
        _ = try server.finish()

        let client = EmbeddedChannel()
        try RemotingPipeline.add(to: client, maxFrameBytes: 1 << 20, idleTimeoutSeconds: 120, dispatcher: nil,
                                 maxPendingRequests: 8, logger: Logger(label: "test"))
        try client.writeInbound(frame(.request(code: 4242, opaque: 9)))
        var refused = try #require(try client.readOutbound(as: ByteBuffer.self))
        let answer = try #require(try RemotingFrame.decode(&refused))
        #expect(answer.isResponse && answer.opaque == 9 && answer.code == ResponseCode.requestCodeNotSupported)
        // A request of our own (on this thread: the embedded loop is the test's), answered.
        let promise = client.embeddedEventLoop.makePromise(of: RemotingCommand.self)
        final class Reply: @unchecked Sendable { var command: RemotingCommand? }
        let reply = Reply()
        promise.futureResult.whenSuccess { reply.command = $0 }
        client.writeAndFlush(Outbound.request(OutboundRequest(command: .request(code: 11, opaque: 0), promise: promise,
                                                              timeoutMilliseconds: 10_000)), promise: nil)
        var request = try #require(try client.readOutbound(as: ByteBuffer.self))
        let asked = try #require(try RemotingFrame.decode(&request))
        #expect(reply.command == nil)
        try client.writeInbound(frame(.response(to: asked, code: 0, remark: "yes")))
        #expect(reply.command?.remark == "yes")
        _ = try client.finish()
    }

    /// Answers written on the loop go to the encoder directly (`CoalescingFrameEncoder.append`),
    /// requests through the pipeline: they leave in the order they were written, and an answer
    /// written after the encoder left the pipeline goes through the channel as any write would.
    @Test func answersToTheEncoderKeepTheirOrderWithRequests() throws {
        final class Interleaver: RemotingDispatcher, @unchecked Sendable {
            var connection: RemotingConnection?
            func dispatch(_ request: RemotingCommand, from connection: RemotingConnection) {
                self.connection = connection
                connection.respond(.response(to: request, code: 0, remark: "r\(request.opaque)"), to: request)
                if request.opaque == 2 { connection.oneway(.request(code: 4_000, opaque: 0, body: ByteBuffer(string: "between"))) }
            }
        }
        let dispatcher = Interleaver()
        let server = EmbeddedChannel()
        try RemotingPipeline.add(to: server, maxFrameBytes: 1 << 20, idleTimeoutSeconds: 120, dispatcher: dispatcher,
                                 maxPendingRequests: 8, logger: Logger(label: "test"))
        // Between the encoder and the connection handler: it sees what goes through the pipeline.
        final class Passing: ChannelOutboundHandler, @unchecked Sendable {
            typealias OutboundIn = Outbound
            var writes = 0
            func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
                writes += 1
                context.write(data, promise: promise)
            }
        }
        let passing = Passing()
        let encoderAt = try server.pipeline.syncOperations.handler(type: CoalescingFrameEncoder.self)
        try server.pipeline.syncOperations.addHandler(passing, position: .after(encoderAt))
        var frames = ByteBuffer()
        for k in 1...3 { RemotingFrame.encode(.request(code: 310, opaque: Int32(k)), into: &frames) }
        try server.writeInbound(frames)
        server.embeddedEventLoop.run()
        var order: [String] = []
        while var out = try server.readOutbound(as: ByteBuffer.self) {
            while let c = try RemotingFrame.decode(&out) { order.append(c.isResponse ? (c.remark ?? "?") : "request \(c.code)") }
        }
        #expect(order == ["r1", "r2", "request 4000", "r3"])
        #expect(passing.writes == 1, "only the request went through the pipeline")
        // The encoder leaves the pipeline: an answer falls back to the channel's write (which the
        // embedded channel, with no encoder left, cannot take as bytes: it is kept as it came).
        let encoder = try server.pipeline.syncOperations.handler(type: CoalescingFrameEncoder.self)
        try server.pipeline.syncOperations.removeHandler(encoder).wait()
        let late = RemotingCommand.request(code: 310, opaque: 9)
        dispatcher.connection?.respond(.response(to: late, code: 0), to: late)
        server.embeddedEventLoop.run()
        let leftover = try server.readOutbound(as: Outbound.self)
        guard case .response(let answered) = leftover else {
            Issue.record("the late answer did not reach the channel: \(String(describing: leftover))")
            return
        }
        #expect(answered.opaque == 9)
        _ = try? server.finish()
    }

    /// Answers written on the connection's loop (a Raft commit answering the sends it covered)
    /// share one flush task: they leave as one buffer and one flush, whatever their number; a
    /// run written after that flush gets a flush of its own.
    @Test func answersWrittenOnTheLoopShareOneFlush() throws {
        let seen = FlushesSeen()
        let channel = EmbeddedChannel(handlers: [seen, CoalescingFrameEncoder(),
                                                 RemotingConnectionHandler(dispatcher: nil, maxPendingRequests: 8, logger: Logger(label: "test"))])
        let connection = RemotingConnection(channel: channel)
        let request = RemotingCommand.request(code: 310, opaque: 1)
        for k in 0..<5 { connection.respond(.response(to: request, code: Int32(k)), to: request) }
        #expect(seen.flushes == 0 && seen.sizes.isEmpty, "the flush waits for the loop's queued task")
        channel.embeddedEventLoop.run()
        #expect(seen.flushes == 1 && seen.sizes.count == 1)
        var out = try #require(try channel.readOutbound(as: ByteBuffer.self))
        var codes: [Int32] = []
        while let c = try RemotingFrame.decode(&out) { codes.append(c.code) }
        #expect(codes == [0, 1, 2, 3, 4])
        for k in 5..<7 { connection.respond(.response(to: request, code: Int32(k)), to: request) }
        channel.embeddedEventLoop.run()
        #expect(seen.flushes == 2 && seen.sizes.count == 2)
        _ = try channel.finish()
    }

    /// The encoder: the frames written before a flush leave as one buffer, the same bytes as each
    /// frame encoded alone, and every write's promise completes with that buffer's write.
    @Test func framesWrittenBeforeAFlushLeaveAsOneBuffer() throws {
        var r = SplitMix64(seed: 11)
        let channel = EmbeddedChannel(handler: CoalescingFrameEncoder())
        var expected = ByteBuffer()
        var promises: [EventLoopPromise<Void>] = []
        let answered = Outcomes()
        for k in 0..<20 {
            let c = randomCommand(&r)
            RemotingFrame.encode(c, into: &expected)
            let p: EventLoopPromise<Void>? = k % 3 == 0 ? nil : channel.eventLoop.makePromise()
            if let p {
                promises.append(p)
                p.futureResult.whenComplete { answered.add($0) }
            }
            // Answers and requests alike (a request as the connection handler numbered it).
            channel.write(k % 2 == 0 ? Outbound.response(c) : .request(OutboundRequest(command: c, promise: nil, timeoutMilliseconds: 0)), promise: p)
        }
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "nothing leaves before the flush")
        #expect(answered.count == 0)
        channel.flush()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == expected)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "one buffer")
        #expect(answered.count == promises.count && answered.failures == 0)
        _ = try channel.finish()
    }

    /// A write whose own bytes take the buffer past the limit hands it on with its promise: that
    /// promise completes with that buffer's write, not a later one's, and none is left behind.
    @Test func aWriteThatPassesTheLimitHandsOnItsOwnPromise() throws {
        let seen = WritesSeen()
        let channel = EmbeddedChannel(handlers: [seen, CoalescingFrameEncoder()])
        var big = ByteBuffer()
        big.writeBytes([UInt8](repeating: 7, count: CoalescingFrameEncoder.handOnBytes))
        let done = Outcomes()
        let promise = channel.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { done.add($0) }
        channel.write(Outbound.request(OutboundRequest(command: RemotingCommand(code: 10, opaque: 1, body: big), promise: nil,
                                                       timeoutMilliseconds: 0)), promise: promise)
        #expect(seen.sizes.count == 1, "handed on past the limit without a flush")
        // The channel completes a write's promise at its flush (held by the encoder, it would never).
        channel.flush()
        #expect(done.count == 1 && done.failures == 0, "the promise went with the bytes it covers")
        #expect(try channel.readOutbound(as: ByteBuffer.self)?.readableBytes == seen.sizes.first)
        _ = try channel.finish()
    }

    /// A run of writes without a flush is handed on once it passes the limit, not held whole; a
    /// close hands on what is held, so no write's promise is left behind in the encoder.
    @Test func longRunsAreHandedOnAndACloseAnswersHeldWrites() throws {
        let seen = WritesSeen()
        let channel = EmbeddedChannel(handlers: [seen, CoalescingFrameEncoder()])
        var big = ByteBuffer()
        big.writeBytes([UInt8](repeating: 7, count: 100 << 10))
        let command = RemotingCommand(code: 10, opaque: 1, body: big)
        for _ in 0..<2 { channel.write(Outbound.response(command), promise: nil) }
        #expect(seen.sizes.isEmpty, "held below the limit")
        channel.write(Outbound.response(command), promise: nil)
        #expect(seen.sizes.count == 1 && seen.sizes[0] >= CoalescingFrameEncoder.handOnBytes, "handed on past the limit without a flush")
        // A write held at close goes on to the channel with its promise, which a socket channel
        // fails at close (an EmbeddedChannel keeps it as a leftover).
        let small = RemotingCommand(code: 11, opaque: 2)
        let held = channel.eventLoop.makePromise(of: Void.self)
        channel.write(Outbound.response(small), promise: held)
        #expect(seen.sizes.count == 1)
        _ = try? channel.close().wait()
        #expect(seen.sizes == [seen.sizes.first ?? 0, frame(small).readableBytes], "the held write is handed on at close")
        held.fail(ChannelError.ioOnClosedChannel)
    }
}
