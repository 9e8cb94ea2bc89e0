/// Everything the driver must do after the node changed, in this order:
/// 1. send `messages` (they may leave before the local write);
/// 2. if `resetLog` is set, empty the log and make it start after its base; if `truncateAfter` is
///    set, drop the log after it; append `entries`; persist `hardState`;
///    make it durable when `mustSync`;
/// 3. send `messagesAfterPersist` (vote and append acknowledgements: they promise durability);
/// 4. apply `committedEntries`, answer `readStates`;
/// 5. call `advance(ready)`.
///
/// A leader's Ready may skip the wait in step 2 (`syncMayBeDeferred`): the driver then calls
/// `advance(ready, syncDeferred: true)` and, once an fdatasync covering the entries returns,
/// `entriesSynced(through:term:)` between Readies.
public struct Ready: Sendable {
    /// Set when the role or the known leader changed.
    public var softState: SoftState?
    /// Set when term, vote or commit changed.
    public var hardState: HardState?
    /// The log must be emptied and continue from this base (it ended before the leader's first
    /// entry); then `entries` follow it. Never together with `truncateAfter`.
    public var resetLog: LogReset?
    /// The log must be cut after this index before `entries` are appended (a conflict with the leader).
    public var truncateAfter: LogIndex?
    /// Entries to append, consecutive, starting right after `truncateAfter` or the log's end.
    public var entries: [Entry]
    /// Entries known committed that the driver has not been given yet, in order.
    public var committedEntries: [Entry]
    public var messages: [Message]
    public var messagesAfterPersist: [Message]
    public var readStates: [ReadState]

    /// True when term, vote or entries changed (or `messagesAfterPersist` speak for entries whose
    /// sync was deferred): everything written so far, this Ready's write included, must reach the
    /// disk before `messagesAfterPersist` leave. A commit-only change may be written lazily.
    public var mustSync: Bool

    /// The node leads and this Ready only appends its own entries (no truncation, no reset, term and
    /// vote unchanged, nothing sent after persisting): the driver may write them, call
    /// `advance(_:syncDeferred: true)` and go on while they sync, then report with
    /// `RaftNode.entriesSynced(through:term:)`. The leader counts itself toward their quorum only
    /// then, so its own fdatasync overlaps the followers' instead of preceding the next step.
    public var syncMayBeDeferred: Bool

    public var isEmpty: Bool {
        softState == nil && hardState == nil && resetLog == nil && entries.isEmpty && committedEntries.isEmpty
            && messages.isEmpty && messagesAfterPersist.isEmpty && readStates.isEmpty
    }
}
