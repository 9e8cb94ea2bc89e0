import LogFormat

/// The log entry and message record decoders: any bytes decode or throw LogFormatError; what decodes
/// encodes back to something that decodes to the same value.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let raw = UnsafeRawBufferPointer(start: data, count: size)
    if let header = try? EntryHeader.decode(raw) {
        var out: [UInt8] = []
        header.encode(into: &out)
        let again = out.withUnsafeBytes { try? EntryHeader.decode($0) }
        if again != header { fatalError("an entry header does not survive encode + decode") }
    }
    _ = try? LogEntryCodec.decode(raw, previousChainCRC: nil)
    _ = try? IndexRecord.decode(raw)
    _ = BlankRecord.paddingByteCount(raw)
    _ = try? MessageProperties.decode(raw)
    if let record = try? MessageRecord.decode(raw, verifyBodyCRC: false), let encoded = try? record.encoded() {
        let again = encoded.withUnsafeBytes { try? MessageRecord.decode($0, verifyBodyCRC: false) }
        if again?.body != record.body || again?.topic != record.topic || again?.properties != record.properties {
            fatalError("a message record does not survive encode + decode: \(record) became \(String(describing: again))")
        }
    }
    return 0
}
