#ifndef RAFTMQ_CCHECKSUM_H
#define RAFTMQ_CCHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/// CRC32C (Castagnoli), continuing from `crc` (pass 0 to start). Uses the SSE4.2 crc32 instruction
/// when the CPU has it; otherwise returns UINT64_MAX so the caller takes its portable path.
uint64_t raftmq_crc32c_hw(uint32_t crc, const void *data, size_t length);

/// 1 when the running CPU offers the SSE4.2 crc32 instruction.
int raftmq_crc32c_hw_available(void);

/// zlib's CRC32 (IEEE 802.3), continuing from `crc` (pass 0 to start). RocketMQ's body CRC.
uint32_t raftmq_crc32_ieee(uint32_t crc, const void *data, size_t length);

#endif
