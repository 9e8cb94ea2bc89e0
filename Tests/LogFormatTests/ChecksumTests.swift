import CChecksum
import Testing
import TestSupport

@testable import LogFormat

@Suite(.ownThreads) struct ChecksumTests {
    @Test func crc32cMatchesPublishedVectors() {
        // RFC 3720 (iSCSI) appendix B.4 and the common check value.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).map { UInt8(31 - $0) }) == 0x113F_DB5C)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func portableAndHardwarePathsAgreeOnEveryLengthAndAlignment() {
        var rng = SplitMix64(seed: 7)
        let data = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
        data.withUnsafeBytes { raw in
            for start in 0..<9 {
                for length in [0, 1, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4000] where start + length <= raw.count {
                    let slice = UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)])
                    let portable = CRC32C.portableUpdate(0, slice)
                    #expect(CRC32C.update(0, slice) == portable, "start \(start) length \(length)")
                    if raftmq_crc32c_hw_available() != 0 {
                        #expect(UInt32(truncatingIfNeeded: raftmq_crc32c_hw(0, slice.baseAddress, slice.count)) == portable)
                    }
                }
            }
        }
    }

    @Test func crc32cContinuesAcrossSplits() {
        let bytes = Array("The quick brown fox jumps over the lazy dog".utf8)
        let whole = CRC32C.checksum(bytes)
        bytes.withUnsafeBytes { raw in
            for cut in 0...raw.count {
                let a = CRC32C.update(0, UnsafeRawBufferPointer(rebasing: raw[0..<cut]))
                #expect(CRC32C.update(a, UnsafeRawBufferPointer(rebasing: raw[cut...])) == whole)
            }
        }
    }

    @Test func ieeeCRCMatchesZlibAndTheGuidesMessages() {
        #expect(CRC32IEEE.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        // bodyCRC values printed by the deployment guide's consumer for its quickstart messages.
        for (body, expected) in [("Hello RocketMQ 980", 1_187_919_614), ("Hello RocketMQ 981", 835_257_960), ("Hello RocketMQ 965", 673_705_983)] {
            let crc = Array(body.utf8).withUnsafeBytes { CRC32IEEE.rocketMQBodyCRC($0) }
            #expect(crc == UInt32(expected), "\(body)")
        }
    }
}

