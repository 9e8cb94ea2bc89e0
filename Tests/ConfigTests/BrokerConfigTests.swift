import Foundation
import Testing

@testable import Config
import TestSupport

@Suite(.ownThreads) struct BrokerConfigTests {
    let env = ["HOME": "/home/mq"]

    func load(_ text: String, path: String = "x.conf", environment: [String: String]? = nil, overrides: [String: String] = [:]) throws -> (BrokerSettings, [ConfigWarning]) {
        try ConfigLoader.loadBroker(bytes: Array(text.utf8), path: path, environment: environment ?? env, overrides: overrides)
    }

    func error(_ text: String, path: String = "x.conf", environment: [String: String]? = nil) -> String {
        do {
            _ = try load(text, path: path, environment: environment)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func rocketMQDefaults() throws {
        let (s, warnings) = try load("")
        #expect(warnings.isEmpty)
        #expect(s.broker.listenPort == 10911)
        #expect(s.broker.httpListenPort == 10913)
        #expect(s.broker.fastListenPort == 10909)
        #expect(s.broker.haListenPort == 10912)
        #expect(s.broker.brokerClusterName == "DefaultCluster")
        #expect(s.store.mappedFileSizeCommitLog == 1_073_741_824)
        #expect(s.store.fileReservedTime == 72)
        #expect(s.store.deleteWhen == "04")
        #expect(s.store.diskMaxUsedSpaceRatio == 75)
        #expect(s.store.flushDiskType == .ASYNC_FLUSH)
        #expect(s.store.brokerRole == .ASYNC_MASTER)
        #expect(s.store.maxMessageSize == 4_194_304)
        #expect(s.store.storePathRootDir == "/home/mq/store")
        #expect(s.store.storePathCommitLog == "/home/mq/store/commitlog")
        #expect(!s.raft.enableDLegerCommitLog)
    }

    @Test func errorsNameFileLineKeyAndProblem() {
        let thirteen = String(repeating: "# line\n", count: 13)
        #expect(error(thirteen + "listenPort=30911x\n", path: "broker-n0.conf") == "broker-n0.conf:14: listenPort: \"30911x\" is not a port number")
        #expect(error("autoCreateTopicEnable=yes\n") == "x.conf:1: autoCreateTopicEnable: \"yes\" is not true or false")
        #expect(error("a=1\nbrokerRole=MASTER\n") == "x.conf:2: brokerRole: \"MASTER\" is not one of ASYNC_MASTER, SYNC_MASTER, SLAVE")
        #expect(error("deleteWhen=25\n") == "x.conf:1: deleteWhen: \"25\" is not a list of hours 0-23 separated by ';'")
        #expect(error("diskMaxUsedSpaceRatio=99\n") == "x.conf:1: diskMaxUsedSpaceRatio: 99 is out of range 10...95")
        #expect(error("namesrvAddr=mq1:9876;mq2\n") == "x.conf:1: namesrvAddr: \"mq2\" in \"mq1:9876;mq2\" has no :port")
        #expect(error("brokerRole=SLAVE\nbrokerId=0\n") == "x.conf:2: brokerId: a SLAVE needs a brokerId above 0 (0 is the master's)")
        #expect(error("storePathRootDir=${DATA}/x\n") == "x.conf:1: storePathRootDir: environment variable DATA is not set (write ${DATA:-default} to give a default)")
        #expect(error("listenPort=65534\n").hasPrefix("x.conf:1: listenPort: 65534 leaves no room"))
        #expect(error("raftElectionTimeoutMinMs=500\nraftElectionTimeoutMaxMs=400\n").hasPrefix("x.conf:2: raftElectionTimeoutMaxMs: 400 must be above"))
    }

    static let raft = "enableDLegerCommitLog=true\ndLegerGroup=RaftNode00\ndLegerPeers=n0-mq1:40911;n1-mq2:40911;n2-mq3:40911\n"

    @Test func raftPeersAreParsedAndChecked() throws {
        let (s, _) = try load(Self.raft + "dLegerSelfId=n1\n")
        #expect(s.raft.peers.map(\.id) == ["n0", "n1", "n2"])
        #expect(s.raft.peers.map(\.address.host) == ["mq1", "mq2", "mq3"])
        #expect(s.raft.selfPeer?.address == HostPort(host: "mq2", port: 40911))
        #expect(s.raft.selfPeer?.followerBrokerId == 2)
        #expect(s.broker.brokerId == -1, "a Raft node's id is decided by its role")
        let (_, warnings) = try load(Self.raft + "dLegerSelfId=n1\nbrokerId=3\n")
        #expect(warnings.map(\.description).contains("x.conf:5: brokerId is decided by the Raft role when enableDLegerCommitLog=true; the configured value is ignored"))

        #expect(error(Self.raft + "dLegerSelfId=n5\n") == "x.conf:4: dLegerSelfId: \"n5\" is not among dLegerPeers n0, n1, n2")
        #expect(error("dLegerPeers=n0-a:1;n0-b:2\n") == "x.conf:1: dLegerPeers: peer id n0 appears twice")
        #expect(error("dLegerPeers=n0-a:1;n1-b:70000\n") == "x.conf:1: dLegerPeers: \"70000\" in \"n0-a:1;n1-b:70000\" is not a port number")
        #expect(error("dLegerPeers=;\n") == "x.conf:1: dLegerPeers: \";\" names no peer (expected n0-host:port;n1-host:port;...)")
        #expect(error("dLegerPeers=node-a:1\n").contains("must be a letter followed by digits"))
        #expect(error("enableDLegerCommitLog=true\ndLegerGroup=g\ndLegerSelfId=n0\n") == "x.conf:1: dLegerPeers: is required when enableDLegerCommitLog=true")
        #expect(error(Self.raft + "dLegerSelfId=n0\npreferredLeaderId=n9\n").hasPrefix("x.conf:5: preferredLeaderId:"))
    }

    @Test func unknownKeysWarnWithTheNearestKnownKey() throws {
        let (_, warnings) = try load("brokerName=b\nlistenport=10911\nfoo=bar\nbrokerName=c\n")
        let texts = warnings.map(\.description)
        #expect(texts.contains("x.conf:2: unknown key \"listenport\" (did you mean \"listenPort\"?)"))
        #expect(texts.contains("x.conf:3: unknown key \"foo\""))
        #expect(texts.contains { $0.hasPrefix("x.conf:4: brokerName is set again (first at x.conf:1)") })
    }

    @Test func legacySpellingsEnvironmentAndOverrides() throws {
        let (s, _) = try load(
            "mapedFileSizeCommitLog=8192000\nmapedFileSizeConsumeQueue=300000\nstorePathRootDir=${RAFTMQ_HOME:-.local}/n0\nnamesrvAddr=a:1\n",
            environment: ["HOME": "/h", "RAFTMQ_HOME": "/data"], overrides: ["namesrvAddr": "b:2;c:3"])
        #expect(s.store.mappedFileSizeCommitLog == 8_192_000)
        #expect(s.store.mappedFileSizeConsumeQueue == 300_000)
        #expect(s.store.storePathRootDir == "/data/n0")
        #expect(s.broker.namesrvAddresses == [HostPort(host: "b", port: 2), HostPort(host: "c", port: 3)])
        let (d, _) = try load("storePathRootDir=${RAFTMQ_HOME:-.local}/n0\n", environment: [:])
        #expect(d.store.storePathRootDir == ".local/n0")
        do {
            _ = try load("", overrides: ["namesrvAddr": "nope"])
            Issue.record("bad override accepted")
        } catch {
            #expect("\(error)" == "command line: namesrvAddr: \"nope\" in \"nope\" has no :port")
        }
    }

    @Test func effectivePropertiesAreSortedCompleteAndDerived() throws {
        let (s, _) = try load("listenPort=30911\nstorePathRootDir=/r\nmapedFileSizeCommitLog=1073741824\nbindAddress=127.0.0.2\n")
        let props = s.effectiveProperties()
        let keys = props.map(\.0)
        #expect(keys == keys.sorted())
        #expect(Set(keys).count == keys.count)
        let map = Dictionary(uniqueKeysWithValues: props)
        #expect(map["httpListenPort"] == "30913")
        #expect(map["haListenPort"] == "30912")
        #expect(map["storePathCommitLog"] == "/r/commitlog")
        #expect(map["mappedFileSizeCommitLog"] == "1073741824")
        #expect(map["mapedFileSizeCommitLog"] == nil)
        #expect(map["brokerIP1"] == "127.0.0.2")  // bindAddress stands in for an unset brokerIP1
    }

    /// Prepared space follows the flush type unless the file says otherwise, and `-p` prints the
    /// value in effect.
    @Test func warmMapedFileEnableFollowsTheFlushTypeUnlessSet() throws {
        func warm(_ text: String) throws -> (Bool, String?) {
            let (s, _) = try load(text)
            return (s.store.warmMapedFileEnable, Dictionary(uniqueKeysWithValues: s.effectiveProperties())["warmMapedFileEnable"])
        }
        #expect(try warm("") == (false, "false"))
        #expect(try warm("flushDiskType=ASYNC_FLUSH\n") == (false, "false"))
        #expect(try warm("flushDiskType=SYNC_FLUSH\n") == (true, "true"))
        #expect(try warm("flushDiskType=SYNC_FLUSH\nwarmMapedFileEnable=false\n") == (false, "false"))
        #expect(try warm("warmMapedFileEnable=true\nflushDiskType=ASYNC_FLUSH\n") == (true, "true"))
        #expect(error("warmMapedFileEnable=yes\n").contains("warmMapedFileEnable"))
    }

    /// The broker's event loops: by default a quarter of the cores (at least one) in a Raft member,
    /// one per core in a classic broker; as set otherwise.
    @Test func serverSelectorThreadsDefaultsToAQuarterOfTheCoresInARaftMember() throws {
        let cores = Int64(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let raft = "enableDLegerCommitLog=true\ndLegerGroup=g\ndLegerPeers=n0-127.0.0.1:40911\ndLegerSelfId=n0\n"
        #expect(try load(raft).0.serverSelectorThreads == max(1, cores / 4))
        #expect(try load("").0.serverSelectorThreads == cores)
        let (s, _) = try load("serverSelectorThreads=3\n")
        #expect(s.serverSelectorThreads == 3)
        #expect(Dictionary(uniqueKeysWithValues: s.effectiveProperties())["serverSelectorThreads"] == "3")
        #expect(error("serverSelectorThreads=0\n").contains("serverSelectorThreads"))
    }

    static let confRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("conf").path

    @Test func everySampleInConfParsesWithoutWarnings() throws {
        let files = try #require(FileManager.default.enumerator(atPath: Self.confRoot)?.allObjects as? [String]).filter { $0.hasSuffix(".conf") || $0.hasSuffix(".properties") }
        #expect(files.count >= 18)
        for file in files {
            let path = Self.confRoot + "/" + file
            if file.hasPrefix("namesrv") {
                let (config, warnings) = try ConfigLoader.loadNamesrv(path: path, environment: env)
                #expect(warnings.isEmpty, "\(file): \(warnings)")
                #expect(config.listenPort == 9876)
                continue
            }
            let (s, warnings) = try ConfigLoader.loadBroker(path: path, environment: env)
            #expect(warnings.isEmpty, "\(file): \(warnings)")
            #expect(!s.broker.brokerClusterName.isEmpty)
        }
    }

    @Test func theGuidesSamplesKeepTheirValues() throws {
        let (a, _) = try ConfigLoader.loadBroker(path: Self.confRoot + "/2m-2s-async/broker-a.properties", environment: env)
        #expect(a.broker.brokerClusterName == "rocketmq-cluster")
        #expect(a.broker.brokerIP1 == "mq1")
        #expect(a.store.mappedFileSizeCommitLog == 1_073_741_824)
        #expect(a.store.mappedFileSizeConsumeQueue == 300_000)
        #expect(a.store.diskMaxUsedSpaceRatio == 88)
        #expect(a.store.fileReservedTime == 120)
        #expect(a.store.maxMessageSize == 65536)
        #expect(a.store.storePathCommitLog == "/rocketmq/store/commitlog")
        let (slave, _) = try ConfigLoader.loadBroker(path: Self.confRoot + "/2m-2s-async/broker-a-s.properties", environment: env)
        #expect(slave.broker.brokerId == 100)
        #expect(slave.store.brokerRole == .SLAVE)
        #expect(slave.broker.listenPort == 11011)
        let (sync, _) = try ConfigLoader.loadBroker(path: Self.confRoot + "/2m-2s-sync/broker-b.properties", environment: env)
        #expect(sync.store.brokerRole == .SYNC_MASTER)
        for (i, host) in ["mq1", "mq2", "mq3"].enumerated() {
            let (n, _) = try ConfigLoader.loadBroker(path: Self.confRoot + "/dledger/broker-n\(i).conf", environment: env)
            #expect(n.broker.brokerClusterName == "RaftCluster")
            #expect(n.broker.listenPort == 30911)
            #expect(n.raft.enableDLegerCommitLog)
            #expect(n.raft.dLegerSelfId == "n\(i)")
            #expect(n.raft.selfPeer?.address == HostPort(host: host, port: 40911))
            #expect(n.broker.sendMessageThreadPoolNums == 16)
            let (local, _) = try ConfigLoader.loadBroker(path: Self.confRoot + "/dledger-local/broker-n\(i).conf", environment: ["HOME": "/h", "RAFTMQ_HOME": "/rh"])
            #expect(local.broker.bindAddress == "127.0.0.\(i + 1)")
            #expect(local.raft.selfPeer?.address == HostPort(host: "127.0.0.\(i + 1)", port: 40911))
            #expect(local.store.storePathRootDir == "/rh/dledger/n\(i)")
        }
    }

    @Test func brokerConfDocumentsEveryKey() throws {
        let text = try String(contentsOfFile: Self.confRoot + "/broker.conf", encoding: .utf8)
        for key in BrokerKeys.all.map(\.name) {
            #expect(text.contains("\(key)="), "conf/broker.conf does not document \(key)")
        }
    }

    @Test func localBrokersOnOneAddressDoNotShareAPort() throws {
        var taken: [String: String] = [:]
        let dir = Self.confRoot + "/2m-2s-async-local"
        for file in try FileManager.default.contentsOfDirectory(atPath: dir) {
            let (s, _) = try ConfigLoader.loadBroker(path: dir + "/" + file, environment: env)
            for port in [s.broker.fastListenPort, s.broker.listenPort, s.broker.haListenPort, s.broker.httpListenPort] {
                let key = "\(s.broker.bindAddress):\(port)"
                #expect(taken[key] == nil, "\(file) and \(taken[key] ?? "") both use \(key)")
                taken[key] = file
            }
        }
    }
}
