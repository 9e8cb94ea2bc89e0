import CZlib

/// zlib streams as RocketMQ uses them: compressed broker registrations, and message bodies whose
/// sysFlag bit 0 is set (Java compresses bodies over 4 KiB).
public enum Zlib {
    public enum Inflated: Sendable, Equatable {
        case inflated([UInt8])
        /// It would inflate past the limit.
        case tooLarge
        /// Not a complete zlib stream (zlib's status).
        case corrupt(Int32)
    }

    /// Inflates a whole zlib stream, bounded by `limit` output bytes.
    public static func inflate(_ input: [UInt8], limit: Int = 64 << 20) -> Inflated {
        var stream = z_stream()
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return .corrupt(Z_MEM_ERROR) }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var source = input
        var status: Int32 = Z_OK
        source.withUnsafeMutableBufferPointer { src in
            stream.next_in = src.baseAddress
            stream.avail_in = uInt(src.count)
            repeat {
                chunk.withUnsafeMutableBufferPointer { dst in
                    stream.next_out = dst.baseAddress
                    stream.avail_out = uInt(dst.count)
                    status = CZlib.inflate(&stream, Z_NO_FLUSH)
                    output.append(contentsOf: dst[0..<(dst.count - Int(stream.avail_out))])
                }
            } while status == Z_OK && output.count <= limit && (stream.avail_in > 0 || stream.avail_out == 0)
        }
        if output.count > limit { return .tooLarge }
        return status == Z_STREAM_END ? .inflated(output) : .corrupt(status)
    }
}

extension Zlib {
    /// A whole zlib stream of `input` (what Java's producer sends for bodies over 4 KiB, level 5).
    public static func deflate(_ input: [UInt8], level: Int32 = 5) -> [UInt8]? {
        var stream = z_stream()
        guard deflateInit_(&stream, level, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))))
        var source = input
        let status: Int32 = source.withUnsafeMutableBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                stream.next_in = src.baseAddress
                stream.avail_in = uInt(src.count)
                stream.next_out = dst.baseAddress
                stream.avail_out = uInt(dst.count)
                return CZlib.deflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { return nil }
        return Array(output[0..<Int(stream.total_out)])
    }
}
