import LogStore

/// LogStore's hard state file record (this file imports LogStore alone, so the name is unambiguous
/// next to RaftCore's HardState).
typealias StoredHardState = HardState
