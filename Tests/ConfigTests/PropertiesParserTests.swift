import Testing
import TestSupport

@testable import Config

@Suite(.ownThreads) struct PropertiesParserTests {
    func pairs(_ text: String) -> [String: String] {
        Dictionary(PropertiesParser.parse(text).map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
    }

    @Test func everySeparatorJavaAccepts() {
        let p = pairs("a=1\nb = 2\nc:3\nd 4\ne\t=\t5\nf =\n g=7  \n")
        #expect(p == ["a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "", "g": "7"])
    }

    @Test func commentsBlankLinesAndLineEnds() {
        let entries = PropertiesParser.parse("# comment\r\n! also a comment\r\n\r\n  \r\nkey=value\r\nother=x\rthird=y\n")
        #expect(entries.map(\.key) == ["key", "other", "third"])
        #expect(entries.map(\.value) == ["value", "x", "y"])
        #expect(entries.map(\.line) == [5, 6, 7])
    }

    @Test func continuationLinesAndEscapes() {
        let entries = PropertiesParser.parse("peers=n0-a:1;\\\n    n1-b:2\nesc=tab\\there\\u0041\\\\end\nodd=ends\\\\\nnext=1\nkey\\ with\\=sign=v\n")
        let p = Dictionary(entries.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
        #expect(p["peers"] == "n0-a:1;n1-b:2")
        #expect(p["esc"] == "tab\thereA\\end")
        #expect(p["odd"] == "ends\\")  // an even number of backslashes does not continue the line
        #expect(p["next"] == "1")
        #expect(p["key with=sign"] == "v")
        #expect(entries.first { $0.key == "next" }?.line == 5)
    }

    @Test func latin1FallbackForBytesThatAreNotUTF8() {
        let bytes: [UInt8] = Array("# ".utf8) + [0xC4, 0xE9] + Array("\nbrokerName=a\n".utf8)
        #expect(PropertiesParser.parse(bytes).map(\.value) == ["a"])
        let chinese = Array("#所属集群名字\nbrokerClusterName=rocketmq-cluster\n".utf8)
        #expect(PropertiesParser.parse(chinese).first?.value == "rocketmq-cluster")
    }

    @Test func randomBytesNeverCrashTheParserOrTheLoader() {
        var rng = SplitMix64(seed: 1234)
        let alphabet: [UInt8] = Array("=:#!\\ \t\r\nabcu0123${}-;.".utf8) + [0xFF, 0xC3, 0x00]
        for _ in 0..<3000 {
            let bytes = (0..<Int.random(in: 0...80, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            _ = PropertiesParser.parse(bytes)
            _ = try? ConfigLoader.loadBroker(bytes: bytes, path: "fuzz.conf", environment: [:])
        }
    }
}

