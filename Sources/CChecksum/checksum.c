// Checksums for the log format. Kept in C because no Swift package here offers CRC32C and the
// SSE4.2 instruction is reachable without unsafe compiler flags through a per-function target.
#include "CChecksum.h"

#include <string.h>
#include <zlib.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = ~crc;
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    return ~(uint32_t)c;
}

int raftmq_crc32c_hw_available(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & bit_SSE4_2) != 0;
}

uint64_t raftmq_crc32c_hw(uint32_t crc, const void *data, size_t length) {
    return crc32c_sse42(crc, (const unsigned char *)data, length);
}
#else
int raftmq_crc32c_hw_available(void) { return 0; }
uint64_t raftmq_crc32c_hw(uint32_t crc, const void *data, size_t length) {
    (void)crc; (void)data; (void)length;
    return UINT64_MAX;
}
#endif

uint32_t raftmq_crc32_ieee(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = (const unsigned char *)data;
    uLong c = crc;
    // zlib takes uInt lengths; feed large buffers in chunks.
    while (length > 0) {
        uInt chunk = length > 0x40000000u ? 0x40000000u : (uInt)length;
        c = crc32(c, p, chunk);
        p += chunk;
        length -= chunk;
    }
    return (uint32_t)c;
}
