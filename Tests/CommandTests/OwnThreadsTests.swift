import Foundation
import Synchronization
import Testing
@testable import TestSupport

/// The rule of docs/testing.md: every test runs on threads of its own, never on the cooperative pool
/// (where two synchronous tests once held back every other test for minutes).
@Suite(.ownThreads) struct OwnThreadsTests {
    /// This thread's name as the kernel has it.
    private static func threadName() -> String {
        ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?").trimmingCharacters(in: .newlines)
    }

    @Test func aSynchronousTestRunsOnAThreadOfItsTest() throws {
        let test = try #require(Test.current)
        #expect(Self.threadName() == String(test.name.prefix(15)), "on \(Self.threadName())")
    }

    @Test func anAsynchronousTestAndItsChildTasksRunOnItsThreads() async throws {
        let test = try #require(Test.current)
        let expected = String(test.name.prefix(15))
        try await Task.sleep(for: .milliseconds(5))
        #expect(Self.threadName() == expected, "after a sleep: on \(Self.threadName())")
        let child = await withTaskGroup(of: String.self) { g in
            g.addTask { Self.threadName() }
            return await g.next()!
        }
        #expect(child == expected, "a child task: on \(child)")
        // (An unstructured Task {} does not inherit the preference (SE-0417): it runs on the pool.)
    }

    /// A test that blocks one of its threads (a child process, a synchronous wait) still has its
    /// other tasks run, on its own threads: here the blocked thread waits for one of them.
    @Test func aBlockedThreadDoesNotHoldBackTheTestsOtherTasks() async throws {
        let expected = String(try #require(Test.current).name.prefix(15))
        let done = DispatchSemaphore(value: 0)
        let child = await withTaskGroup(of: String.self) { g -> String in
            g.addTask {
                let name = Self.threadName()
                done.signal()
                return name
            }
            #expect(done.wait(timeout: .now() + 10) == .success, "the child task never ran")
            return await g.next() ?? ""
        }
        #expect(child == expected, "the child ran on \(child)")
    }

    /// With every thread it may start busy, a job goes to the global executor instead of waiting:
    /// here the only thread waits for the job.
    @Test func aJobBeyondTheLastThreadRunsOnTheGlobalExecutor() async throws {
        let executor = OwnThreadsExecutor(name: "one thread", maxThreads: 1)
        defer { executor.finish() }
        let ran = await withTaskExecutorPreference(executor) { () async -> DispatchTimeoutResult in
            let done = DispatchSemaphore(value: 0)
            return await withTaskGroup(of: Void.self) { g -> DispatchTimeoutResult in
                g.addTask { done.signal() }
                return done.wait(timeout: .now() + 10)
            }
        }
        #expect(ran == .success, "the job waited behind the thread that waited for it")
        #expect(executor.forwardedJobs > 0)
    }

    /// A finished test's threads end once they have nothing to do.
    @Test func theThreadsEndWhenTheTestIsOver() async throws {
        let executor = OwnThreadsExecutor(name: "ends")
        await withTaskExecutorPreference(executor) {
            await withTaskGroup(of: Void.self) { g in
                for _ in 0..<4 { g.addTask { try? await Task.sleep(for: .milliseconds(20)) } }
            }
        }
        #expect(executor.liveThreads > 0, "no thread was ever started")
        executor.finish()
        let started = ContinuousClock.now
        while executor.liveThreads > 0 && ContinuousClock.now - started < .seconds(10) { try await Task.sleep(for: .milliseconds(5)) }
        #expect(executor.liveThreads == 0, "\(executor.liveThreads) threads still live after finish")
    }

    /// Once its executor finished, a test's jobs go to the global executor.
    @Test func jobsForAFinishedTestsExecutorStillRun() async throws {
        let executor = OwnThreadsExecutor(name: "finished")
        executor.finish()
        let ran = await withTaskExecutorPreference(executor) { () async -> String in
            try? await Task.sleep(for: .milliseconds(1))
            return Self.threadName()
        }
        #expect(ran != "finished")
        #expect(executor.forwardedJobs > 0)
    }

    @Test func atMostTheGivenNumberOfTurnsAreTakenAtOnce() async throws {
        let turns = Turns(2)
        await turns.take()
        await turns.take()
        let took = Mutex(false)
        let third = Task {
            await turns.take()
            took.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(!took.withLock { $0 }, "a third turn was taken while two were out")
        turns.give()
        await third.value
        #expect(took.withLock { $0 })
    }

    @Test func everySuiteInTheSourcesCarriesTheTrait() throws {
        let root = packageRoot + "/Tests"
        let files = try #require(FileManager.default.enumerator(atPath: root)).compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }
        var suites = 0
        let typeKeywords = ["struct ", "final class ", "class ", "enum ", "actor ", "extension "]
        for file in files where !file.hasPrefix("TestSupport/") {
            let lines = try String(contentsOfFile: root + "/" + file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            // The type the lines below are in (declared at column 0) and whether its tests get the
            // trait: an @Suite(.ownThreads) on its line or the line before, or an extension of a
            // suite declared elsewhere (the process tests' files).
            var type: (name: Substring, traited: Bool)?
            var previous: Substring = ""
            for (n, line) in lines.enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                if code.hasPrefix("//") { continue }
                if let at = code.range(of: "@Suite"), at.lowerBound == code.startIndex || code[code.index(before: at.lowerBound)] != "\"" {
                    suites += 1
                    #expect(code.contains(".ownThreads"), "\(file):\(n + 1): a suite without .ownThreads (on the @Suite line)")
                }
                if typeKeywords.contains(where: { line.hasPrefix($0) || line.hasPrefix("private " + $0) || (line.hasPrefix("@") && line.contains(") " + $0)) }) {
                    let suiteHere = { (l: Substring) in l.contains("@Suite(") && l.contains(".ownThreads") }
                    type = (line, line.hasPrefix("extension ") || suiteHere(line) || suiteHere(previous))
                }
                if code.hasPrefix("@Test") {
                    #expect(line.hasPrefix(" "), "\(file):\(n + 1): a test outside a suite")
                    #expect(type?.traited == true, "\(file):\(n + 1): a test in \(type?.name ?? "no type"), not in a suite with .ownThreads")
                }
                previous = line
            }
        }
        #expect(suites > 50, "found \(suites) suites")
    }
}
