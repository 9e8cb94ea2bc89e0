import AdminHTTP
import NIOCore
import NIOEmbedded

/// The admin HTTP port's handlers (protocol selection, HTTP/1.1, and h2c through libnghttp2) on an
/// EmbeddedChannel, under ASan: any bytes give answers, a GOAWAY or a close, never a memory error,
/// a trap or a hang. The first byte chooses HTTP/2 (the preface is prepended) or raw bytes, and how
/// the rest is split into reads.
let routes = AdminRoutes(routes: [
    "/raft/state": { AdminResponse(status: .ok, body: #"{"mode":"raft","role":"leader"}"#) },
    "/healthz": { AdminResponse(status: .ok, body: #"{"status":"ok"}"#) },
]).adding([
    // Taken with its body; answered 503 here (no workers on an EmbeddedChannel), which still runs the
    // body limits, the 405s and the answer-later path of both protocols.
    "/api/leadership-transfer": .post { r in AdminResponse(status: .ok, body: "\(r.body.count)") },
])
let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let mode = input[0]
    var bytes = Array(input.dropFirst())
    if mode & 1 == 1 { bytes = preface + bytes }
    let chunk = max(1, Int(mode >> 1) * 8)
    let channel = EmbeddedChannel()
    do {
        try AdminServer.configure(channel, routes: routes)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var at = 0
        while at < bytes.count, channel.isActive {
            let end = min(bytes.count, at + chunk)
            try channel.writeInbound(ByteBuffer(bytes: bytes[at..<end]))
            at = end
            channel.embeddedEventLoop.run()
            while let _: ByteBuffer = try channel.readOutbound() {}
        }
    } catch {}
    // Close, run what the close scheduled, and drop what is left, so the pipeline's cycle is broken.
    if channel.isActive { channel.close(promise: nil) }
    channel.embeddedEventLoop.run()
    _ = try? channel.finish(acceptAlreadyClosed: true)
    return 0
}
