import Foundation
import LogFormat
import Testing

@testable import LogStore
import TestSupport

@Suite(.ownThreads) struct RetentionTests {
    let now: Int64 = 1_800_000_000
    let hour: Int64 = 3600

    @Test func expiredSegmentsGoOnlyAtDeleteWhenOrUnderDiskPressure() {
        let policy = RetentionPolicy(fileReservedHours: 48, deleteWhenHours: [4], diskMaxUsedSpaceRatio: 75)
        let mtimes = [now - 100 * hour, now - 90 * hour, now - 10 * hour, now]
        #expect(policy.segmentsToDelete(modificationTimes: mtimes, nowSeconds: now, hourOfDay: 3, diskUsedRatio: 0.5).count == 0)
        #expect(policy.segmentsToDelete(modificationTimes: mtimes, nowSeconds: now, hourOfDay: 4, diskUsedRatio: 0.5) == (2, .deleteWhenHour))
        #expect(policy.segmentsToDelete(modificationTimes: mtimes, nowSeconds: now, hourOfDay: 13, diskUsedRatio: 0.80) == (2, .diskAboveMaxUsedRatio))
        // Above the force-clean ratio even unexpired segments go, but never the one in use.
        #expect(policy.segmentsToDelete(modificationTimes: mtimes, nowSeconds: now, hourOfDay: 13, diskUsedRatio: 0.90) == (3, .diskAboveForceCleanRatio))
        var noForce = policy
        noForce.cleanFileForcibly = false
        #expect(noForce.segmentsToDelete(modificationTimes: mtimes, nowSeconds: now, hourOfDay: 13, diskUsedRatio: 0.90).count == 2)
        // Deletion stops at the first segment that may not go.
        let mixed = [now - 100 * hour, now - 1 * hour, now - 100 * hour, now]
        #expect(policy.segmentsToDelete(modificationTimes: mixed, nowSeconds: now, hourOfDay: 4, diskUsedRatio: 0.1).count == 1)
        // At most segmentsPerRunMax per run.
        let many = Array(repeating: now - 100 * hour, count: 30) + [now]
        #expect(policy.segmentsToDelete(modificationTimes: many, nowSeconds: now, hourOfDay: 4, diskUsedRatio: 0.1).count == 10)
    }

    @Test func deleteWhenParsesRocketMQsHourList() {
        #expect(RetentionPolicy.parseDeleteWhen("04") == [4])
        #expect(RetentionPolicy.parseDeleteWhen("04;05; 23") == [4, 5, 23])
        #expect(RetentionPolicy.parseDeleteWhen("24") == nil)
        #expect(RetentionPolicy.parseDeleteWhen("four") == nil)
        #expect(RetentionPolicy.parseDeleteWhen("") == nil)
    }

    @Test func applyRetentionDeletesOldSegmentsAboveTheCallersFloor() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try LogStore.open(smallOptions(dir))
        for _ in 0..<120 { _ = try await store.append([EntryToAppend(term: Term(1), body: [UInt8](repeating: 3, count: 200))]) }
        let files = segmentFiles(dir)
        #expect(files.count > 5)
        let old = Date(timeIntervalSince1970: TimeInterval(now - 100 * hour))
        for f in files { try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: f) }
        let policy = RetentionPolicy(fileReservedHours: 48, deleteWhenHours: [4])
        // Not the deletion hour: nothing goes.
        #expect(try store.applyRetention(policy, nowSeconds: now, hourOfDay: 12).segmentsDeleted == 0)
        // The caller's floor keeps segments holding entries it still needs.
        let floor = try store.applyRetention(policy, nowSeconds: now, hourOfDay: 4, keepFrom: LogIndex(40))
        #expect(floor.segmentsDeleted > 0)
        #expect(floor.firstIndex <= LogIndex(40))
        #expect(try store.read(from: LogIndex(40), maxBytes: 0).count == 1)
        let all = try store.applyRetention(policy, nowSeconds: now, hourOfDay: 4)
        #expect(all.reason == .deleteWhenHour)
        #expect(segmentFiles(dir).count >= 1)
        #expect(store.lastIndex == LogIndex(119))
        #expect(try store.read(from: store.firstIndex, maxBytes: 0).count == 1)
        try store.close()
    }
}
