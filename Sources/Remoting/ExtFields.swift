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
    }

    var storage: Storage

    public init() { storage = .map([:]) }
    public init(_ map: [String: String]) { storage = .map(map) }
    init(json: ByteBuffer) { storage = .json(json) }

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
        }
    }

    public subscript(name: String) -> String? {
        get {
            switch storage {
            case .map(let map): return map[name]
            case .json(let text): return JSONHeader.field(name, in: text)
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
        }
    }

    public static func == (a: ExtFields, b: ExtFields) -> Bool { a.dictionary == b.dictionary }

    public var description: String { dictionary.description }
}
