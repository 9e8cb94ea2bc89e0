/// One configuration key: its name (and legacy spellings), a one-line doc for conf/broker.conf, how
/// to apply a text value and how to print the effective value.
struct ConfigKey<Root> {
    let name: String
    let aliases: [String]
    let section: String
    let doc: String
    let apply: (inout Root, String) throws(ValueError) -> Void
    let render: (Root) -> String

    static func int(_ name: String, _ path: WritableKeyPath<Root, Int64>, _ range: ClosedRange<Int64>, section: String, aliases: [String] = [], _ doc: String) -> Self {
        ConfigKey(name: name, aliases: aliases, section: section, doc: doc, apply: { (root: inout Root, text: String) throws(ValueError) in
            root[keyPath: path] = try Values.int(text, range)
        }, render: { String($0[keyPath: path]) })
    }

    static func port(_ name: String, _ path: WritableKeyPath<Root, Int>, section: String, _ doc: String) -> Self {
        ConfigKey(name: name, aliases: [], section: section, doc: doc, apply: { (root: inout Root, text: String) throws(ValueError) in
            root[keyPath: path] = try Values.port(text)
        }, render: { String($0[keyPath: path]) })
    }

    static func bool(_ name: String, _ path: WritableKeyPath<Root, Bool>, section: String, _ doc: String) -> Self {
        ConfigKey(name: name, aliases: [], section: section, doc: doc, apply: { (root: inout Root, text: String) throws(ValueError) in
            root[keyPath: path] = try Values.bool(text)
        }, render: { String($0[keyPath: path]) })
    }

    static func string(_ name: String, _ path: WritableKeyPath<Root, String>, section: String, check: ((String) throws(ValueError) -> String)? = nil, _ doc: String) -> Self {
        ConfigKey(name: name, aliases: [], section: section, doc: doc, apply: { (root: inout Root, text: String) throws(ValueError) in
            root[keyPath: path] = try check?(text) ?? text
        }, render: { $0[keyPath: path] })
    }

    static func enumeration<E: RawRepresentable & CaseIterable>(_ name: String, _ path: WritableKeyPath<Root, E>, section: String, _ doc: String) -> Self where E.RawValue == String {
        ConfigKey(name: name, aliases: [], section: section, doc: doc, apply: { (root: inout Root, text: String) throws(ValueError) in
            guard let v = E(rawValue: text.uppercased()) else {
                throw ValueError("\(text.debugDescription) is not one of \(E.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            root[keyPath: path] = v
        }, render: { $0[keyPath: path].rawValue })
    }

    /// A value with a derived default: stored as an optional, printed as the effective value.
    static func derivedString(_ name: String, _ path: WritableKeyPath<Root, String?>, effective: @escaping (Root) -> String, section: String, _ doc: String) -> Self {
        ConfigKey(name: name, aliases: [], section: section, doc: doc, apply: { (root: inout Root, text: String) throws(ValueError) in
            guard !text.isEmpty else { throw ValueError("must not be empty") }
            root[keyPath: path] = text
        }, render: effective)
    }
}
