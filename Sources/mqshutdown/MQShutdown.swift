import ArgumentParser
import Glibc
import ProcessLifecycle

/// `mqshutdown broker|namesrv`: RocketMQ's stop command. It finds the processes through their pid
/// files (ProcessLifecycle.PidFile; never by process name), sends each SIGTERM, so it stops taking
/// work, flushes and leaves the nameservers, and waits until it has exited.
@main
struct MQShutdown: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqshutdown",
        abstract: "Stop the brokers or nameservers running on this host (RocketMQ's mqshutdown).",
        discussion: """
            Processes are found through their pid files in $RAFTMQ_RUN_DIR (default $HOME/.raftmq/run), \
            never by process name. Exit status 0 when every process found has stopped, 1 when none was \
            running or one did not stop in time.
            """)

    enum Target: String, ExpressibleByArgument, CaseIterable {
        case broker, namesrv
    }

    @Argument(help: "broker or namesrv.")
    var target: Target

    @Option(name: .customShort("c"), help: "Stop only the process started with this configuration file.")
    var configFile: String?

    @Option(help: "Seconds to wait for each process to exit.")
    var timeout: Double = 10

    func run() throws {
        let kind: PidFile.Kind = target == .broker ? .broker : .namesrv
        let program = kind.executable
        let environment = processEnvironment()
        var entries = PidFile.entries(kind: kind, environment: environment)
        if let configFile {
            let wanted = Self.canonical(configFile)
            entries = entries.filter { Self.canonical($0.configPath) == wanted }
        }
        for stale in entries where !stale.running {
            unlink(stale.path)
            print("removed a stale pid file \(stale.path) (pid \(stale.pid) is not a running \(program))")
        }
        let running = entries.filter(\.running)
        guard !running.isEmpty else {
            print("No \(program) running.")
            throw ExitCode(1)
        }
        for e in running {
            print("The \(program)(\(e.pid)) is running...")
            if kill(e.pid, SIGTERM) == 0 {
                print("Send shutdown request to \(program)(\(e.pid)) OK")
            } else {
                print("cannot signal \(program)(\(e.pid)): \(String(cString: strerror(errno)))")
            }
        }
        var failed = false
        for e in running {
            let deadline = Self.now() + timeout
            while PidFile.isRunning(e.pid, executable: program) && Self.now() < deadline {
                usleep(50_000)
            }
            if PidFile.isRunning(e.pid, executable: program) {
                print("\(program)(\(e.pid)) did not stop within \(timeout) s (its pid file: \(e.path))")
                failed = true
            } else {
                print("\(program)(\(e.pid)) stopped")
            }
        }
        if failed { throw ExitCode(1) }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// The file's real path (symbolic links and relative parts resolved), or the text as given.
    static func canonical(_ path: String) -> String {
        guard !path.isEmpty, let p = realpath(path, nil) else { return path }
        defer { free(p) }
        return String(cString: p)
    }
}
