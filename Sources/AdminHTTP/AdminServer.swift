import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// One answer of the admin endpoint.
public struct AdminResponse: Sendable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: String
    public init(status: HTTPResponseStatus, contentType: String = "application/json", body: String) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    static func error(_ status: HTTPResponseStatus, _ message: String) -> AdminResponse {
        AdminResponse(status: status, body: "{\"error\":\"\(message)\",\"status\":\(status.code)}")
    }
}

/// The paths the admin endpoint serves (INTERFACES.md). Each is called on an event loop: keep it quick.
public struct AdminRoutes: Sendable {
    public var routes: [String: @Sendable () -> AdminResponse]
    public init(routes: [String: @Sendable () -> AdminResponse]) { self.routes = routes }
}

/// The broker's HTTP admin endpoint on `httpListenPort`: h2c with prior knowledge (libnghttp2) and
/// HTTP/1.1 (with keep-alive) on the same port, told apart by the first bytes (the HTTP/2 connection
/// preface). Unknown paths answer 404 with a JSON error, other methods than GET/HEAD 405.
public final class AdminServer: Sendable {
    private let host: String
    private let port: Int
    private let routes: AdminRoutes
    private let group: any EventLoopGroup
    private let logger: Logger

    public init(host: String, port: Int, routes: AdminRoutes, group: any EventLoopGroup, logger: Logger) {
        self.host = host
        self.port = port
        self.routes = routes
        self.group = group
        self.logger = logger
    }

    /// Serves until the task is cancelled.
    public func run(onBound: @Sendable (SocketAddress) -> Void = { _ in }) async throws {
        let routes = self.routes
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try AdminServer.configure(channel, routes: routes) }
            }
            .bind(host: host, port: port)
            .get()
        if let a = server.localAddress { onBound(a) }
        try await withTaskCancellationHandler {
            try await server.closeFuture.get()
        } onCancel: {
            server.close(promise: nil)
        }
    }

    /// Installs the handlers of one accepted connection (the protocol selector, which adds HTTP/1.1
    /// or h2c). Called on the channel's event loop; public for Fuzz/, which drives an EmbeddedChannel.
    public static func configure(_ channel: any Channel, routes: AdminRoutes) throws {
        try channel.pipeline.syncOperations.addHandler(ProtocolSelector(routes: routes))
    }

    /// What a request for `path` with `method` gets.
    static func answer(getOrHead: Bool, path: String, routes: AdminRoutes) -> AdminResponse {
        let bare = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        let printable = String(bare.unicodeScalars.prefix(200).filter { $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" })
        guard let route = routes.routes[bare] else { return .error(.notFound, "no such path: \(printable)") }
        guard getOrHead else { return .error(.methodNotAllowed, "only GET is served on \(printable)") }
        return route()
    }
}

/// HTTP/1.1: one answer per request, in order.
final class AdminHTTP1Handler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: AdminRoutes
    private var head: HTTPRequestHead?

    init(routes: AdminRoutes) { self.routes = routes }

    /// A request that is not GET or HEAD was answered at its head; the connection is closing.
    private var refused = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            // Answered at once, without reading a body the admin paths never take.
            if h.method != .GET && h.method != .HEAD {
                refused = true
                var closing = h
                closing.headers.replaceOrAdd(name: "Connection", value: "close")
                respond(context, closing)
            }
        case .body: break  // the admin paths take no body
        case .end:
            guard let h = head else { return }
            head = nil
            respond(context, h)
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ h: HTTPRequestHead) {
        let answer = AdminServer.answer(getOrHead: h.method == .GET || h.method == .HEAD, path: h.uri, routes: routes)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: answer.contentType)
        headers.add(name: "Content-Length", value: String(answer.body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        let keepAlive = h.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: answer.status, headers: headers))), promise: nil)
        if h.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: answer.body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in loopBound.value.close(promise: nil) }
        }
    }
}

/// Bounds an HTTP/1.1 request head (NIO's decoder would buffer a head of any size): more than
/// `maxHeadBytes` before the blank line that ends it is answered 431 and the connection closed.
/// Bytes are counted from the end of the previous head; the admin paths take no bodies.
final class RequestHeadLimit: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer
    static let maxHeadBytes = 16 << 10

    private var count = 0
    /// How much of "\r\n\r\n" the last bytes matched.
    private var matched = 0
    private var refused = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let bytes = unwrapInboundIn(data)
        for b in bytes.readableBytesView {
            count += 1
            switch (matched, b) {
            case (0, 13), (2, 13): matched += 1
            case (1, 10), (3, 10): matched += 1
            case (_, 13): matched = 1
            default: matched = 0
            }
            if matched == 4 {
                matched = 0
                count = 0
            } else if count > Self.maxHeadBytes {
                refused = true
                let body = #"{"error":"the request head is over \#(Self.maxHeadBytes) bytes"}"#
                let text = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
                let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text))).whenComplete { _ in loopBound.value.close(promise: nil) }
                return
            }
        }
        context.fireChannelRead(data)
    }
}

/// Looks at a connection's first bytes: the HTTP/2 preface (`PRI * HTTP/2.0...`) selects h2c, anything
/// else HTTP/1.1. nghttp2 would answer an HTTP/1.1 request with GOAWAY, so the choice comes first.
final class ProtocolSelector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let routes: AdminRoutes
    private var buffered: ByteBuffer?

    init(routes: AdminRoutes) { self.routes = routes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil { buffered = incoming } else { buffered!.writeBuffer(&incoming) }
        let seen = buffered!.readableBytesView
        let n = min(seen.count, Self.preface.count)
        let matches = seen.prefix(n).elementsEqual(Self.preface.prefix(n))
        if matches && seen.count < Self.preface.count { return }  // not enough bytes to decide yet
        do {
            let ops = context.pipeline.syncOperations
            if matches {
                try ops.addHandler(HTTP2AdminHandler(routes: routes), position: .after(self))
            } else {
                let limit = RequestHeadLimit()
                try ops.addHandler(limit, position: .after(self))
                try ops.configureHTTPServerPipeline(position: .after(limit), withErrorHandling: true)
                try ops.addHandler(AdminHTTP1Handler(routes: routes))
            }
        } catch {
            context.close(promise: nil)
            return
        }
        let bytes = buffered!
        buffered = nil
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
