import NIOCore
import RaftCore
import Testing
import TestSupport
@testable import Replication

private func randomMessage(_ r: inout SplitMix64) -> Message {
    func u(_ bound: UInt64) -> UInt64 { r.next() % bound }
    func bytes(_ max: UInt64) -> [UInt8] { (0..<u(max)).map { _ in UInt8(truncatingIfNeeded: r.next()) } }
    let term = Term(u(1000) + 1)
    let body: Message.Body
    switch u(13) {
    case 0: body = .preVote(lastIndex: LogIndex(u(1 << 40)), lastTerm: Term(u(1000)))
    case 1: body = .preVoteResponse(granted: u(2) == 0)
    case 2: body = .vote(lastIndex: LogIndex(u(1 << 40)), lastTerm: Term(u(1000)), leadershipTransfer: u(2) == 0)
    case 3: body = .voteResponse(granted: u(2) == 0)
    case 4:
        let prev = LogIndex(u(1 << 40))
        var t = Term(1)
        let entries = (0..<Int(u(20))).map { k -> Entry in
            t = Term(min(t.rawValue + u(2), term.rawValue))
            return Entry(term: t, index: prev + (k + 1), data: bytes(64))
        }
        body = .append(prevIndex: prev, prevTerm: Term(u(1000)), entries: entries, commit: LogIndex(u(1 << 40)))
    case 5: body = .appendResponse(.accepted(matchIndex: LogIndex(u(1 << 40))))
    case 6: body = .appendResponse(.rejected(rejectedIndex: LogIndex(u(99)), hintIndex: LogIndex(u(99)), hintTerm: Term(u(9))))
    case 7: body = .heartbeat(commit: LogIndex(u(1 << 40)), context: u(2) == 0 ? nil : bytes(16))
    case 8: body = .heartbeatResponse(context: u(2) == 0 ? nil : bytes(16))
    case 9: body = .timeoutNow
    case 10: body = .readIndex(context: bytes(16))
    case 11: body = .readIndexResponse(index: LogIndex(u(1 << 40)), context: bytes(16))
    default: body = .resetLog(baseIndex: LogIndex(u(1 << 40)), baseTerm: Term(u(term.rawValue + 1)), context: (0..<12).map { _ in UInt8(truncatingIfNeeded: r.next()) }, commit: LogIndex(u(1 << 40)))
    }
    return Message(from: NodeID(u(5)), to: NodeID(u(5)), term: term, body: body)
}

@Suite(.ownThreads) struct RaftWireTests {
    @Test func everyMessageRoundTrips() throws {
        var r = SplitMix64(seed: 11)
        for _ in 0..<5_000 {
            let m = randomMessage(&r)
            #expect(try RaftWire.decode(RaftWire.encode(m)) == m)
        }
    }

    @Test func everyTruncationIsATypedError() {
        var r = SplitMix64(seed: 12)
        for _ in 0..<500 {
            let b = RaftWire.encode(randomMessage(&r))
            for cut in 0..<b.readableBytes {
                #expect(throws: RaftWire.DecodeError.self) { _ = try RaftWire.decode(b.getSlice(at: b.readerIndex, length: cut)!) }
            }
        }
    }

    @Test func randomBytesNeverTrap() {
        var r = SplitMix64(seed: 13)
        for _ in 0..<50_000 {
            var b = ByteBuffer()
            b.writeInteger(RaftWire.version)
            b.writeBytes((0..<Int(r.next() % 80)).map { _ in UInt8(truncatingIfNeeded: r.next() % 4 == 0 ? r.next() % 13 : r.next()) })
            _ = try? RaftWire.decode(b)
        }
    }

    @Test func limitsAndNonsenseAreRefused() throws {
        let append = Message(from: NodeID(0), to: NodeID(1), term: Term(3), body: .append(
            prevIndex: LogIndex(5), prevTerm: Term(2),
            entries: [Entry(term: Term(3), index: LogIndex(6), data: Array(repeating: 7, count: 100))], commit: LogIndex(4)))
        let b = RaftWire.encode(append)
        #expect(throws: RaftWire.DecodeError.overLimit("an entry of 100 bytes, at most 99")) {
            _ = try RaftWire.decode(b, limits: .init(maxEntryBytes: 99))
        }
        var trailing = b
        trailing.writeInteger(UInt8(0))
        #expect(throws: RaftWire.DecodeError.trailingBytes(1)) { _ = try RaftWire.decode(trailing) }
        var wrongVersion = b
        wrongVersion.setInteger(UInt8(9), at: wrongVersion.readerIndex)
        #expect(throws: RaftWire.DecodeError.unsupportedVersion(9)) { _ = try RaftWire.decode(wrongVersion) }
        // An entry of a term newer than the message's own term cannot come from a correct leader.
        let future = Message(from: NodeID(0), to: NodeID(1), term: Term(3), body: .append(
            prevIndex: LogIndex(0), prevTerm: Term(0), entries: [Entry(term: Term(3), index: LogIndex(1), data: [1])], commit: .zero))
        var forged = RaftWire.encode(future)
        forged.setInteger(UInt64(4), at: forged.readerIndex + 2 + 8 + 8 + 8 + 8 + 8 + 8 + 4)
        #expect(throws: RaftWire.DecodeError.self) { _ = try RaftWire.decode(forged) }
    }
}
