import Dispatch
import Glibc

/// SIGTERM and SIGINT end the process cleanly: stop taking work, flush, close.
public final class SignalWaiter: @unchecked Sendable {
    /// Kept alive for the process's life; never touched after init (hence @unchecked).
    private let sources: [any DispatchSourceSignal]
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self)
        var s: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [continuation] in continuation.yield() }
            source.resume()
            s.append(source)
        }
        sources = s
    }

    public func wait() async {
        var it = stream.makeAsyncIterator()
        _ = await it.next()
    }
}

