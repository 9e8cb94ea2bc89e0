import NIOCore

/// The JSON header (rocketmq-protocol.md §1.3). Written as fastjson writes it (keys in alphabetical
/// order, no nulls, `extFields` always present with string values); read tolerantly, as real clients
/// send it: a trailing newline (C++), numbers and booleans in `extFields` (C++), unknown keys,
/// missing `remark` or `extFields`.
enum JSONHeader {
    /// Nesting a skipped value may have (an unknown key's value); deeper is malformed.
    static let maxSkippedDepth = 32

    static func write(_ c: RemotingCommand, into out: inout ByteBuffer) {
        out.writeStaticString("{\"code\":")
        out.writeString(String(c.code))
        out.writeStaticString(",\"extFields\":{")
        var first = true
        for key in c.extFields.keys.sorted() {
            if !first { out.writeInteger(UInt8(ascii: ",")) }
            first = false
            writeQuoted(key, into: &out)
            out.writeInteger(UInt8(ascii: ":"))
            writeQuoted(c.extFields[key]!, into: &out)
        }
        out.writeStaticString("},\"flag\":")
        out.writeString(String(c.flag))
        out.writeStaticString(",\"language\":\"")
        out.writeString(c.language.name)
        out.writeStaticString("\",\"opaque\":")
        out.writeString(String(c.opaque))
        if let remark = c.remark {
            out.writeStaticString(",\"remark\":")
            writeQuoted(remark, into: &out)
        }
        out.writeStaticString(",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":")
        out.writeString(String(c.version))
        out.writeInteger(UInt8(ascii: "}"))
    }

    static func writeQuoted(_ s: String, into out: inout ByteBuffer) {
        out.writeInteger(UInt8(ascii: "\""))
        var plainStart = s.utf8.startIndex
        var i = plainStart
        let utf8 = s.utf8
        while i != utf8.endIndex {
            let b = utf8[i]
            if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b < 0x20 {
                out.writeBytes(utf8[plainStart..<i])
                switch b {
                case UInt8(ascii: "\""): out.writeStaticString("\\\"")
                case UInt8(ascii: "\\"): out.writeStaticString("\\\\")
                case 0x0A: out.writeStaticString("\\n")
                case 0x0D: out.writeStaticString("\\r")
                case 0x09: out.writeStaticString("\\t")
                default:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    out.writeStaticString("\\u00")
                    out.writeInteger(hex[Int(b >> 4)])
                    out.writeInteger(hex[Int(b & 0xF)])
                }
                plainStart = utf8.index(after: i)
            }
            i = utf8.index(after: i)
        }
        out.writeBytes(utf8[plainStart..<utf8.endIndex])
        out.writeInteger(UInt8(ascii: "\""))
    }

    /// Reads a header of `length` bytes from `buffer`.
    static func read(_ header: ByteBufferView) throws(RemotingError) -> RemotingCommand {
        // Over the bytes themselves: a view's subscript costs a bounds check and an indirection per
        // byte (measured: this parser was 7 % of a leader's CPU at 1 KiB sends when it read the view).
        let result = header.withContiguousStorageIfAvailable { bytes -> Result<RemotingCommand, RemotingError> in
            do throws(RemotingError) { return .success(try read(UnsafeRawBufferPointer(bytes))) } catch { return .failure(error) }
        } ?? Array(header).withUnsafeBytes { bytes -> Result<RemotingCommand, RemotingError> in
            do throws(RemotingError) { return .success(try read(bytes)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    static func read(_ header: UnsafeRawBufferPointer) throws(RemotingError) -> RemotingCommand {
        var r = Reader(bytes: header)
        var code: Int32?, opaque: Int32?
        var flag: Int32 = 0, version: Int32 = 0
        var language = LanguageCode.other
        var remark: String?
        var ext: [String: String] = [:]
        r.skipSpace()
        try r.expect(UInt8(ascii: "{"))
        r.skipSpace()
        if r.peek() == UInt8(ascii: "}") {
            r.advance()
        } else {
            while true {
                r.skipSpace()
                let key = try r.string()
                r.skipSpace()
                try r.expect(UInt8(ascii: ":"))
                r.skipSpace()
                switch key {
                case "code": code = try r.int32(key)
                case "opaque": opaque = try r.int32(key)
                case "flag": flag = try r.int32(key)
                case "version": version = try r.int32(key)
                case "language": language = LanguageCode(name: try r.string())
                case "remark":
                    if r.isNull() { try r.null() } else { remark = try r.string() }
                case "extFields":
                    if r.isNull() { try r.null() } else { ext = try r.stringMap() }
                default: try r.skipValue()
                }
                r.skipSpace()
                let b = try r.next()
                if b == UInt8(ascii: "}") { break }
                if b != UInt8(ascii: ",") { throw .malformedHeader("expected , or } after the value of \"\(key)\"") }
            }
        }
        r.skipSpace()  // C++ clients end the header with a newline
        guard r.atEnd else { throw .malformedHeader("bytes after the header object") }
        guard let code else { throw .malformedHeader("no \"code\"") }
        guard let opaque else { throw .malformedHeader("no \"opaque\"") }
        return RemotingCommand(code: code, language: language, version: version, opaque: opaque, flag: flag,
                               remark: remark, extFields: ext, serializeType: .json)
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

        mutating func expect(_ b: UInt8) throws(RemotingError) {
            let got = try next()
            if got != b { throw .malformedHeader("expected \"\(Character(Unicode.Scalar(b)))\" at byte \(i - 1 - bytes.startIndex)") }
        }

        mutating func skipSpace() {
            while let b = peek(), b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { i += 1 }
        }

        func isNull() -> Bool { peek() == UInt8(ascii: "n") }

        mutating func null() throws(RemotingError) {
            for b in "null".utf8 { try expect(b) }
        }

        mutating func string() throws(RemotingError) -> String {
            try expect(UInt8(ascii: "\""))
            let start = i
            // Fast path: no escapes.
            while let b = peek(), b != UInt8(ascii: "\""), b != UInt8(ascii: "\\") {
                if b < 0x20 { throw .malformedHeader("a control character inside a string") }
                i += 1
            }
            if peek() == UInt8(ascii: "\"") {
                defer { i += 1 }
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

        private mutating func hex4() throws(RemotingError) -> UInt32 {
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
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        }

        mutating func int32(_ key: String) throws(RemotingError) -> Int32 {
            let text = try numberText()
            guard let v = Int32(text) else { throw .malformedHeader("\"\(key)\": \(text) is not a 32-bit integer") }
            return v
        }

        /// `extFields`: an object whose values are strings, or numbers and booleans (C++ clients), or null
        /// (dropped, as fastjson drops them).
        mutating func stringMap() throws(RemotingError) -> [String: String] {
            try expect(UInt8(ascii: "{"))
            // A send carries 11-13 fields: room for them at once instead of three regrowths.
            var map = [String: String](minimumCapacity: 16)
            skipSpace()
            if peek() == UInt8(ascii: "}") {
                i += 1
                return map
            }
            while true {
                skipSpace()
                let key = try string()
                skipSpace()
                try expect(UInt8(ascii: ":"))
                skipSpace()
                switch peek() {
                case UInt8(ascii: "\""): map[key] = try string()
                case UInt8(ascii: "t"):
                    for b in "true".utf8 { try expect(b) }
                    map[key] = "true"
                case UInt8(ascii: "f"):
                    for b in "false".utf8 { try expect(b) }
                    map[key] = "false"
                case UInt8(ascii: "n"): try null()
                case .some(let b) where b == UInt8(ascii: "-") || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")):
                    map[key] = try numberText()
                default:
                    throw .malformedHeader("extFields.\(key) is not a string, number or boolean")
                }
                skipSpace()
                let b = try next()
                if b == UInt8(ascii: "}") { return map }
                if b != UInt8(ascii: ",") { throw .malformedHeader("expected , or } in extFields") }
            }
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
