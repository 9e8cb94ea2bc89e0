import Testing
import TestSupport

@Suite(.ownThreads) struct RaftSimTests {
    @Test func aRangeOfSeedsEndsWithTheCountLineAndExitsZero() throws {
        let out = try Executable("raftsim").run(["--seeds", "1..3", "--nodes", "3", "--ticks", "200"])
        #expect(out.status == 0, "\(out.stdout)\(out.stderr)")
        #expect(out.stdout.hasSuffix("3 passed, 0 failed\n"), "\(out.stdout)")
        #expect(out.stdout.contains("cluster-seconds per second"))
    }

    @Test func aBrokenRuleFailsWithTheSeedAndAReplayCommand() throws {
        let out = try Executable("raftsim").run(["--seed", "7", "--ticks", "400", "--break", "stale-vote"])
        #expect(out.status == 1)
        #expect(out.stdout.contains("seed 7 FAILED"))
        #expect(out.stdout.contains("replay: raftsim --seed 7 --nodes 3 --ticks 400 --break stale-vote --trace"))
        #expect(out.stdout.hasSuffix("0 passed, 1 failed\n"))
    }

    @Test func aReplayPrintsTheSameRunEveryTime() throws {
        let a = try Executable("raftsim").run(["--seed", "5", "--ticks", "200", "--trace"])
        let b = try Executable("raftsim").run(["--seed", "5", "--ticks", "200", "--trace"])
        #expect(a.status == 0)
        #expect(a.stdout.split(separator: "\n").dropLast(2) == b.stdout.split(separator: "\n").dropLast(2), "the trace is identical (only the wall-clock line may differ)")
        #expect(a.stdout.contains(" deliver "))
    }

    @Test func badArgumentsAreRefused() throws {
        for args in [["--seeds", "5..1"], ["--seed", "1", "--nodes", "4"], ["--seed", "1", "--break", "nonsense"], []] {
            let out = try Executable("raftsim").run(args)
            #expect(out.status != 0, "\(args)")
            #expect(!out.stderr.isEmpty, "\(args)")
        }
    }
}
