import ArgumentParser
import Config
import Glibc
import Logging
import NameServer
import NIOCore
import NIOPosix
import ProcessLifecycle
import Remoting

/// `mqnamesrv [-c FILE] [-p]`: RocketMQ's nameserver.
@main
struct MQNamesrv: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqnamesrv",
        abstract: "RaftMQ nameserver: broker registration and topic routes (RocketMQ's mqnamesrv).",
        discussion: "Keys: listenPort (9876), bindAddress (0.0.0.0), kvConfigPath ($HOME/namesrv/kvConfig.json).")

    @Option(name: .customShort("c"), help: "Nameserver configuration file.")
    var configFile: String?

    @Flag(name: .customShort("p"), help: "Print the effective configuration and exit.")
    var printConfig = false

    func run() async throws {
        let config: NamesrvConfig
        do {
            let (loaded, warnings) = try ConfigLoader.loadNamesrv(path: configFile, environment: processEnvironment())
            for w in warnings { printError("warning: \(w)") }
            config = loaded
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        if printConfig {
            for (k, v) in config.effectiveProperties() { print("\(k)=\(v)") }
            return
        }
        let pidFile: PidFile
        do {
            try ServerLogging.bootstrap(directory: config.logging.logDir, fileName: "namesrv.log",
                                        level: ServerLogging.level(config.logging.logLevel.rawValue))
            pidFile = try PidFile.create(kind: .namesrv, instance: "\(config.bindAddress)-\(config.listenPort)", configPath: configFile, environment: processEnvironment())
        } catch {
            printError("mqnamesrv: \(error)")
            throw ExitCode(1)
        }
        defer { pidFile.remove() }
        let logger = Logger(label: "mqnamesrv")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: min(2, System.coreCount))
        let service = NameServerService(kvConfigPath: config.kvConfigPath, logger: logger)
        let server = RemotingServer(options: RemotingServerOptions(host: config.bindAddress, port: config.listenPort),
                                    processors: [service.processor], group: group, logger: logger)
        let stop = SignalWaiter()
        let failure: (any Error)? = await withTaskGroup(of: (any Error)?.self) { tasks in
            tasks.addTask {
                do {
                    try await server.run { address in
                        logger.info("The Name Server boot success. serializeType=JSON", metadata: ["address": "\(address)"])
                    }
                    return nil
                } catch {
                    return error
                }
            }
            tasks.addTask { await service.expireLoop(); return nil }
            tasks.addTask { await stop.wait(); return nil }
            let first = await tasks.next() ?? nil
            tasks.cancelAll()
            for await _ in tasks {}
            return first
        }
        try? await group.shutdownGracefully()
        if let failure {
            printError("mqnamesrv: cannot serve \(config.bindAddress):\(config.listenPort): \(failure)")
            throw ExitCode(1)
        }
        logger.info("the nameserver stopped")
    }
}
