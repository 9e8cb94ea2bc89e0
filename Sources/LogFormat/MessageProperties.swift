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
    /// What `decode(text)` with `name` set to `value` and `removing` dropped would encode to, built
    /// from `text`'s bytes without decoding them (every send's path): nil when `text` is not in the
    /// form `encoded()` writes, give or take one trailing 0x02 (a pair without a name or value, a
    /// second 0x01 in a pair, a repeated name, an empty pair), when it holds `unlessPresent`, or when `value` holds a separator; the
    /// caller then takes the general path. The set pair keeps its place, or comes last; an empty
    /// `value` drops it, as `encoded()` does.
    public static func rewritten(_ text: String, setting name: String, to value: String, removing: String,
                                 unlessPresent bail: String) -> [UInt8]? {
        var text = text, name = name, value = value, removing = removing, bail = bail
        if value.utf8.contains(where: { $0 == nameValueSeparator || $0 == pairSeparator }) { return nil }
        return text.withUTF8 { t in name.withUTF8 { n in value.withUTF8 { v in removing.withUTF8 { r in bail.withUTF8 { b in
            rewrite(UnsafeRawBufferPointer(t), name: UnsafeRawBufferPointer(n), value: UnsafeRawBufferPointer(v),
                    removing: UnsafeRawBufferPointer(r), bail: UnsafeRawBufferPointer(b))
        } } } } }
    }

    private static func rewrite(_ t: UnsafeRawBufferPointer, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer,
                                removing: UnsafeRawBufferPointer, bail: UnsafeRawBufferPointer) -> [UInt8]? {
        func same(_ a: Range<Int>, _ key: UnsafeRawBufferPointer) -> Bool {
            guard a.count == key.count else { return false }
            for k in 0..<key.count where t[a.lowerBound + k] != key[k] { return false }
            return true
        }
        func same(_ a: Range<Int>, _ b: Range<Int>) -> Bool {
            guard a.count == b.count else { return false }
            for k in 0..<a.count where t[a.lowerBound + k] != t[b.lowerBound + k] { return false }
            return true
        }
        // The names seen so far, for the repeated-name check (a few pairs: a linear scan), in
        // temporary memory (no allocation for a text of a few pairs); a pair takes at least 3 bytes.
        return withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: t.count / 3 + 1) { names -> [UInt8]? in
            var nameCount = 0
            var out: [UInt8] = []
            out.reserveCapacity(t.count + name.count + value.count + 2)
            func put(_ n: UnsafeRawBufferPointer, _ v: UnsafeRawBufferPointer) {
                if !out.isEmpty { out.append(pairSeparator) }
                out.append(contentsOf: n.bindMemory(to: UInt8.self))
                out.append(nameValueSeparator)
                out.append(contentsOf: v.bindMemory(to: UInt8.self))
            }
            var setDone = false
            var start = 0
            let count = t.count
            // One trailing 0x02 (Go and C++ clients, older Java ones) ends the text like its end does.
            while start < count {
                var end = start
                var sep = -1
                while end < count && t[end] != pairSeparator {
                    if t[end] == nameValueSeparator {
                        if sep >= 0 { return nil }
                        sep = end
                    }
                    end += 1
                }
                // An empty pair (a leading or doubled 0x02), no 0x01, an empty name or value.
                guard sep > start, sep + 1 < end else { return nil }
                let key = start..<sep
                for k in 0..<nameCount where same(names[k], key) { return nil }
                names.initializeElement(at: nameCount, to: key)
                nameCount += 1
                if same(key, bail) { return nil }
                if same(key, name) {
                    setDone = true
                    if !value.isEmpty { put(name, value) }
                } else if !same(key, removing) {
                    put(UnsafeRawBufferPointer(rebasing: t[key]), UnsafeRawBufferPointer(rebasing: t[(sep + 1)..<end]))
                }
                start = end + 1
            }
            if !setDone, !value.isEmpty { put(name, value) }
            return out
        }
    }
}
