import Foundation
import Testing

/// The dashboard at `GET /`, loaded in a real headless Chromium (Debian's package, driven by
/// scripts/dashboard_browser.py over the DevTools pipe) against the nameservers and the group of
/// conf/dledger-local: what it renders after its own script has fetched the overview, and its
/// leadership-transfer button clicked as a user clicks it.
extension RaftGroupProcessTests {
    /// `curl ARGS` (stdout, with `-w` output appended when asked).
    func curl(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = ["-s", "--max-time", "20"] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// Runs the browser driver; its one JSON line, parsed.
    func browse(_ url: String, _ more: [String]) throws -> (status: Int32, result: [String: Any], stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = [packageRoot + "/scripts/dashboard_browser.py", url, "--timeout", "60"] + more
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
        return (p.terminationStatus, object, errors)
    }

    @Test func dashboardRendersTheClusterInChromiumAndItsButtonMovesTheLeader() async throws {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let namesrvs = try startNameServers()
        defer {
            killAll(namesrvs)
            for n in nodes { if let p = n.process, p.isRunning { kill(p.processIdentifier, SIGKILL) } }
            try? FileManager.default.removeItem(atPath: home)
        }
        for n in nodes { try start(n) }
        let elected = try #require(try await agreedLeader(among: nodes, within: 30), "no leader\n\(logs())")
        let follower = try #require(nodes.first { $0.name != elected.leader })
        let admin = Executable("mqadmin")
        let ns = "127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876"

        // 10 messages, a group that consumes all 10 (committing its offsets), then 3 more: lag 3.
        let sent = try await sendOnceRouted(ns, topic: "DashboardTopic", body: "shown", count: 10)
        #expect(sent.status == 0, "\(sent.stdout)\(sent.stderr)")
        let consumed = try admin.run(["consumeMessage", "-n", ns, "-t", "DashboardTopic", "-g", "dashboard_group", "-c", "10", "--timeout", "20"])
        #expect(consumed.status == 0, "\(consumed.stdout)\(consumed.stderr)")
        let more = try admin.run(["sendMessage", "-n", ns, "-t", "DashboardTopic", "-p", "waiting", "--count", "3"])
        #expect(more.status == 0, "\(more.stdout)\(more.stderr)")

        // The page as the follower serves it: every value below was drawn by the page's script.
        let shot = home + "/dashboard.png"
        let url = "http://\(follower.host):30913/"
        var page = try browse(url, ["--screenshot", shot])
        // The consumer's offsets reach the broker within its commit interval: look again until they show.
        for _ in 0..<20 {
            let lag = ((page.result["first"] as? [String: Any])?["consumers"] as? [[String: Any]])?.first { $0["group"] as? String == "dashboard_group" }?["lag"] as? Int
            if page.status != 0 || lag == 3 { break }
            try await Task.sleep(for: .milliseconds(500))
            page = try browse(url, ["--screenshot", shot])
        }
        #expect(page.status == 0, "\(page.stderr) \(page.result)")
        let first = try #require(page.result["first"] as? [String: Any], "\(page.stderr)")
        #expect(first["title"] as? String == "RaftMQ dashboard" && first["loaded"] as? Bool == true)
        #expect((first["live"] as? String)?.hasPrefix("live") == true, "\(first["live"] ?? "")")
        let nameservers = try #require(first["nameservers"] as? [[String: Any]])
        #expect(nameservers.map { $0["addr"] as? String ?? "" } == ["127.0.0.1:9876", "127.0.0.2:9876", "127.0.0.3:9876"])
        #expect(nameservers.allSatisfy { $0["ok"] as? Bool == true }, "\(nameservers)")
        let groups = try #require(first["groups"] as? [[String: Any]])
        let group = try #require(groups.first { $0["group"] as? String == "RaftNode00" }, "\(groups)")
        #expect(group["leader"] as? String == elected.leader, "\(group)")
        #expect((group["heading"] as? String)?.contains("term \(elected.term)") == true, "\(group["heading"] ?? "")")
        let members = try #require(group["members"] as? [[String: Any]])
        #expect(members.map { $0["node"] as? String ?? "" }.sorted() == ["n0", "n1", "n2"], "\(members)")
        for m in members {
            let leads = m["node"] as? String == elected.leader
            #expect(m["role"] as? String == (leads ? "leader" : "follower"), "\(m)")
            // The leader has no button for itself; each follower has one. Everyone is caught up (an
            // entry may be on its way: the group's own bookkeeping, such as consumer offsets, goes through the log).
            #expect(m["transferButton"] as? Bool == !leads, "\(m)")
            #expect((m["lag"] as? Int).map { $0 >= 0 && $0 <= 2 } == true, "\(m)")
        }
        let topics = try #require(first["topics"] as? [[String: Any]])
        let topic = try #require(topics.first { $0["topic"] as? String == "DashboardTopic" }, "\(topics)")
        #expect(topic["messages"] as? Int == 13 && (topic["queues"] as? Int ?? 0) > 0, "\(topic)")
        #expect(!topics.contains { ($0["topic"] as? String)?.hasPrefix("%RETRY%") == true }, "system topics are hidden by default: \(topics)")
        let consumers = try #require(first["consumers"] as? [[String: Any]])
        let consumer = try #require(consumers.first { $0["group"] as? String == "dashboard_group" }, "\(consumers)")
        #expect(consumer["lag"] as? Int == 3, "\(consumer)")
        let png = try #require(FileManager.default.contents(atPath: shot), "no screenshot")
        #expect(png.count > 10_000 && png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "a PNG of the page: \(png.count) bytes")

        // The button, clicked twice (arm, confirm), moves the leadership to that follower; the page shows it.
        let moved = try browse(url, ["--transfer", "RaftNode00", follower.name])
        #expect(moved.status == 0, "\(moved.stderr) \(moved.result)")
        let after = try #require(moved.result["after"] as? [String: Any], "\(moved.stderr)")
        let afterGroup = try #require((after["groups"] as? [[String: Any]])?.first)
        #expect(afterGroup["leader"] as? String == follower.name, "\(afterGroup)")
        #expect((after["toast"] as? String)?.contains("\(follower.name) now leads RaftNode00") == true, "\(after["toast"] ?? "")")
        let state = try #require(httpGet(host: follower.host, port: 30913, path: "/raft/state"))
        #expect(state.contains(#""role":"leader""#), "\(state)")

        // The transfer endpoint refuses what a browser page on another site could send, and bad requests.
        let api = "http://\(follower.host):30913/api/leadership-transfer"
        let body = #"{"group":"RaftNode00","nodeId":"\#(elected.leader)"}"#
        let form = try curl(["-w", " %{http_code}", "--data-binary", body, api])
        #expect(form.hasSuffix(" 415"), "not JSON: \(form)")
        let cross = try curl(["-w", " %{http_code}", "-H", "content-type: application/json", "-H", "origin: http://evil.example", "--data-binary", body, api])
        #expect(cross.hasSuffix(" 403"), "another origin: \(cross)")
        let rebound = try curl(["-w", " %{http_code}", "-H", "content-type: application/json", "-H", "host: attacker.example:30913",
                                "-H", "origin: http://attacker.example:30913", "--data-binary", body, api])
        #expect(rebound.hasSuffix(" 403") && rebound.contains("DNS-rebinding"), "a name that is not the broker's: \(rebound)")
        // A Host that is no IP address nor name of the broker, with a digit-like character Int() does not take.
        let odd = try curl(["-w", " %{http_code}", "-H", "content-type: application/json", "-H", "host: 1.2.3.½:30913", "--data-binary", body, api])
        #expect(odd.hasSuffix(" 403"), "\(odd)")
        let unknown = try curl(["-w", " %{http_code}", "-H", "content-type: application/json", "--data-binary", #"{"group":"NoSuchGroup","nodeId":"n0"}"#, api])
        #expect(unknown.hasSuffix(" 404"), "\(unknown)")
        let malformed = try curl(["-w", " %{http_code}", "-H", "content-type: application/json", "--data-binary", "{", api])
        #expect(malformed.hasSuffix(" 400"), "\(malformed)")
        let get = try curl(["-w", " %{http_code}", api])
        #expect(get.hasSuffix(" 405"), "\(get)")
        // The page itself: HTML that may not be framed, over HTTP/1.1 and h2c.
        for flags in [["--http1.1"], ["--http2-prior-knowledge"]] {
            let head = try curl(flags + ["-D", "-", "-o", "/dev/null", url]).lowercased()
            #expect(head.contains("content-type: text/html; charset=utf-8") && head.contains("frame-ancestors 'none'")
                    && head.contains("x-frame-options: deny"), "\(flags): \(head)")
        }
    }
}
