/// One member of a Raft group, from `dLegerPeers=n0-host:port;n1-host:port;...`.
public struct RaftPeer: Sendable, Equatable, CustomStringConvertible {
    /// The node id: a letter and digits (`n0`). RocketMQ derives a follower's broker id from the
    /// digits (+1), so the shape is checked.
    public var id: String
    public var address: HostPort

    public var description: String { "\(id)-\(address)" }

    /// The broker id this node registers with when it is not the leader (RocketMQ's rule:
    /// digits + 1; the leader always registers as 0).
    public var followerBrokerId: Int64 { (Int64(id.dropFirst()) ?? 0) + 1 }

    /// Parses a whole `dLegerPeers` value: ids unique and well formed, ports in range, at least one.
    static func parseList(_ text: String) throws(ValueError) -> [RaftPeer] {
        var peers: [RaftPeer] = []
        for part in text.split(separator: ";", omittingEmptySubsequences: true) {
            let item = String(part).trimmingSpaces
            guard let dash = item.firstIndex(of: "-") else {
                throw ValueError("\(item.debugDescription) is not id-host:port")
            }
            let id = String(item[..<dash])
            guard let first = id.unicodeScalars.first, ("a"..."z").contains(first) || ("A"..."Z").contains(first),
                id.count >= 2, id.unicodeScalars.dropFirst().allSatisfy({ ("0"..."9").contains($0) })
            else {
                throw ValueError("peer id \(id.debugDescription) must be a letter followed by digits (like n0): the broker id is derived from the digits")
            }
            let address = try Values.hostPort(String(item[item.index(after: dash)...]), whole: text)
            if peers.contains(where: { $0.id == id }) {
                throw ValueError("peer id \(id) appears twice")
            }
            if let other = peers.first(where: { $0.address == address }) {
                throw ValueError("peers \(other.id) and \(id) share the address \(address)")
            }
            peers.append(RaftPeer(id: id, address: address))
        }
        guard !peers.isEmpty else { throw ValueError("\(text.debugDescription) names no peer (expected n0-host:port;n1-host:port;...)") }
        return peers
    }
}
