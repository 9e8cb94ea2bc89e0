import Config

/// The properties parser and the broker configuration loader: any bytes give entries, then
/// settings or a ConfigError naming the file; never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = PropertiesParser.parse(bytes)
    do {
        let (settings, _) = try ConfigLoader.loadBroker(bytes: bytes, path: "fuzz.conf", environment: ["HOME": "/nonexistent"])
        _ = settings.effectiveProperties()
    } catch {
        let text = "\(error)"
        if !text.contains("fuzz.conf") { fatalError("a configuration error that does not name the file: \(text)") }
    }
    return 0
}
