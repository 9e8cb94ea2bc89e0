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
    /// other tasks run: here the blocked thread waits for one of them.
    @Test func aBlockedThreadDoesNotHoldBackTheTestsOtherTasks() async throws {
        let done = DispatchSemaphore(value: 0)
        await withTaskGroup(of: Void.self) { g in
            g.addTask { done.signal() }
            #expect(done.wait(timeout: .now() + 10) == .success, "the child task never ran")
        }
    }

    /// Tasks that outlive their test still run: once the test's executor finished, its jobs go to
    /// the global executor.
    @Test func jobsForAFinishedTestsExecutorStillRun() async throws {
        let executor = OwnThreadsExecutor(name: "finished")
        executor.finish()
        let ran = await withTaskExecutorPreference(executor) { () async -> String in
            try? await Task.sleep(for: .milliseconds(1))
            return Self.threadName()
        }
        #expect(ran != "finished")
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
        for file in files where !file.hasPrefix("TestSupport/") {
            let lines = try String(contentsOfFile: root + "/" + file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            for (n, line) in lines.enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                if code.hasPrefix("@Suite") {
                    suites += 1
                    #expect(code.contains(".ownThreads"), "\(file):\(n + 1): a suite without .ownThreads")
                }
                // A test outside any suite would not get the trait.
                #expect(!line.hasPrefix("@Test"), "\(file):\(n + 1): a test outside a suite")
            }
        }
        #expect(suites > 50, "found \(suites) suites")
    }
}
