import CNghttp2
import NIOCore

/// An h2c connection (HTTP/2 with prior knowledge) driven by libnghttp2: bytes in through
/// `nghttp2_session_mem_recv`, bytes out through `nghttp2_session_mem_send`. Confined to its
/// channel's event loop (the nghttp2 session is not thread-safe). All of the project's unsafe
/// pointer code lives in this file, behind the handler's safe interface (ARCHITECTURE.md).
final class HTTP2AdminHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A request being received on one stream, then its answer being sent.
    struct Stream {
        var method = ""
        var path = ""
        /// The request headers a route may look at (AdminRequest.headers).
        var headers: [String: String] = [:]
        /// Header bytes received on the stream, against `maxHeaderBytes`.
        var headerBytes = 0
        var requestBody: [UInt8] = []
        var requestBodyTooLarge = false
        /// The answer's body, and how much of it nghttp2 has taken.
        var body: [UInt8] = []
        var sent = 0
    }

    /// Header bytes a request may carry (a bound on what a peer can make us hold).
    static let maxHeaderBytes = 16 << 10
    static let maxConcurrentStreams: UInt32 = 100

    private let routes: AdminRoutes
    private let jobs: AdminJobs?
    private var session: OpaquePointer?
    private var streams: [Int32: Stream] = [:]
    private weak var context: ChannelHandlerContext?

    init(routes: AdminRoutes, jobs: AdminJobs?) {
        self.routes = routes
        self.jobs = jobs
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else {
            context.close(promise: nil)
            return
        }
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, user in
            guard let frame, let user else { return 0 }
            let me = Unmanaged<HTTP2AdminHandler>.fromOpaque(user).takeUnretainedValue()
            if frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) && frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST {
                me.streams[frame.pointee.hd.stream_id] = Stream()
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, user in
            guard let frame, let name, let value, let user else { return 0 }
            let me = Unmanaged<HTTP2AdminHandler>.fromOpaque(user).takeUnretainedValue()
            let id = frame.pointee.hd.stream_id
            guard var s = me.streams[id] else { return 0 }
            s.headerBytes += nameLength + valueLength
            if s.headerBytes > HTTP2AdminHandler.maxHeaderBytes {
                return Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)  // resets the stream
            }
            let n = String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self)
            switch n {
            case ":method", ":path", ":authority", "content-type", "origin":
                let v = String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self)
                switch n {
                case ":method": s.method = v
                case ":path": s.path = v
                case ":authority": s.headers["host"] = v
                default: s.headers[n] = v
                }
            default: break
            }
            me.streams[id] = s
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, id, data, length, user in
            guard let data, let user else { return 0 }
            let me = Unmanaged<HTTP2AdminHandler>.fromOpaque(user).takeUnretainedValue()
            guard var s = me.streams[id] else { return 0 }
            if s.requestBody.count + length > AdminServer.maxBodyBytes {
                s.requestBodyTooLarge = true
                s.requestBody = []
            } else if !s.requestBodyTooLarge {
                s.requestBody.append(contentsOf: UnsafeBufferPointer(start: data, count: length))
            }
            me.streams[id] = s
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, user in
            guard let frame, let user else { return 0 }
            let me = Unmanaged<HTTP2AdminHandler>.fromOpaque(user).takeUnretainedValue()
            let type = frame.pointee.hd.type
            let endStream = frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            if endStream && (type == UInt8(NGHTTP2_HEADERS.rawValue) || type == UInt8(NGHTTP2_DATA.rawValue)) {
                me.answer(stream: frame.pointee.hd.stream_id)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, id, _, user in
            guard let user else { return 0 }
            Unmanaged<HTTP2AdminHandler>.fromOpaque(user).takeUnretainedValue().streams[id] = nil
            return 0
        }
        var s: OpaquePointer?
        guard nghttp2_session_server_new(&s, callbacks, Unmanaged.passUnretained(self).toOpaque()) == 0, let s else {
            context.close(promise: nil)
            return
        }
        session = s
        var settings = [nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: Self.maxConcurrentStreams)]
        _ = nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        flush(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let session { nghttp2_session_del(session) }
        session = nil
        streams.removeAll()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let session else { return }
        let buffer = unwrapInboundIn(data)
        let consumed = buffer.withUnsafeReadableBytes { bytes -> Int in
            guard let base = bytes.bindMemory(to: UInt8.self).baseAddress else { return 0 }
            return nghttp2_session_mem_recv(session, base, bytes.count)
        }
        if consumed < 0 {
            // A protocol error: nghttp2 has queued a GOAWAY; send it and close.
            flush(context)
            context.close(promise: nil)
            return
        }
        flush(context)
    }

    /// Sends whatever the session has queued; closes when neither side wants more.
    private func flush(_ context: ChannelHandlerContext) {
        guard let session else { return }
        var wrote = false
        while true {
            var chunk: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &chunk)
            if n <= 0 { break }
            guard let chunk else { break }
            var out = context.channel.allocator.buffer(capacity: n)
            out.writeBytes(UnsafeRawBufferPointer(start: chunk, count: n))
            context.write(wrapOutboundOut(out), promise: nil)
            wrote = true
        }
        if wrote { context.flush() }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            context.close(promise: nil)
        }
    }

    /// The request on `id` is complete: answer it now, or when its route's task is done.
    private func answer(stream id: Int32) {
        guard let s = streams[id] else { return }
        let request = AdminRequest(method: s.method, target: s.path, headers: s.headers, body: s.requestBody)
        streams[id]?.requestBody = []
        switch AdminServer.dispatch(request, bodyTooLarge: s.requestBodyTooLarge, routes: routes) {
        case .now(let response):
            submit(stream: id, response)
        case .later(let f):
            guard let context else { return }
            AdminJobs.submit(jobs, f, on: context.eventLoop) { response in
                // The connection or the stream may have gone meanwhile.
                guard self.session != nil, self.streams[id] != nil, let context = self.context else { return }
                self.submit(stream: id, response)
                self.flush(context)
            }
        }
    }

    /// Submits `response` on stream `id` (sent by the next flush).
    private func submit(stream id: Int32, _ response: AdminResponse) {
        guard let session, var s = streams[id] else { return }
        s.body = s.method == "HEAD" ? [] : Array(response.body.utf8)
        streams[id] = s
        let headers = [(":status", String(response.status.code)), ("content-type", response.contentType),
                       ("content-length", String(response.body.utf8.count)), ("cache-control", "no-store")] + response.headers
        // nghttp2 copies names and values during submit (no NO_COPY flags), so these may go after.
        var storage: [[UInt8]] = []
        for (n, v) in headers {
            storage.append(Array(n.lowercased().utf8))
            storage.append(Array(v.utf8))
        }
        withHeaderVector(storage) { nva in
            var provider = nghttp2_data_provider()
            provider.read_callback = { _, streamID, buf, length, flags, _, user in
                guard let buf, let flags, let user else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
                let me = Unmanaged<HTTP2AdminHandler>.fromOpaque(user).takeUnretainedValue()
                guard var s = me.streams[streamID] else {
                    flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                    return 0
                }
                let n = min(length, s.body.count - s.sent)
                s.body.withUnsafeBufferPointer { src in
                    if n > 0 { buf.update(from: src.baseAddress! + s.sent, count: n) }
                }
                s.sent += n
                if s.sent == s.body.count { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
                me.streams[streamID] = s
                return n
            }
            _ = nghttp2_submit_response(session, id, nva.baseAddress, nva.count, &provider)
        }
    }

    /// Calls `body` with an nghttp2_nv array over `storage` (name, value, name, value, ...).
    private func withHeaderVector(_ storage: [[UInt8]], _ body: (UnsafeMutableBufferPointer<nghttp2_nv>) -> Void) {
        var copies = storage
        var nva: [nghttp2_nv] = []
        var pointers: [UnsafeMutablePointer<UInt8>] = []
        for k in copies.indices {
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, copies[k].count))
            p.initialize(from: copies[k], count: copies[k].count)
            pointers.append(p)
        }
        defer { for p in pointers { p.deallocate() } }
        for k in stride(from: 0, to: copies.count, by: 2) {
            nva.append(nghttp2_nv(name: pointers[k], value: pointers[k + 1], namelen: copies[k].count,
                                  valuelen: copies[k + 1].count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
        }
        copies.removeAll()
        nva.withUnsafeMutableBufferPointer { body($0) }
    }
}
