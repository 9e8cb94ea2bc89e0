import Glibc
import NIOCore

/// The JSON header (rocketmq-protocol.md §1.3). Written as fastjson writes it (keys in alphabetical
/// order, no nulls, `extFields` always present with string values); read tolerantly, as real clients
/// send it: a trailing newline (C++), numbers and booleans in `extFields` (C++), unknown keys,
/// missing `remark` or `extFields`.
enum JSONHeader {
    /// Nesting a skipped value may have (an unknown key's value); deeper is malformed.
    static let maxSkippedDepth = 32

    /// Writes the header straight into `out`'s memory: its size is bounded first (every byte of a
    /// key or value escapes to at most six), then one reservation, no intermediate strings, and the
    /// fields sorted in a stack buffer (measured with `mqbench codec`: a send's answer took 2.5 us
    /// through `ByteBuffer`'s per-call writes, a sorted key array and a byte-by-byte `String.UTF8View`
    /// walk).
    static func write(_ c: RemotingCommand, into out: inout ByteBuffer) {
        if case .sendResponse(let f) = c.extFields.storage {
            // A send's answer: its five fields written straight from their values.
            let region = 6 * f.region.utf8.count
            let id: Int
            switch f.msgId {
            case .ipv4: id = 32
            case .text(let t): id = 6 * t.utf8.count
            }
            // Names and punctuation about 80 bytes, queueId 11 digits, queueOffset 20, TRACE_ON 5.
            write(c, extFieldsBound: 140 + region + id, into: &out) { w in
                w.put("\"MSG_REGION\":")
                w.quoted(f.region)
                w.put(f.traceOn ? ",\"TRACE_ON\":\"true\",\"msgId\":" : ",\"TRACE_ON\":\"false\",\"msgId\":")
                switch f.msgId {
                case let .ipv4(hostAndPort, offset):
                    w.put(UInt8(ascii: "\""))
                    SendResponseFields.hex(hostAndPort, offset, into: w.base + w.count)
                    w.count += 32
                    w.put(UInt8(ascii: "\""))
                case .text(let t):
                    w.quoted(t)
                }
                w.put(",\"queueId\":\"")
                w.put(Int64(f.queueId))
                w.put("\",\"queueOffset\":\"")
                w.put(f.queueOffset)
                w.put(UInt8(ascii: "\""))
            }
            return
        }
        let extFields = c.extFields.dictionary
        let fieldCount = extFields.count
        withUnsafeTemporaryAllocation(of: (key: String, value: String).self, capacity: max(fieldCount, 1)) { fields in
            var n = 0
            var bound = 0
            for (key, value) in extFields {
                // Insertion sort: a header has a few to a dozen fields.
                var at = n
                while at > 0 && key < fields[at - 1].key {
                    at -= 1
                }
                if at < n { (fields.baseAddress! + at + 1).moveInitialize(from: fields.baseAddress! + at, count: n - at) }
                (fields.baseAddress! + at).initialize(to: (key, value))
                n += 1
                bound += 6 + 6 * (key.utf8.count + value.utf8.count)
            }
            write(c, extFieldsBound: bound, into: &out) { w in
                for k in 0..<n {
                    if k > 0 { w.put(UInt8(ascii: ",")) }
                    w.quoted(fields[k].key)
                    w.put(UInt8(ascii: ":"))
                    w.quoted(fields[k].value)
                }
            }
            _ = fields.baseAddress!.deinitialize(count: n)
        }
    }

    /// The header around its `extFields` members, which `fields` writes in at most `extFieldsBound` bytes.
    private static func write(_ c: RemotingCommand, extFieldsBound: Int, into out: inout ByteBuffer, _ fields: (inout Writer) -> Void) {
        // The fixed text is under 160 bytes, each of the four integers at most 11 characters.
        var bound = 160 + 11 * 4 + 6 * c.language.name.utf8.count + extFieldsBound
        if let remark = c.remark { bound += 12 + 6 * remark.utf8.count }
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { raw in
            var w = Writer(base: raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
            w.put("{\"code\":")
            w.put(c.code)
            w.put(",\"extFields\":{")
            fields(&w)
            w.put("},\"flag\":")
            w.put(c.flag)
            w.put(",\"language\":")
            w.quoted(c.language.name)
            w.put(",\"opaque\":")
            w.put(c.opaque)
            if let remark = c.remark {
                w.put(",\"remark\":")
                w.quoted(remark)
            }
            w.put(",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":")
            w.put(c.version)
            w.put(UInt8(ascii: "}"))
            precondition(w.count <= bound, "JSON header bound too small")
            return w.count
        }
    }

    /// Appends bytes at a raw pointer the caller sized.
    private struct Writer {
        let base: UnsafeMutablePointer<UInt8>
        var count = 0

        mutating func put(_ b: UInt8) {
            base[count] = b
            count += 1
        }

        mutating func put(_ s: StaticString) {
            (base + count).update(from: s.utf8Start, count: s.utf8CodeUnitCount)
            count += s.utf8CodeUnitCount
        }

        /// A decimal integer, as `String(v)` writes it.
        mutating func put(_ v: Int32) { put(Int64(v)) }

        mutating func put(_ v: Int64) {
            var magnitude = v.magnitude
            if v < 0 { put(UInt8(ascii: "-")) }
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for 20 digits
            var k = 0
            withUnsafeMutableBytes(of: &digits) { d in
                repeat {
                    d[k] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                    magnitude /= 10
                    k += 1
                } while magnitude > 0
                while k > 0 {
                    k -= 1
                    base[count] = d[k]
                    count += 1
                }
            }
        }

        /// A JSON string: quotes, backslashes and control characters escaped, everything else as is.
        mutating func quoted(_ s: String) {
            put(UInt8(ascii: "\""))
            var text = s
            text.withUTF8 { bytes in
                var runStart = 0
                for i in 0..<bytes.count {
                    let b = bytes[i]
                    guard b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b < 0x20 else { continue }
                    if i > runStart {
                        (base + count).update(from: bytes.baseAddress! + runStart, count: i - runStart)
                        count += i - runStart
                    }
                    runStart = i + 1
                    put(UInt8(ascii: "\\"))
                    switch b {
                    case UInt8(ascii: "\""): put(UInt8(ascii: "\""))
                    case UInt8(ascii: "\\"): put(UInt8(ascii: "\\"))
                    case 0x0A: put(UInt8(ascii: "n"))
                    case 0x0D: put(UInt8(ascii: "r"))
                    case 0x09: put(UInt8(ascii: "t"))
                    default:
                        put("u00")
                        put(Self.hexDigit(b >> 4))
                        put(Self.hexDigit(b & 0xF))
                    }
                }
                if bytes.count > runStart {
                    (base + count).update(from: bytes.baseAddress! + runStart, count: bytes.count - runStart)
                    count += bytes.count - runStart
                }
            }
            put(UInt8(ascii: "\""))
        }

        static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? UInt8(ascii: "0") + v : UInt8(ascii: "a") + v - 10 }
    }

    /// Reads a header (the bytes between the frame's length words and its body). `extFields` is
    /// checked here against the grammar, then kept as its text (`ExtFields`).
    /// `ownFields`: keep `extFields` in a buffer of its own rather than a slice of `header` (a
    /// command without a body, which may be held long, as a long-polling pull is, must not keep
    /// the connection's whole receive buffer alive).
    static func read(_ header: ByteBuffer, ownFields: Bool = false) throws(RemotingError) -> RemotingCommand {
        // Over the bytes themselves: a view's subscript costs a bounds check and an indirection per
        // byte (measured: this parser was 7 % of a leader's CPU at 1 KiB sends when it read the view).
        let result = header.withUnsafeReadableBytes { bytes -> Result<(RemotingCommand, Range<Int>?), RemotingError> in
            do throws(RemotingError) { return .success(try read(bytes)) } catch { return .failure(error) }
        }
        var (command, fields) = try result.get()
        if let fields {
            let text = header.getSlice(at: header.readerIndex + fields.lowerBound, length: fields.count)!
            command.extFields = ExtFields(json: ownFields ? ByteBuffer(buffer: text) : text)
        }
        return command
    }

    /// The command, and where its `extFields` object lies in `header` (nil when absent or null):
    /// the caller keeps that text.
    static func read(_ header: UnsafeRawBufferPointer) throws(RemotingError) -> (RemotingCommand, Range<Int>?) {
        var r = Reader(bytes: header)
        var code: Int32?, opaque: Int32?
        var flag: Int32 = 0, version: Int32 = 0
        var language = LanguageCode.other
        var remark: String?
        var fields: Range<Int>?
        r.skipSpace()
        try r.expect(UInt8(ascii: "{"))
        r.skipSpace()
        if r.peek() == UInt8(ascii: "}") {
            r.advance()
        } else {
            while true {
                r.skipSpace()
                let (key, keyStart) = try r.topLevelKey()
                r.skipSpace()
                try r.expect(UInt8(ascii: ":"))
                r.skipSpace()
                switch key {
                case .code: code = try r.int32("code")
                case .opaque: opaque = try r.int32("opaque")
                case .flag: flag = try r.int32("flag")
                case .version: version = try r.int32("version")
                case .language: language = LanguageCode(name: try r.string())
                case .remark:
                    if r.isNull() { try r.null() } else { remark = try r.string() }
                case .extFields:
                    if r.isNull() {
                        try r.null()
                    } else {
                        let start = r.i
                        try r.walkFields { _, _ in }
                        fields = start..<r.i
                    }
                case .other: try r.skipValue()
                }
                r.skipSpace()
                let b = try r.next()
                if b == UInt8(ascii: "}") { break }
                if b != UInt8(ascii: ",") {
                    var keyReader = Reader(bytes: header)
                    keyReader.i = keyStart - 1
                    let name = (try? keyReader.string()) ?? "?"
                    throw .malformedHeader("expected , or } after the value of \"\(name)\"")
                }
            }
        }
        r.skipSpace()  // C++ clients end the header with a newline
        guard r.atEnd else { throw .malformedHeader("bytes after the header object") }
        guard let code else { throw .malformedHeader("no \"code\"") }
        guard let opaque else { throw .malformedHeader("no \"opaque\"") }
        return (RemotingCommand(code: code, language: language, version: version, opaque: opaque, flag: flag,
                                remark: remark, serializeType: .json), fields.map { $0.lowerBound - header.startIndex..<$0.upperBound - header.startIndex })
    }

    /// Every field of an `extFields` text `read` checked, as a dictionary.
    static func fieldMap(_ text: ByteBuffer) -> [String: String] {
        text.withUnsafeReadableBytes { bytes in
            var r = Reader(bytes: bytes)
            return (try? r.stringMap()) ?? [:]
        }
    }

    /// One field's value from an `extFields` text, without the dictionary: the last non-null one.
    /// Names compare as the dictionary compares them (Swift's `==`, canonical equivalence: "\u212A",
    /// the Kelvin sign, is "K"); bytes suffice when both names are ASCII.
    static func field(_ name: String, in text: ByteBuffer) -> String? {
        var utf8 = name
        let ascii = name.utf8.allSatisfy { $0 < 0x80 }
        return utf8.withUTF8 { wanted in
            text.withUnsafeReadableBytes { bytes -> String? in
                var r = Reader(bytes: bytes)
                let reader = r
                var found: Reader.FieldValue?
                try? r.walkFields { key, value in
                    if case .null = value { return }
                    let same = ascii && !key.escaped
                        ? reader.key(key, is: UnsafeRawBufferPointer(wanted))
                        : reader.decoded(key.range, escaped: key.escaped) == name
                    if same { found = value }
                }
                return found.flatMap { reader.text($0) }
            }
        }
    }

    /// `ExtFields.forEachField` over an `extFields` text.
    static func forEachField(in text: ByteBuffer, _ body: (_ name: UnsafeRawBufferPointer, _ value: () -> String?) -> Void) {
        text.withUnsafeReadableBytes { bytes in
            var r = Reader(bytes: bytes)
            let reader = r
            try? r.walkFields { key, value in
                if key.escaped {
                    var name = reader.decoded(key.range, escaped: true)
                    name.withUTF8 { body(UnsafeRawBufferPointer($0), { reader.text(value) }) }
                } else {
                    body(UnsafeRawBufferPointer(rebasing: bytes[key.range]), { reader.text(value) })
                }
            }
        }
    }

    /// The header keys RaftMQ reads.
    enum TopLevelKey {
        case code, opaque, flag, version, language, remark, extFields, other

        static let names: [(TopLevelKey, StaticString)] = [
            (.code, "code"), (.opaque, "opaque"), (.flag, "flag"), (.version, "version"),
            (.language, "language"), (.remark, "remark"), (.extFields, "extFields"),
        ]
    }

    /// A cursor over the header bytes. Every read is bounds-checked; nothing traps on bad input.
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var i: Int
        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
            self.i = bytes.startIndex
        }

        var atEnd: Bool { i >= bytes.endIndex }
        func peek() -> UInt8? { i < bytes.endIndex ? bytes[i] : nil }
        mutating func advance() { i += 1 }

        mutating func next() throws(RemotingError) -> UInt8 {
            guard i < bytes.endIndex else { throw .malformedHeader("the header ends early") }
            defer { i += 1 }
            return bytes[i]
        }

        /// Moves past `b`, or throws. The check inlines; the error is built out of line.
        @inline(__always)
        mutating func expect(_ b: UInt8) throws(RemotingError) {
            if i < bytes.endIndex && bytes[i] == b {
                i += 1
                return
            }
            throw unexpected(b)
        }

        @inline(never)
        func unexpected(_ b: UInt8) -> RemotingError {
            guard i < bytes.endIndex else { return .malformedHeader("the header ends early") }
            return .malformedHeader("expected \"\(Character(Unicode.Scalar(b)))\" at byte \(i - bytes.startIndex)")
        }

        mutating func skipSpace() {
            while let b = peek(), b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { i += 1 }
        }

        func isNull() -> Bool { peek() == UInt8(ascii: "n") }

        /// Moves past string bytes that need no decoding: up to a quote, a backslash, or the end.
        /// Throws on a control character (JSON does not allow them raw).
        /// Returns the bytes it passed, or'ed together (`>= 0x80`: not all ASCII).
        @discardableResult
        mutating func scanPlain() throws(RemotingError) -> UInt8 {
            var k = i
            var all: UInt8 = 0
            let end = bytes.endIndex
            while k < end {
                let b = bytes[k]
                if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") { break }
                if b < 0x20 { i = k; throw .malformedHeader("a control character inside a string") }
                all |= b
                k += 1
            }
            i = k
            return all
        }

        static let oneByteStrings: [String] = (0..<128).map { String(Unicode.Scalar(UInt8($0))) }

        /// A top-level key, matched on its bytes (no string is made for the seven RaftMQ reads);
        /// `.other` for anything else.
        mutating func topLevelKey() throws(RemotingError) -> (key: TopLevelKey, start: Int) {
            try expect(UInt8(ascii: "\""))
            let start = i
            try scanPlain()
            guard peek() == UInt8(ascii: "\"") else {
                // An escaped key: decoded, then matched like any other.
                i = start - 1
                let decoded = try string()
                for (k, name) in TopLevelKey.names where decoded == name.description { return (k, start) }
                return (.other, start)
            }
            let text = UnsafeRawBufferPointer(rebasing: bytes[start..<i])
            i += 1
            for (k, name) in TopLevelKey.names where name.utf8CodeUnitCount == text.count
                && memcmp(name.utf8Start, text.baseAddress!, text.count) == 0 {
                return (k, start)
            }
            return (.other, start)
        }

        mutating func null() throws(RemotingError) {
            for b in "null".utf8 { try expect(b) }
        }

        mutating func string() throws(RemotingError) -> String {
            try expect(UInt8(ascii: "\""))
            let start = i
            // Fast path: no escapes.
            try scanPlain()
            if peek() == UInt8(ascii: "\"") {
                defer { i += 1 }
                // One-byte strings (SEND_MESSAGE_V2's field names, "0", "4") from a table.
                if i == start + 1, bytes[start] < 0x80 { return Self.oneByteStrings[Int(bytes[start])] }
                return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
            }
            // Escapes (RocketMQ's properties carry \u0001 and \u0002 between names and values): the
            // text is decoded straight into the string's storage, sized by the escaped text (no
            // escape decodes to more bytes than it takes), so one allocation instead of a buffer
            // and its copy. Ill-formed UTF-8 is repaired, as `String(decoding:)` does.
            var end = i
            while end < bytes.count && bytes[end] != UInt8(ascii: "\"") {
                end += bytes[end] == UInt8(ascii: "\\") ? 2 : 1
            }
            var failure: RemotingError?
            let text = String(unsafeUninitializedCapacity: end - start) { out -> Int in
                var n = 0
                for b in UnsafeRawBufferPointer(rebasing: bytes[start..<i]) {
                    out[n] = b
                    n += 1
                }
                do throws(RemotingError) {
                    while true {
                        let b = try next()
                        switch b {
                        case UInt8(ascii: "\""):
                            return n
                        case UInt8(ascii: "\\"):
                            let e = try next()
                            var unit: UInt8
                            switch e {
                            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): unit = e
                            case UInt8(ascii: "b"): unit = 0x08
                            case UInt8(ascii: "f"): unit = 0x0C
                            case UInt8(ascii: "n"): unit = 0x0A
                            case UInt8(ascii: "r"): unit = 0x0D
                            case UInt8(ascii: "t"): unit = 0x09
                            case UInt8(ascii: "u"):
                                var scalar = try hex4()
                                if (0xD800..<0xDC00).contains(scalar) {
                                    // A surrogate pair: \uD83D\uDE00.
                                    try expect(UInt8(ascii: "\\"))
                                    try expect(UInt8(ascii: "u"))
                                    let low = try hex4()
                                    guard (0xDC00..<0xE000).contains(low) else { throw .malformedHeader("a lone surrogate in a string") }
                                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                                }
                                guard let u = Unicode.Scalar(scalar) else { throw .malformedHeader("a lone surrogate in a string") }
                                for unit in UTF8.encode(u)! {
                                    out[n] = unit
                                    n += 1
                                }
                                continue
                            default:
                                throw .malformedHeader("an unknown escape \\\(Character(Unicode.Scalar(e)))")
                            }
                            out[n] = unit
                            n += 1
                        default:
                            if b < 0x20 { throw .malformedHeader("a control character inside a string") }
                            out[n] = b
                            n += 1
                        }
                    }
                } catch {
                    failure = error
                    return 0
                }
            }
            if let failure { throw failure }
            return text
        }

        mutating func hex4() throws(RemotingError) -> UInt32 {
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = try next()
                let d: UInt32
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(b - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(b - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(b - UInt8(ascii: "A") + 10)
                default: throw .malformedHeader("a bad \\u escape")
                }
                v = v << 4 | d
            }
            return v
        }

        /// The text of a JSON number, checked against the JSON grammar.
        mutating func numberText() throws(RemotingError) -> String {
            let range = try numberRange()
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }

        /// Moves past a JSON number, checked against the JSON grammar; where its text lies.
        mutating func numberRange() throws(RemotingError) -> Range<Int> {
            let start = i
            if peek() == UInt8(ascii: "-") { i += 1 }
            var digits = 0
            while let b = peek(), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { i += 1; digits += 1 }
            if digits == 0 { throw .malformedHeader("a number without digits") }
            if peek() == UInt8(ascii: ".") {
                i += 1
                var frac = 0
                while let b = peek(), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { i += 1; frac += 1 }
                if frac == 0 { throw .malformedHeader("a number without digits after the point") }
            }
            if let b = peek(), b == UInt8(ascii: "e") || b == UInt8(ascii: "E") {
                i += 1
                if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { i += 1 }
                var exp = 0
                while let b = peek(), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { i += 1; exp += 1 }
                if exp == 0 { throw .malformedHeader("a number without exponent digits") }
            }
            return start..<i
        }

        mutating func int32(_ key: String) throws(RemotingError) -> Int32 {
            let text = try numberText()
            guard let v = Int32(text) else { throw .malformedHeader("\"\(key)\": \(text) is not a 32-bit integer") }
            return v
        }

        /// A value in `extFields`, where its bytes lie.
        enum FieldValue {
            /// Between the quotes; `escaped` when it holds a backslash.
            case string(Range<Int>, escaped: Bool)
            /// A number, `true` or `false`: its text is its value (C++ clients send them bare).
            case text(Range<Int>)
            /// Left out, as fastjson leaves out nulls.
            case null
        }

        /// `extFields`: an object whose values are strings, or numbers and booleans (C++ clients), or
        /// null. Calls `field` with each name and value where they lie, building nothing; every
        /// string is checked as `string()` would read it.
        mutating func walkFields(_ field: (_ key: (range: Range<Int>, escaped: Bool), _ value: FieldValue) -> Void) throws(RemotingError) {
            try expect(UInt8(ascii: "{"))
            skipSpace()
            if peek() == UInt8(ascii: "}") {
                i += 1
                return
            }
            while true {
                skipSpace()
                let key = try skipString()
                skipSpace()
                try expect(UInt8(ascii: ":"))
                skipSpace()
                let value: FieldValue
                switch peek() {
                case UInt8(ascii: "\""):
                    let s = try skipString()
                    value = .string(s.range, escaped: s.escaped)
                case UInt8(ascii: "t"):
                    let start = i
                    for b in "true".utf8 { try expect(b) }
                    value = .text(start..<i)
                case UInt8(ascii: "f"):
                    let start = i
                    for b in "false".utf8 { try expect(b) }
                    value = .text(start..<i)
                case UInt8(ascii: "n"):
                    try null()
                    value = .null
                case .some(let b) where b == UInt8(ascii: "-") || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")):
                    value = .text(try numberRange())
                default:
                    throw .malformedHeader("extFields.\(decoded(key.range, escaped: key.escaped)) is not a string, number or boolean")
                }
                field(key, value)
                skipSpace()
                let b = try next()
                if b == UInt8(ascii: "}") { return }
                if b != UInt8(ascii: ",") { throw .malformedHeader("expected , or } in extFields") }
            }
        }

        /// `extFields` as a dictionary; a repeated name keeps its last value.
        mutating func stringMap() throws(RemotingError) -> [String: String] {
            // A send carries 11-13 fields: room for them at once instead of three regrowths.
            var map = [String: String](minimumCapacity: 16)
            let reader = self
            try walkFields { key, value in
                if let v = reader.text(value) { map[reader.decoded(key.range, escaped: key.escaped)] = v }
            }
            return map
        }

        /// Moves past a string, checking it as `string()` does, without building it: the range
        /// between its quotes, and whether its bytes are not its text (`escaped`: an escape, or a
        /// byte that is not ASCII, which may not be UTF-8 and is then repaired as `string()`
        /// repairs it; either way the text is read through `string()`).
        mutating func skipString() throws(RemotingError) -> (range: Range<Int>, escaped: Bool) {
            try expect(UInt8(ascii: "\""))
            let start = i
            var escaped = false
            while true {
                if try scanPlain() >= 0x80 { escaped = true }
                if try next() == UInt8(ascii: "\"") { return (start..<(i - 1), escaped) }
                // A backslash.
                escaped = true
                let e = try next()
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    let scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        try expect(UInt8(ascii: "\\"))
                        try expect(UInt8(ascii: "u"))
                        guard (0xDC00..<0xE000).contains(try hex4()) else { throw .malformedHeader("a lone surrogate in a string") }
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        throw .malformedHeader("a lone surrogate in a string")
                    }
                default:
                    throw .malformedHeader("an unknown escape \\\(Character(Unicode.Scalar(e)))")
                }
            }
        }

        /// The string between the quotes at `range` (found by `skipString`, so already checked).
        func decoded(_ range: Range<Int>, escaped: Bool) -> String {
            if !escaped {
                if range.count == 1, bytes[range.lowerBound] < 0x80 { return Self.oneByteStrings[Int(bytes[range.lowerBound])] }
                return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            }
            var r = self
            r.i = range.lowerBound - 1
            return (try? r.string()) ?? ""
        }

        /// A field's value as the dictionary holds it; nil for null.
        func text(_ value: FieldValue) -> String? {
            switch value {
            case .string(let range, let escaped): return decoded(range, escaped: escaped)
            case .text(let range): return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            case .null: return nil
            }
        }

        /// Whether the name at `key` is `name` (UTF-8).
        func key(_ key: (range: Range<Int>, escaped: Bool), is name: UnsafeRawBufferPointer) -> Bool {
            if key.escaped {
                var decoded = decoded(key.range, escaped: true)
                return decoded.withUTF8 { $0.count == name.count && (name.isEmpty || memcmp($0.baseAddress!, name.baseAddress!, name.count) == 0) }
            }
            return key.range.count == name.count && (name.isEmpty || memcmp(bytes.baseAddress! + key.range.lowerBound, name.baseAddress!, name.count) == 0)
        }

        /// Skips any JSON value (an unknown key's), nesting at most `maxSkippedDepth` deep.
        mutating func skipValue() throws(RemotingError) {
            var closers: [UInt8] = []
            repeat {
                skipSpace()
                guard let b = peek() else { throw .malformedHeader("the header ends inside a value") }
                switch b {
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    guard closers.count < JSONHeader.maxSkippedDepth else { throw .malformedHeader("values nested too deep") }
                    i += 1
                    closers.append(b == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]"))
                    skipSpace()
                    if peek() == closers.last { i += 1; closers.removeLast(); break }
                    if closers.last == UInt8(ascii: "}") { _ = try string(); skipSpace(); try expect(UInt8(ascii: ":")) }
                    continue
                case UInt8(ascii: "\""): _ = try string()
                case UInt8(ascii: "t"): for c in "true".utf8 { try expect(c) }
                case UInt8(ascii: "f"): for c in "false".utf8 { try expect(c) }
                case UInt8(ascii: "n"): try null()
                default: _ = try numberText()
                }
                // After a value inside a container: a comma (and, in an object, the next key) or the closer.
                while let closer = closers.last {
                    skipSpace()
                    let c = try next()
                    if c == closer { closers.removeLast(); continue }
                    guard c == UInt8(ascii: ",") else { throw .malformedHeader("expected , or \(Character(Unicode.Scalar(closer))) in a value") }
                    if closer == UInt8(ascii: "}") { skipSpace(); _ = try string(); skipSpace(); try expect(UInt8(ascii: ":")) }
                    break
                }
            } while !closers.isEmpty
        }
    }
}
