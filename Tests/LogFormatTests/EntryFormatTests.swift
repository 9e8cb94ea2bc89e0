import Testing
import TestSupport

@testable import LogFormat

@Suite(.ownThreads) struct EntryFormatTests {
    func sampleEntry(body: [UInt8] = Array("hello raft".utf8), previous: UInt32 = 0x1234_5678) -> [UInt8] {
        LogEntryCodec.encode(index: LogIndex(41), term: Term(7), position: LogPosition(4096), body: body, previousChainCRC: previous)
    }

    @Test func headerIsDLedgersLayoutBigEndian() throws {
        let bytes = sampleEntry()
        #expect(bytes.count == 48 + 10)
        func u32(_ at: Int) -> UInt32 { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
        func u64(_ at: Int) -> UInt64 { bytes[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        #expect(u32(0) == 1)  // magic: normal entry
        #expect(u32(4) == 58)  // size = 48 + body
        #expect(u64(8) == 41)  // index
        #expect(u64(16) == 7)  // term
        #expect(u64(24) == 4096)  // pos
        #expect(u32(32) == 0)  // channel
        #expect(u32(40) == CRC32C.checksum(Array("hello raft".utf8)))  // body CRC, actually computed
        #expect(u32(36) != 0)  // chain CRC, actually computed
        #expect(u32(44) == 10)  // body size
        #expect(Array(bytes[48...]) == Array("hello raft".utf8))
    }

    @Test func roundTripsRandomEntries() throws {
        var rng = SplitMix64(seed: 42)
        var previous: UInt32 = 0
        var position: UInt64 = 0
        for i in 0..<500 {
            let body = (0..<Int.random(in: 0...700, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let kind = EntryKind.allCases.randomElement(using: &rng)!
            let term = Term(UInt64(i / 50))
            let bytes = LogEntryCodec.encode(kind: kind, index: LogIndex(UInt64(i)), term: term, position: LogPosition(position), body: body, previousChainCRC: previous)
            let entry = try bytes.withUnsafeBytes { try LogEntryCodec.decode($0, previousChainCRC: previous) }
            #expect(entry.body == body)
            #expect(entry.kind == kind)
            #expect(entry.index == LogIndex(UInt64(i)))
            #expect(entry.term == term)
            #expect(entry.position == LogPosition(position))
            #expect(entry.encoded == bytes)
            previous = entry.header.chainCRC
            position += UInt64(bytes.count)
        }
    }

    /// An entry whose body is patched where it lands (the log's append hook) is byte for byte the
    /// entry of the patched body: both CRCs cover the patched bytes.
    @Test func patchingTheBodyInPlaceEqualsEncodingThePatchedBody() throws {
        var rng = SplitMix64(seed: 7)
        for i in 0..<200 {
            let body = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let previous = UInt32.random(in: 0...UInt32.max, using: &rng)
            let flips = (0..<3).map { _ in (Int.random(in: 0..<max(1, body.count), using: &rng), UInt8.random(in: 1...255, using: &rng)) }
            var patched = body
            for (at, x) in flips where at < patched.count { patched[at] ^= x }
            let expected = LogEntryCodec.encode(index: LogIndex(UInt64(i)), term: Term(3), position: LogPosition(UInt64(i) * 1000), body: patched, previousChainCRC: previous)
            var out: [UInt8] = [9, 9, 9]
            let header = body.withUnsafeBytes {
                LogEntryCodec.append(kind: .normal, index: LogIndex(UInt64(i)), term: Term(3), position: LogPosition(UInt64(i) * 1000), body: $0,
                                     previousChainCRC: previous, to: &out, patchingBody: { b in
                    #expect(b.count == body.count)
                    for (at, x) in flips where at < b.count { b[at] ^= x }
                })
            }
            #expect(Array(out[0..<3]) == [9, 9, 9] && Array(out[3...]) == expected)
            let decoded = try out.withUnsafeBytes { try LogEntryCodec.decode(UnsafeRawBufferPointer(rebasing: $0[3...]), previousChainCRC: previous) }
            #expect(decoded.header == header && decoded.body == patched)
        }
    }

    @Test func everySingleBitFlipIsDetected() {
        let previous: UInt32 = 0xCAFE_BABE
        let bytes = sampleEntry(previous: previous)
        for bit in 0..<(bytes.count * 8) {
            var flipped = bytes
            flipped[bit / 8] ^= UInt8(1 << (bit % 8))
            let result = flipped.withUnsafeBytes { raw in Result { () throws(LogFormatError) in try LogEntryCodec.decode(raw, previousChainCRC: previous) } }
            #expect(throws: LogFormatError.self, "bit \(bit) flipped went unnoticed") { try result.get() }
        }
    }

    @Test func anEntryDoesNotChainFromAnotherPredecessor() {
        let bytes = sampleEntry(previous: 1)
        #expect(throws: LogFormatError.self) { try bytes.withUnsafeBytes { try LogEntryCodec.decode($0, previousChainCRC: 2) } }
    }

    @Test func everyTruncatedPrefixThrows() {
        let bytes = sampleEntry()
        for n in 0..<bytes.count {
            let prefix = Array(bytes[0..<n])
            #expect(throws: LogFormatError.self) { try prefix.withUnsafeBytes { try LogEntryCodec.decode($0, previousChainCRC: nil) } }
        }
    }

    @Test func randomBytesNeverTrap() {
        var rng = SplitMix64(seed: 99)
        for _ in 0..<20_000 {
            var bytes = (0..<Int.random(in: 0...120, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if bytes.count >= 4 && Bool.random(using: &rng) { bytes[3] = 1; bytes[0] = 0; bytes[1] = 0; bytes[2] = 0 }  // valid magic
            _ = bytes.withUnsafeBytes { try? LogEntryCodec.decode($0, previousChainCRC: nil) }
            _ = bytes.withUnsafeBytes { try? IndexRecord.decode($0) }
            _ = bytes.withUnsafeBytes { BlankRecord.paddingByteCount($0) }
        }
    }

    @Test func indexRecordIsDLedgers32Bytes() throws {
        let header = try sampleEntry().withUnsafeBytes { try EntryHeader.decode($0) }
        var out: [UInt8] = []
        IndexRecord(header).encode(into: &out)
        #expect(out.count == 32)
        #expect(Array(out[0..<4]) == [0, 0, 0, 1])
        #expect(Array(out[4..<12]) == [0, 0, 0, 0, 0, 0, 0x10, 0])  // pos 4096
        #expect(Array(out[12..<16]) == [0, 0, 0, 58])  // size
        let decoded = try out.withUnsafeBytes { try IndexRecord.decode($0) }
        #expect(decoded.matches(header))
    }

    @Test func blankRecordIsMagicMinusOneAndLength() {
        let blank = BlankRecord.encode(paddingByteCount: 100)
        #expect(blank == [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 100])
        #expect(blank.withUnsafeBytes { BlankRecord.paddingByteCount($0) } == 100)
    }
}
