import NIOCore

/// A command's custom header (`extFields`): names and string values. A command built here holds a
/// dictionary; one read from a JSON header holds the header's `extFields` object as it came, checked
/// against the grammar when the frame was decoded and read only when asked. A lookup walks the object
/// without building the dictionary, and `forEachField` hands a reader each name's bytes with its
/// value read only on request: a send's processor reads the ten fields it needs in one walk, with no
/// dictionary, no hashing and no strings for the fields it skips (docs/performance.md, thirteenth
/// round). Every view gives what the dictionary would: numbers and booleans as their text, nulls
/// left out, a repeated name's last value.
public struct ExtFields: Sendable, Equatable, ExpressibleByDictionaryLiteral, Sequence, CustomStringConvertible {
    enum Storage: Sendable {
        case map([String: String])
        /// The `{...}` text of a JSON header's extFields, already checked by `JSONHeader.read`.
        case json(ByteBuffer)
        /// A send's answer, typed until it is written (no dictionary, no msgId string).
        case sendResponse(SendResponseFields)
    }

    var storage: Storage

    public init() { storage = .map([:]) }
    public init(_ map: [String: String]) { storage = .map(map) }
    init(json: ByteBuffer) { storage = .json(json) }
    /// A send's answer (SendMessageResponseHeader): every view shows its five fields as strings.
    public init(_ send: SendResponseFields) { storage = .sendResponse(send) }

    /// A repeated name keeps its last value (a JSON header's rule).
    public init(dictionaryLiteral elements: (String, String)...) {
        var map = [String: String](minimumCapacity: elements.count)
        for (key, value) in elements { map[key] = value }
        storage = .map(map)
    }

    /// Every field, as a dictionary (read from the JSON text when the command came from the wire).
    public var dictionary: [String: String] {
        switch storage {
        case .map(let map): return map
        case .json(let text): return JSONHeader.fieldMap(text)
        case .sendResponse(let f):
            var map = [String: String](minimumCapacity: 5)
            f.forEach { map[$0.description] = $1 }
            return map
        }
    }

    public subscript(name: String) -> String? {
        get {
            switch storage {
            case .map(let map): return map[name]
            case .json(let text): return JSONHeader.field(name, in: text)
            case .sendResponse(let f): return f.value(of: name)
            }
        }
        set {
            if case .map(var map) = storage {
                storage = .map([:])  // `map` is then the only reference: changed in place
                map[name] = newValue
                storage = .map(map)
            } else {
                var map = dictionary
                map[name] = newValue
                storage = .map(map)
            }
        }
    }

    public var count: Int { dictionary.count }
    public var isEmpty: Bool { count == 0 }
    public var keys: Dictionary<String, String>.Keys { dictionary.keys }

    public func makeIterator() -> Dictionary<String, String>.Iterator { dictionary.makeIterator() }

    /// Calls `body` with each field's name (as UTF-8) and a function that reads its value, in the
    /// order the fields came (a dictionary's order for one built here); a null value reads as nil.
    /// A repeated name comes once per occurrence: the last non-nil value is the field's.
    public func forEachField(_ body: (_ name: UnsafeRawBufferPointer, _ value: () -> String?) -> Void) {
        switch storage {
        case .map(let map):
            for (key, value) in map {
                var key = key
                key.withUTF8 { body(UnsafeRawBufferPointer($0), { value }) }
            }
        case .json(let text):
            JSONHeader.forEachField(in: text, body)
        case .sendResponse(let f):
            f.forEach { name, value in
                body(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount), { value })
            }
        }
    }

    public static func == (a: ExtFields, b: ExtFields) -> Bool { a.dictionary == b.dictionary }

    public var description: String { dictionary.description }
}

/// A send's answer fields (RocketMQ's SendMessageResponseHeader, as a Raft-group or classic broker
/// answers every stored send), kept typed until the header is written: the common answer then costs
/// no dictionary and no strings (docs/performance.md, fourteenth round). Views show them as the
/// dictionary `["MSG_REGION": region, "TRACE_ON": "true"|"false", "msgId": id, "queueId": "3",
/// "queueOffset": "42"]` would.
public struct SendResponseFields: Sendable, Equatable {
    /// The message id: RocketMQ's offsetMsgId of an IPv4 store host (the host's four bytes and port,
    /// then the physical offset, as 32 upper-case hex digits), or any text (an IPv6 host's, a batch's
    /// ids joined by commas).
    public enum MessageID: Sendable, Equatable {
        case ipv4(hostAndPort: UInt64, physicalOffset: Int64)
        case text(String)

        /// The id as its text.
        public var text: String {
            switch self {
            case let .ipv4(hostAndPort, offset):
                return String(unsafeUninitializedCapacity: 32) { out in
                    SendResponseFields.hex(hostAndPort, offset, into: out.baseAddress!)
                    return 32
                }
            case .text(let t): return t
            }
        }
    }

    public var msgId: MessageID
    public var queueId: Int32
    public var queueOffset: Int64
    public var region: String
    public var traceOn: Bool

    public init(msgId: MessageID, queueId: Int32, queueOffset: Int64, region: String, traceOn: Bool) {
        self.msgId = msgId
        self.queueId = queueId
        self.queueOffset = queueOffset
        self.region = region
        self.traceOn = traceOn
    }

    /// The names, in the order a fastjson header has them (sorted).
    static let names: [StaticString] = ["MSG_REGION", "TRACE_ON", "msgId", "queueId", "queueOffset"]

    /// 32 upper-case hex digits of the two words, big-endian.
    static func hex(_ a: UInt64, _ b: Int64, into out: UnsafeMutablePointer<UInt8>) {
        func digits(_ w: UInt64, _ at: Int) {
            for k in 0..<16 {
                let d = UInt8(truncatingIfNeeded: (w >> (4 * UInt64(15 - k))) & 0xF)
                out[at + k] = d < 10 ? d + 48 : d + 55
            }
        }
        digits(a, 0)
        digits(UInt64(bitPattern: b), 16)
    }

    func value(of name: String) -> String? {
        switch name {
        case "MSG_REGION": return region
        case "TRACE_ON": return traceOn ? "true" : "false"
        case "msgId": return msgId.text
        case "queueId": return String(queueId)
        case "queueOffset": return String(queueOffset)
        default: return nil
        }
    }

    /// Each name with its value, in `names`' order.
    func forEach(_ body: (StaticString, String) -> Void) {
        body(Self.names[0], region)
        body(Self.names[1], traceOn ? "true" : "false")
        body(Self.names[2], msgId.text)
        body(Self.names[3], String(queueId))
        body(Self.names[4], String(queueOffset))
    }
}
