import Glibc

/// The simulator's only source of randomness: every choice of a run is drawn from one seed, so a
/// run replays exactly (TigerBeetle's VOPR). xoshiro256** seeded through SplitMix64.
public struct SimRandom: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    public mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// True with probability `p` (0...1).
    public mutating func chance(_ p: Double) -> Bool {
        precondition(p >= 0 && p <= 1, "chance: \(p) is not a probability")
        if p == 0 { return false }
        return Double(next() >> 11) * 0x1p-53 < p
    }

    /// A value in `range`.
    public mutating func int(in range: ClosedRange<Int>) -> Int {
        Int.random(in: range, using: &self)
    }

    /// A value in `range`.
    public mutating func uint64(in range: ClosedRange<UInt64>) -> UInt64 {
        UInt64.random(in: range, using: &self)
    }

    public mutating func double(in range: ClosedRange<Double>) -> Double {
        Double.random(in: range, using: &self)
    }

    /// A duration with an exponential distribution of mean `mean`, capped at `max` (network delays:
    /// most messages are quick, a few are very late).
    public mutating func exponential(mean: Double, max: Double) -> Double {
        let u = Double(next() >> 11) * 0x1p-53  // [0, 1)
        return Swift.min(-mean * log1p(-u), max)
    }

    public mutating func pick<T>(_ items: [T]) -> T {
        precondition(!items.isEmpty, "pick from an empty list")
        return items[int(in: 0...(items.count - 1))]
    }
}
