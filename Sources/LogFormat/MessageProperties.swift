/// A message's user and system properties, in the order they were set.
///
/// Wire and disk form (RocketMQ `MessageDecoder.messageProperties2String`): `name 0x01 value`, pairs
/// joined by `0x02`, no trailing separator. Decoding follows Java's `string2messageProperties`: split
/// on 0x02, split each chunk at its first 0x01, skip chunks without a name or a value (Go and C++
/// clients add a trailing 0x02; Java drops empty values). A repeated name keeps its first place and
/// its last value, as a Java map would.
public struct MessageProperties: Equatable, Sendable, Sequence {
    public static let nameValueSeparator: UInt8 = 0x01
    public static let pairSeparator: UInt8 = 0x02
    /// The stored length is an int16.
    public static let encodedBytesMax = Int(Int16.max)

    public private(set) var pairs: [(name: String, value: String)] = []

    public init() {}

    public init(_ pairs: [(String, String)]) {
        for (name, value) in pairs { self[name] = value }
    }

    public subscript(name: String) -> String? {
        get { pairs.first(where: { $0.name == name })?.value }
        set {
            if let i = pairs.firstIndex(where: { $0.name == name }) {
                if let newValue { pairs[i].value = newValue } else { pairs.remove(at: i) }
            } else if let newValue {
                pairs.append((name, newValue))
            }
        }
    }

    public var count: Int { pairs.count }
    public var isEmpty: Bool { pairs.isEmpty }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { pairs.makeIterator() }

    public static func == (a: Self, b: Self) -> Bool {
        a.pairs.count == b.pairs.count && zip(a.pairs, b.pairs).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }

    /// The encoded bytes. Throws if a name or value contains a separator byte, or a name is empty;
    /// pairs with an empty value are left out (a reader would drop them anyway).
    public func encoded() throws(LogFormatError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(pairs.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 2 })
        for (name, value) in pairs where !value.isEmpty {
            guard !name.isEmpty else { throw .invalidProperty("empty property name") }
            // Straight from each string's UTF-8 (every send encodes its properties).
            if name.utf8.contains(where: { $0 == Self.nameValueSeparator || $0 == Self.pairSeparator }) {
                throw .invalidProperty("name \(name.debugDescription) contains a separator byte (0x01 or 0x02)")
            }
            if value.utf8.contains(where: { $0 == Self.nameValueSeparator || $0 == Self.pairSeparator }) {
                throw .invalidProperty("value of \(name) contains a separator byte (0x01 or 0x02)")
            }
            if !out.isEmpty { out.append(Self.pairSeparator) }
            out.append(contentsOf: name.utf8)
            out.append(Self.nameValueSeparator)
            out.append(contentsOf: value.utf8)
        }
        return out
    }

    /// Decodes the property string. Only invalid UTF-8 is an error; the rest is parsed leniently, as
    /// RocketMQ clients of every language do.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(LogFormatError) -> MessageProperties {
        var result = MessageProperties()
        var start = 0
        let n = bytes.count
        while start < n {
            var end = start
            while end < n && bytes[end] != pairSeparator { end += 1 }
            if let sep = (start..<end).first(where: { bytes[$0] == nameValueSeparator }), sep > start, sep + 1 < end {
                guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[start..<sep]), as: UTF8.self),
                    let value = String(validating: UnsafeRawBufferPointer(rebasing: bytes[(sep + 1)..<end]), as: UTF8.self)
                else { throw .invalidUTF8(field: "message properties") }
                result[name] = value
            }
            start = end + 1
        }
        return result
    }

    /// The value of `name` in encoded properties, as `decode(bytes)[name]` would give it (the last
    /// of repeated names; nil for a missing name, an empty value or invalid UTF-8), without decoding
    /// the other pairs.
    public static func value(of name: String, in bytes: UnsafeRawBufferPointer) -> String? {
        var found: Range<Int>?
        var start = 0
        let n = bytes.count
        var name = name
        return name.withUTF8 { key -> String? in
            while start < n {
                var end = start
                while end < n && bytes[end] != pairSeparator { end += 1 }
                // The chunk's name runs to its first 0x01; names hold no separator.
                if end - start > key.count + 1, bytes[start + key.count] == nameValueSeparator,
                   (0..<key.count).allSatisfy({ bytes[start + $0] == key[$0] }) {
                    found = (start + key.count + 1)..<end
                }
                start = end + 1
            }
            guard let found, !key.isEmpty else { return nil }
            return String(validating: UnsafeRawBufferPointer(rebasing: bytes[found]), as: UTF8.self)
        }
    }
}
