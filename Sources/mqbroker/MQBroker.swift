import ArgumentParser
import Config
import Glibc
import ProcessLifecycle

/// `mqbroker -c FILE [-n NAMESRV] [-p]`: RocketMQ's broker command.
@main
struct MQBroker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqbroker",
        abstract: "RaftMQ broker: a RocketMQ broker whose commitlog is a Raft log.",
        discussion: """
            Reads a RocketMQ .properties file (conf/broker.conf documents every key). With -p it prints \
            the effective configuration, one key=value per line, sorted, and exits.
            """)

    @Option(name: .customShort("c"), help: "Broker configuration file.")
    var configFile: String

    @Option(name: .customShort("n"), help: "Name server address list, e.g. '127.0.0.1:9876;127.0.0.2:9876' (overrides namesrvAddr).")
    var namesrvAddr: String?

    @Flag(name: .customShort("p"), help: "Print the effective configuration and exit.")
    var printConfig = false

    func run() async throws {
        var overrides: [String: String] = [:]
        if let namesrvAddr { overrides["namesrvAddr"] = namesrvAddr }
        let settings: BrokerSettings
        do {
            let (loaded, warnings) = try ConfigLoader.loadBroker(path: configFile, environment: processEnvironment(), overrides: overrides)
            for w in warnings { printError("warning: \(w)") }
            settings = loaded
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        if printConfig {
            var out = ""
            for (key, value) in settings.effectiveProperties() { out += "\(key)=\(value)\n" }
            print(out, terminator: "")
            return
        }
        let environment = processEnvironment()
        let pidFile: PidFile
        do {
            try ServerLogging.bootstrap(directory: settings.logging.logDir, fileName: "broker.log",
                                        level: ServerLogging.level(settings.logging.logLevel.rawValue))
            let instance = settings.raft.enableDLegerCommitLog ? settings.raft.dLegerSelfId : "\(settings.broker.brokerId)"
            pidFile = try PidFile.create(kind: .broker, instance: "\(settings.broker.brokerName)-\(instance)", configPath: configFile,
                                         environment: environment)
        } catch {
            printError("mqbroker: \(error)")
            throw ExitCode(1)
        }
        defer { pidFile.remove() }
        do {
            if settings.raft.enableDLegerCommitLog {
                try await RaftNodeMode.run(settings)
            } else {
                try await ClassicMode.run(settings)
            }
        } catch {
            printError("mqbroker: \(error)")
            pidFile.remove()
            throw ExitCode(1)
        }
    }
}
