/// Request codes RaftMQ handles or sends (rocketmq-protocol.md §2.2).
public enum RequestCode {
    public static let sendMessage: Int32 = 10
    public static let pullMessage: Int32 = 11
    public static let queryConsumerOffset: Int32 = 14
    public static let updateConsumerOffset: Int32 = 15
    public static let updateAndCreateTopic: Int32 = 17
    public static let getAllTopicConfig: Int32 = 21
    public static let getBrokerConfig: Int32 = 26
    public static let getBrokerRuntimeInfo: Int32 = 28
    public static let heartBeat: Int32 = 34
    public static let putKVConfig: Int32 = 100
    public static let getKVConfig: Int32 = 101
    public static let deleteKVConfig: Int32 = 102
    public static let registerBroker: Int32 = 103
    public static let unregisterBroker: Int32 = 104
    public static let getRouteInfoByTopic: Int32 = 105
    public static let getBrokerClusterInfo: Int32 = 106
    public static let wipeWritePermOfBroker: Int32 = 205
    public static let getAllTopicListFromNameserver: Int32 = 206
    public static let deleteTopicInNamesrv: Int32 = 216
    public static let getKVListByNamespace: Int32 = 219
    public static let getTopicsByCluster: Int32 = 224
    public static let queryMessage: Int32 = 12
    public static let searchOffsetByTimestamp: Int32 = 29
    public static let getMaxOffset: Int32 = 30
    public static let getMinOffset: Int32 = 31
    public static let getEarliestMsgStoreTime: Int32 = 32
    public static let viewMessageById: Int32 = 33
    public static let unregisterClient: Int32 = 35
    public static let consumerSendMsgBack: Int32 = 36
    public static let getConsumerListByGroup: Int32 = 38
    public static let notifyConsumerIdsChanged: Int32 = 40
    public static let lockBatchMQ: Int32 = 41
    public static let unlockBatchMQ: Int32 = 42
    public static let updateAndCreateSubscriptionGroup: Int32 = 200
    public static let getAllSubscriptionGroupConfig: Int32 = 201
    public static let getTopicStatsInfo: Int32 = 202
    public static let getConsumerConnectionList: Int32 = 203
    public static let deleteSubscriptionGroup: Int32 = 207
    public static let getConsumeStats: Int32 = 208
    public static let deleteTopicInBroker: Int32 = 215
    public static let sendMessageV2: Int32 = 310
    public static let sendBatchMessage: Int32 = 320
    public static let queryDataVersion: Int32 = 322
    /// RaftMQ's own: Raft messages between the members of a group, on the peer port. Above every
    /// code RocketMQ uses, so a RocketMQ client sent there by mistake is answered 3.
    public static let raftMessage: Int32 = 9_001
}

/// Response codes (rocketmq-protocol.md §2.1).
public enum ResponseCode {
    public static let success: Int32 = 0
    public static let systemError: Int32 = 1
    public static let systemBusy: Int32 = 2
    public static let requestCodeNotSupported: Int32 = 3
    public static let flushDiskTimeout: Int32 = 10
    public static let slaveNotAvailable: Int32 = 11
    public static let flushSlaveTimeout: Int32 = 12
    public static let messageIllegal: Int32 = 13
    public static let serviceNotAvailable: Int32 = 14
    public static let noPermission: Int32 = 16
    public static let topicNotExist: Int32 = 17
    public static let pullNotFound: Int32 = 19
    public static let pullRetryImmediately: Int32 = 20
    public static let pullOffsetMoved: Int32 = 21
    public static let queryNotFound: Int32 = 22
    public static let subscriptionParseFailed: Int32 = 23
    public static let subscriptionNotExist: Int32 = 24
    public static let subscriptionGroupNotExist: Int32 = 26
}
