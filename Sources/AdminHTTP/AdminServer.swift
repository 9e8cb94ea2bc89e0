import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// One answer of the admin endpoint.
public struct AdminResponse: Sendable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: String
    /// More response headers (names in lower case), after Content-Type, Content-Length and Cache-Control.
    public var headers: [(String, String)]
    public init(status: HTTPResponseStatus, contentType: String = "application/json", body: String, headers: [(String, String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    /// A JSON error object `{"error": message, "status": code}`.
    public static func error(_ status: HTTPResponseStatus, _ message: String) -> AdminResponse {
        AdminResponse(status: status, body: "{\"error\":\"\(String(message.unicodeScalars.filter { $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" }))\",\"status\":\(status.code)}")
    }
}

/// A request as a route sees it: the method, the request target and its path (the target without
/// its query), the few headers the admin paths look at, and the body (at most `AdminServer.maxBodyBytes`).
public struct AdminRequest: Sendable {
    public var method: String
    public var target: String
    public var path: String
    /// `content-type`, `origin` and `host` (HTTP/2's `:authority`), when the request had them.
    public var headers: [String: String]
    public var body: [UInt8]

    public init(method: String, target: String, headers: [String: String] = [:], body: [UInt8] = []) {
        self.method = method
        self.target = target
        path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        self.headers = headers
        self.body = body
    }

    /// True when a browser on another site could have sent it: an `Origin` that is not this host.
    /// (A cross-site page can POST forms without asking; a JSON POST needs a preflight we never grant.)
    public var isCrossOrigin: Bool {
        guard let origin = headers["origin"] else { return false }
        guard let host = headers["host"] else { return true }
        return origin != "http://" + host
    }
}

/// One path's handler and the methods it takes (HEAD goes wherever GET does).
public struct AdminRoute: Sendable {
    enum Handler: Sendable {
        case now(@Sendable (AdminRequest) -> AdminResponse)
        case later(@Sendable (AdminRequest) async -> AdminResponse)
    }
    public var methods: Set<String>
    let handler: Handler

    /// A GET answered at once on the event loop: keep it quick.
    public static func get(_ answer: @escaping @Sendable () -> AdminResponse) -> AdminRoute {
        AdminRoute(methods: ["GET"], handler: .now { _ in answer() })
    }
    /// A GET answered by a task (it may wait on the network); the connection serves on meanwhile.
    public static func getLater(_ answer: @escaping @Sendable (AdminRequest) async -> AdminResponse) -> AdminRoute {
        AdminRoute(methods: ["GET"], handler: .later(answer))
    }
    /// A POST answered by a task.
    public static func post(_ answer: @escaping @Sendable (AdminRequest) async -> AdminResponse) -> AdminRoute {
        AdminRoute(methods: ["POST"], handler: .later(answer))
    }
}

/// The paths the admin endpoint serves (INTERFACES.md).
public struct AdminRoutes: Sendable {
    public var routes: [String: AdminRoute]
    public init(_ routes: [String: AdminRoute]) { self.routes = routes }
    /// GET paths answered at once on the event loop.
    public init(routes: [String: @Sendable () -> AdminResponse]) { self.routes = routes.mapValues { AdminRoute.get($0) } }
    /// These routes and `more` (a path in both keeps its route here).
    public func adding(_ more: [String: AdminRoute]) -> AdminRoutes { AdminRoutes(routes.merging(more) { mine, _ in mine }) }
}

/// How a request is answered: now, or by a task.
enum AdminDispatch {
    case now(AdminResponse)
    case later(@Sendable () async -> AdminResponse)
}

/// Answers that take a task (AdminRoute.getLater, .post): handlers submit them here and
/// `AdminServer.run` works them off, at most `workers` at once, inside its own task group. A full
/// queue is answered 503 at once.
final class AdminJobs: Sendable {
    struct Job: Sendable {
        let work: @Sendable () async -> AdminResponse
        /// Called with the answer, from the worker's task: it hops to the connection's event loop.
        let done: @Sendable (AdminResponse) -> Void
    }
    static let queueLimit = 64
    static let workers = 4

    let stream: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Job.self, bufferingPolicy: .bufferingOldest(Self.queueLimit))
    }

    /// False when the queue is full or the server has stopped.
    func submit(_ job: Job) -> Bool {
        if case .enqueued = continuation.yield(job) { return true }
        return false
    }

    func finish() { continuation.finish() }

    /// Runs jobs until `finish`, `workers` at a time.
    func run() async {
        await withTaskGroup(of: Void.self) { tasks in
            var running = 0
            for await job in stream {
                if running >= Self.workers {
                    await tasks.next()
                    running -= 1
                }
                tasks.addTask { job.done(await job.work()) }
                running += 1
            }
        }
    }

    /// Submits `work`; `answer` gets its response on `loop`, or a 503 at once when the queue is full.
    static func submit(_ jobs: AdminJobs?, _ work: @escaping @Sendable () async -> AdminResponse, on loop: any EventLoop,
                       _ answer: @escaping (AdminResponse) -> Void) {
        let bound = NIOLoopBound(answer, eventLoop: loop)
        let job = Job(work: work, done: { r in bound.eventLoop.execute { bound.value(r) } })
        // Answered from the loop's next turn either way: never from inside the handler's own read
        // (nghttp2 must not be asked to send from within its receive callbacks).
        if jobs?.submit(job) != true {
            loop.execute { bound.value(.error(.serviceUnavailable, "too many admin requests are waiting; try again")) }
        }
    }
}

/// The broker's HTTP admin endpoint on `httpListenPort`: h2c with prior knowledge (libnghttp2) and
/// HTTP/1.1 (with keep-alive and pipelining) on the same port, told apart by the first bytes (the
/// HTTP/2 connection preface). Unknown paths answer 404 with a JSON error, a method a path does not
/// take 405, a body over `maxBodyBytes` 413.
public final class AdminServer: Sendable {
    /// The largest request body taken (the admin POSTs carry a few small JSON fields).
    public static let maxBodyBytes = 64 << 10

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
        let jobs = AdminJobs()
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try AdminServer.configure(channel, routes: routes, jobs: jobs) }
            }
            .bind(host: host, port: port)
            .get()
        if let a = server.localAddress { onBound(a) }
        try await withTaskCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { await jobs.run() }
                defer { jobs.finish() }
                try await server.closeFuture.get()
            }
        } onCancel: {
            jobs.finish()
            server.close(promise: nil)
        }
    }

    /// Installs the handlers of one accepted connection (the protocol selector, which adds HTTP/1.1
    /// or h2c). Called on the channel's event loop; public for Fuzz/, which drives an EmbeddedChannel
    /// (without `jobs`, routes answered by a task get 503).
    public static func configure(_ channel: any Channel, routes: AdminRoutes) throws {
        try configure(channel, routes: routes, jobs: nil)
    }

    static func configure(_ channel: any Channel, routes: AdminRoutes, jobs: AdminJobs?) throws {
        try channel.pipeline.syncOperations.addHandler(ProtocolSelector(routes: routes, jobs: jobs))
    }

    /// What `request` gets (a HEAD is answered as its GET; the handlers drop the body).
    static func dispatch(_ request: AdminRequest, bodyTooLarge: Bool = false, routes: AdminRoutes) -> AdminDispatch {
        let printable = String(request.path.unicodeScalars.prefix(200).filter { $0.isASCII && $0.value >= 0x20 })
        guard let route = routes.routes[request.path] else { return .now(.error(.notFound, "no such path: \(printable)")) }
        let method = request.method == "HEAD" ? "GET" : request.method
        guard route.methods.contains(method) else {
            var r = AdminResponse.error(.methodNotAllowed, "\(printable) takes \(route.methods.sorted().joined(separator: ", ")), not \(String(request.method.prefix(20)))")
            r.headers.append(("allow", route.methods.sorted().joined(separator: ", ") + (route.methods.contains("GET") ? ", HEAD" : "")))
            return .now(r)
        }
        if bodyTooLarge { return .now(.error(.payloadTooLarge, "the request body is over \(maxBodyBytes) bytes")) }
        switch route.handler {
        case .now(let f): return .now(f(request))
        case .later(let f): return .later { await f(request) }
        }
    }
}

/// HTTP/1.1: one answer per request. NIO's HTTPServerPipelineHandler (installed with the decoder)
/// holds a pipelined request back until the answer before it has ended, so answers leave in request
/// order even when a task answers a request later than the ones after it would have been answered.
/// Every request is answered at its end: a body over `AdminServer.maxBodyBytes` is read and dropped
/// (413, the connection kept), so the client is never reset while it is still sending.
final class AdminHTTP1Handler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: AdminRoutes
    private let jobs: AdminJobs?
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var bodyTooLarge = false

    init(routes: AdminRoutes, jobs: AdminJobs?) {
        self.routes = routes
        self.jobs = jobs
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
            bodyTooLarge = (h.headers.first(name: "content-length").flatMap { Int($0) } ?? 0) > AdminServer.maxBodyBytes
        case .body(var part):
            if bodyTooLarge || body.count + part.readableBytes > AdminServer.maxBodyBytes {
                bodyTooLarge = true
                body = []
            } else if let bytes = part.readBytes(length: part.readableBytes) {
                body += bytes
            }
        case .end:
            guard let h = head else { return }
            head = nil
            var headers: [String: String] = [:]
            for name in ["content-type", "origin", "host"] { headers[name] = h.headers.first(name: name) }
            let r = AdminRequest(method: Self.name(h.method), target: h.uri, headers: headers, body: body)
            body = []
            switch AdminServer.dispatch(r, bodyTooLarge: bodyTooLarge, routes: routes) {
            case .now(let response):
                write(context, h, response)
            case .later(let f):
                AdminJobs.submit(jobs, f, on: context.eventLoop) { response in self.write(context, h, response) }
            }
        }
    }

    static func name(_ m: HTTPMethod) -> String {
        switch m {
        case .GET: "GET"
        case .HEAD: "HEAD"
        case .POST: "POST"
        default: "\(m)"
        }
    }

    private func write(_ context: ChannelHandlerContext, _ h: HTTPRequestHead, _ answer: AdminResponse) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: answer.contentType)
        headers.add(name: "Content-Length", value: String(answer.body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        for (n, v) in answer.headers { headers.add(name: n, value: v) }
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
/// `maxHeadBytes` from the end of one request to the blank line that ends the next head is answered
/// 431 and the connection closed. A body that declares its length (`Content-Length`, as browsers and
/// curl send one) is not counted: the handler bounds what it keeps of it. A chunked body counts.
final class RequestHeadLimit: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer
    static let maxHeadBytes = 16 << 10

    private var count = 0
    /// How much of "\r\n\r\n" the last bytes matched.
    private var matched = 0
    /// The current header line's first bytes, lowercased, to spot `content-length:`.
    private var line: [UInt8] = []
    private var declaredLength: Int?
    /// Body bytes of the last head still to pass uncounted.
    private var bodyLeft = 0
    private var refused = false
    private static let contentLength = Array("content-length:".utf8)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let bytes = unwrapInboundIn(data)
        for b in bytes.readableBytesView {
            if bodyLeft > 0 {
                bodyLeft -= 1
                continue
            }
            count += 1
            switch (matched, b) {
            case (0, 13), (2, 13): matched += 1
            case (1, 10), (3, 10): matched += 1
            case (_, 13): matched = 1
            default: matched = 0
            }
            if b == 10 {
                lineEnded()
            } else if b != 13 && line.count < 64 {
                line.append(b >= 65 && b <= 90 ? b + 32 : b)
            }
            if matched == 4 {
                matched = 0
                count = 0
                bodyLeft = declaredLength ?? 0
                declaredLength = nil
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

    private func lineEnded() {
        defer { line.removeAll(keepingCapacity: true) }
        guard line.starts(with: Self.contentLength) else { return }
        let digits = line.dropFirst(Self.contentLength.count).filter { $0 != 32 && $0 != 9 }
        // A malformed length is the decoder's to refuse; only a sane one is skipped.
        if !digits.isEmpty, digits.count <= 12, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            declaredLength = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
        }
    }
}

/// Looks at a connection's first bytes: the HTTP/2 preface (`PRI * HTTP/2.0...`) selects h2c, anything
/// else HTTP/1.1. nghttp2 would answer an HTTP/1.1 request with GOAWAY, so the choice comes first.
final class ProtocolSelector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let routes: AdminRoutes
    private let jobs: AdminJobs?
    private var buffered: ByteBuffer?

    init(routes: AdminRoutes, jobs: AdminJobs?) {
        self.routes = routes
        self.jobs = jobs
    }

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
                try ops.addHandler(HTTP2AdminHandler(routes: routes, jobs: jobs), position: .after(self))
            } else {
                let limit = RequestHeadLimit()
                try ops.addHandler(limit, position: .after(self))
                try ops.configureHTTPServerPipeline(position: .after(limit), withErrorHandling: true)
                try ops.addHandler(AdminHTTP1Handler(routes: routes, jobs: jobs))
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
