import NIOCore

/// One RocketMQ remoting frame, request or response (rocketmq-protocol.md §1). The same type travels
/// both ways on a connection; `opaque` matches a response to its request.
public struct RemotingCommand: Sendable, Equatable {
    /// The request code of a request, the response code of a response.
    public var code: Int32
    public var language: LanguageCode
    /// The sender's MQVersion ordinal (RaftMQ sends 396, V4_9_1).
    public var version: Int32
    public var opaque: Int32
    /// bit 0: response; bit 1: one-way request.
    public var flag: Int32
    public var remark: String?
    /// The command's custom header, as strings (numbers and booleans a client sent read as their
    /// text). Read from a JSON header only when asked (`ExtFields`).
    public var extFields: ExtFields
    /// How the header was or will be serialized. Answers use the request's.
    public var serializeType: SerializeType
    public var body: ByteBuffer?

    public static let responseFlag: Int32 = 0x1
    public static let onewayFlag: Int32 = 0x2
    /// What RaftMQ stamps on the commands it creates: Apache RocketMQ 4.9.1's version ordinal.
    public static let ourVersion: Int32 = 396

    public init(code: Int32, language: LanguageCode = .java, version: Int32 = RemotingCommand.ourVersion, opaque: Int32,
                flag: Int32 = 0, remark: String? = nil, extFields: ExtFields = [:],
                serializeType: SerializeType = .json, body: ByteBuffer? = nil) {
        self.code = code
        self.language = language
        self.version = version
        self.opaque = opaque
        self.flag = flag
        self.remark = remark
        self.extFields = extFields
        self.serializeType = serializeType
        self.body = body
    }

    public var isResponse: Bool { flag & Self.responseFlag != 0 }
    public var isOneway: Bool { flag & Self.onewayFlag != 0 }

    /// A request (or a one-way request) with a fresh opaque chosen by the caller.
    public static func request(code: Int32, opaque: Int32, extFields: ExtFields = [:], body: ByteBuffer? = nil,
                               oneway: Bool = false, serializeType: SerializeType = .json) -> RemotingCommand {
        RemotingCommand(code: code, opaque: opaque, flag: oneway ? onewayFlag : 0, extFields: extFields,
                        serializeType: serializeType, body: body)
    }

    /// The answer to `request`: same opaque and serialization, the response bit set, RaftMQ's language
    /// and version (rocketmq-protocol.md §9 item 3).
    public static func response(to request: RemotingCommand, code: Int32, remark: String? = nil,
                                extFields: ExtFields = [:], body: ByteBuffer? = nil) -> RemotingCommand {
        RemotingCommand(code: code, opaque: request.opaque, flag: responseFlag, remark: remark, extFields: extFields,
                        serializeType: request.serializeType, body: body)
    }
}

/// The header serialization: the top byte of the frame's header-length word.
public enum SerializeType: UInt8, Sendable, Equatable, CustomStringConvertible {
    case json = 0
    case rocketmq = 1
    public var description: String { self == .json ? "JSON" : "ROCKETMQ" }
}

/// RocketMQ's LanguageCode: its name in JSON headers, its byte in ROCKETMQ headers.
public enum LanguageCode: UInt8, Sendable, Equatable, CaseIterable {
    case java = 0, cpp, dotnet, python, delphi, erlang, ruby, other, http, go, php, oms

    public var name: String {
        switch self {
        case .java: return "JAVA"
        case .cpp: return "CPP"
        case .dotnet: return "DOTNET"
        case .python: return "PYTHON"
        case .delphi: return "DELPHI"
        case .erlang: return "ERLANG"
        case .ruby: return "RUBY"
        case .other: return "OTHER"
        case .http: return "HTTP"
        case .go: return "GO"
        case .php: return "PHP"
        case .oms: return "OMS"
        }
    }

    /// An unknown name is OTHER: a client's language never decides whether we answer it.
    public init(name: String) {
        self = LanguageCode.allCases.first { $0.name == name } ?? .other
    }
}

/// Why bytes from the wire are not a command. The connection that sent them is closed.
public enum RemotingError: Error, Sendable, Equatable, CustomStringConvertible {
    case frameTooLarge(bytes: Int, limit: Int)
    case malformedFrame(String)
    case malformedHeader(String)

    public var description: String {
        switch self {
        case .frameTooLarge(let b, let l): return "a frame of \(b) bytes exceeds the limit of \(l) bytes"
        case .malformedFrame(let why): return "malformed frame: \(why)"
        case .malformedHeader(let why): return "malformed header: \(why)"
        }
    }
}
