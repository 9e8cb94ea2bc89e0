import RaftCore
import Testing
import TestSupport
@testable import Replication

@Suite(.ownThreads) struct DeadlineHeapTests {
    @Test func itemsComeOutSoonestFirstWhateverTheOrderTheyWentIn() {
        var r = SplitMix64(seed: 3)
        var heap = DeadlineHeap()
        let origin = ContinuousClock.now
        var offsets: [Int64] = []
        for k in 0..<500 {
            let ms = Int64(r.next() % 10_000)
            offsets.append(ms)
            heap.push(origin + .milliseconds(ms), LogIndex(UInt64(k)), Term(1))
        }
        #expect(heap.popExpired(origin - .seconds(1)) == nil, "nothing is due before the first deadline")
        var out: [Int64] = []
        while let (index, _) = heap.popExpired(origin + .seconds(60)) { out.append(offsets[Int(index.rawValue)]) }
        #expect(out == offsets.sorted())
    }

    @Test func keepDropsAnsweredItemsAndKeepsTheOrder() {
        var heap = DeadlineHeap()
        let origin = ContinuousClock.now
        for k in 0..<100 { heap.push(origin + .milliseconds(Int64(100 - k)), LogIndex(UInt64(k)), Term(1)) }
        heap.keep { $0.index.rawValue % 2 == 0 }
        #expect(heap.count == 50)
        var last = Int64.min
        while let (index, _) = heap.popExpired(origin + .seconds(1)) {
            #expect(index.rawValue % 2 == 0)
            let ms = Int64(100 - Int(index.rawValue))
            #expect(ms >= last)
            last = ms
        }
    }

    @Test func dropLeadingStopsAtTheFirstItemItKeeps() {
        var heap = DeadlineHeap()
        let origin = ContinuousClock.now
        // Deadlines 1...10 ms for indexes 1...10; odd indexes were answered.
        for k in (1...10).reversed() { heap.push(origin + .milliseconds(Int64(k)), LogIndex(UInt64(k)), Term(1)) }
        heap.dropLeading { $0.index.rawValue == 1 }
        #expect(heap.earliest == origin + .milliseconds(2) && heap.count == 9, "the answered soonest one went")
        heap.dropLeading { $0.index.rawValue % 2 == 1 }
        #expect(heap.earliest == origin + .milliseconds(2) && heap.count == 9, "a kept soonest one stops it: answered ones behind it stay")
        var out: [UInt64] = []
        while let (index, _) = heap.popExpired(origin + .seconds(1)) { out.append(index.rawValue) }
        #expect(out == Array(2...10))
        heap.dropLeading { _ in true }
        #expect(heap.earliest == nil)
    }
}
