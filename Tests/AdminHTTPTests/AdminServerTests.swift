import AdminHTTP
import Foundation
import Glibc
import Logging
import NIOCore
import NIOPosix
import Testing
import TestSupport

/// Runs `curl ARGS` and returns (exit status, stdout).
private func curl(_ args: [String]) throws -> (Int32, String) {
    try run("/usr/bin/curl", ["-s", "--max-time", "20"] + args)
}

private func run(_ program: String, _ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: program)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

private func withAdminServer(_ body: @Sendable (String) async throws -> Void) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let routes = AdminRoutes(routes: [
        "/raft/state": { AdminResponse(status: .ok, body: #"{"mode":"raft","role":"leader"}"#) },
        "/healthz": { AdminResponse(status: .serviceUnavailable, body: #"{"status":"no leader known"}"#) },
    ]).adding([
        // Answered by a task after a pause: later requests on the connection must still come back in order.
        "/slow": .getLater { r in
            try? await Task.sleep(for: .milliseconds(300))
            return AdminResponse(status: .ok, contentType: "text/plain", body: "slow \(r.target)", headers: [("x-route", "slow")])
        },
        "/echo": .post { r in
            AdminResponse(status: .ok, contentType: "text/plain",
                          body: "\(r.method) \(r.headers["content-type"] ?? "-") \(r.body.count) \(String(decoding: r.body.prefix(16), as: UTF8.self))")
        },
    ])
    let server = AdminServer(host: "127.0.0.1", port: 0, routes: routes, group: group, logger: Logger(label: "test"))
    let (ports, sink) = AsyncStream.makeStream(of: Int.self)
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await server.run { sink.yield($0.port ?? 0) } }
        var it = ports.makeAsyncIterator()
        let port = await it.next()!
        defer { tasks.cancelAll() }
        try await body("http://127.0.0.1:\(port)")
    }
    try await group.shutdownGracefully()
}

@Suite(.ownThreads) struct AdminServerTests {
    @Test func h2cWithPriorKnowledgeAndHTTP1AreServedOnOnePort() async throws {
        try await withAdminServer { base in
            let (s2, h2) = try curl(["--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code} %{content_type}", base + "/raft/state"])
            #expect(s2 == 0)
            #expect(h2 == "{\"mode\":\"raft\",\"role\":\"leader\"}\n2 200 application/json", "\(h2)")
            let (s1, h1) = try curl(["--http1.1", "-w", "\n%{http_version} %{http_code}", base + "/raft/state"])
            #expect(s1 == 0 && h1.hasSuffix("\n1.1 200") && h1.hasPrefix("{\"mode\":\"raft\""), "\(h1)")
        }
    }

    @Test func unknownPathsAre404AndOtherMethods405AsJSON() async throws {
        try await withAdminServer { base in
            for flags in [["--http2-prior-knowledge"], ["--http1.1"]] {
                let (_, missing) = try curl(flags + ["-w", " %{http_code}", base + "/nope"])
                #expect(missing == #"{"error":"no such path: /nope","status":404} 404"#, "\(flags): \(missing)")
                let (_, post) = try curl(flags + ["-X", "POST", "-w", " %{http_code}", base + "/raft/state"])
                #expect(post.hasSuffix(" 405") && post.contains(#""status":405"#), "\(flags): \(post)")
                let (_, health) = try curl(flags + ["-w", " %{http_code}", base + "/healthz"])
                #expect(health.hasSuffix(" 503"), "\(flags): \(health)")
            }
        }
    }

    @Test func manyConcurrentStreamsOnOneConnection() async throws {
        try await withAdminServer { base in
            // h2load (nghttp2-client): 200 requests, 10 streams at a time, over one connection.
            let (status, out) = try run("/usr/bin/h2load", ["-n", "200", "-c", "1", "-m", "10", base + "/raft/state"])
            #expect(status == 0)
            #expect(out.contains("200 succeeded, 0 failed, 0 errored"), "\(out)")
            #expect(out.contains("status codes: 200 2xx"), "\(out)")
        }
    }

    @Test func garbageAfterThePrefaceClosesOnlyThatConnection() async throws {
        try await withAdminServer { base in
            let port = Int(base.split(separator: ":").last!)!
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let raw = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
            var junk = ByteBuffer()
            junk.writeString("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            junk.writeBytes((0..<64).map { UInt8(truncatingIfNeeded: $0 &* 37) })
            try await raw.writeAndFlush(junk)
            try await raw.closeFuture.get()  // the server sent GOAWAY and closed
            try await group.shutdownGracefully()
            let (status, body) = try curl(["--http2-prior-knowledge", base + "/raft/state"])
            #expect(status == 0 && body.contains("leader"), "the server still answers")
        }
    }

    @Test func routesAnsweredByTasksAndPostBodiesOverBothProtocols() async throws {
        try await withAdminServer { base in
            for flags in [["--http2-prior-knowledge"], ["--http1.1"]] {
                let (_, slow) = try curl(flags + ["-D", "-", base + "/slow?n=a%20b"])
                #expect(slow.hasSuffix("slow /slow?n=a%20b") && slow.lowercased().contains("x-route: slow"), "\(flags): \(slow)")
                let (_, echo) = try curl(flags + ["-H", "content-type: application/json", "--data-binary", #"{"group":"g"}"#, base + "/echo"])
                #expect(echo == #"POST application/json 13 {"group":"g"}"#, "\(flags): \(echo)")
                // A GET where only POST is taken: 405 naming the method it takes.
                let (_, get) = try curl(flags + ["-w", " %{http_code}", base + "/echo"])
                #expect(get.hasSuffix(" 405") && get.contains("takes POST"), "\(flags): \(get)")
                // A body over the limit: 413, and the server still answers.
                let big = FileManager.default.temporaryDirectory.appendingPathComponent("admin-big-\(getpid())").path
                try Data(repeating: UInt8(ascii: "x"), count: AdminServer.maxBodyBytes + 1).write(to: URL(fileURLWithPath: big))
                defer { try? FileManager.default.removeItem(atPath: big) }
                let (_, tooBig) = try curl(flags + ["-w", " %{http_code}", "-H", "content-type: application/json", "--data-binary", "@" + big, base + "/echo"])
                #expect(tooBig.hasSuffix(" 413"), "\(flags): \(tooBig)")
                let (_, ok) = try curl(flags + ["--data-binary", "fine", base + "/echo"])
                #expect(ok.hasSuffix("4 fine"), "\(flags): \(ok)")
                // A 40 KiB body is a body, not a head over the 16 KiB head limit.
                let mid = big + "-40k"
                try Data(repeating: UInt8(ascii: "y"), count: 40 << 10).write(to: URL(fileURLWithPath: mid))
                defer { try? FileManager.default.removeItem(atPath: mid) }
                let (_, forty) = try curl(flags + ["-w", " %{http_code}", "--data-binary", "@" + mid, base + "/echo"])
                #expect(forty.hasPrefix("POST application/x-www-form-urlencoded 40960 yyyy") && forty.hasSuffix(" 200"), "\(flags): \(forty)")
            }
        }
    }

    @Test func pipelinedHTTP1AnswersKeepRequestOrderBehindASlowRoute() async throws {
        try await withAdminServer { base in
            let port = Int(base.split(separator: ":").last!)!
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port) { ch in
                ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
            }
            // Three requests in one write: a slow one answered by a task, then two answered at once.
            let text = "GET /slow?n=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /raft/state HTTP/1.1\r\nHost: x\r\n\r\n"
                + "GET /slow?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            var received = ""
            // Bounded: a server that never closes fails the test in 20 s instead of hanging it.
            // Cancelled (the normal end), it must not touch the channel: its event loop group may
            // be shutting down by then.
            let watchdog = Task { [raw = channel.channel] in
                guard (try? await Task.sleep(for: .seconds(20))) != nil else { return }
                raw.close(promise: nil)
            }
            try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: text))
                for try await var chunk in inbound { received += chunk.readString(length: chunk.readableBytes) ?? "" }
            }
            watchdog.cancel()
            try await group.shutdownGracefully()
            let one = try #require(received.range(of: "slow /slow?n=1")), state = try #require(received.range(of: #""role":"leader""#))
            let three = try #require(received.range(of: "slow /slow?n=3"))
            #expect(one.upperBound < state.lowerBound && state.upperBound < three.lowerBound, "\(received)")
            #expect(received.components(separatedBy: "HTTP/1.1 200 OK").count == 4, "\(received)")
        }
    }

    @Test func http1HeadsStayBoundedAt16KiBWhileDeclaredBodiesPass() async throws {
        try await withAdminServer { base in
            // 20 KiB of headers on a GET: 431 and a close, not buffered.
            let (_, big) = try curl(["--http1.1", "-w", " %{http_code}", "-H", "X-Filler: " + String(repeating: "f", count: 20 << 10), base + "/raft/state"])
            #expect(big.hasSuffix(" 431") && big.contains("16384"), "\(big)")
            // Two keep-alive requests on one connection, the first with a 100 KiB body: 413, then 200.
            let body = FileManager.default.temporaryDirectory.appendingPathComponent("admin-100k-\(getpid())").path
            try Data(repeating: UInt8(ascii: "z"), count: 100 << 10).write(to: URL(fileURLWithPath: body))
            defer { try? FileManager.default.removeItem(atPath: body) }
            let (_, both) = try curl(["--http1.1", "-w", " %{http_code}", "--data-binary", "@" + body, base + "/echo", "--next", "-w", " %{http_code} %{num_connects}", base + "/raft/state"])
            #expect(both.contains(" 413") && both.hasSuffix(" 200 0"), "the second request reuses the connection: \(both)")
        }
    }
}
