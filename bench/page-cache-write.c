// The kernel's cost of a buffered write, per KiB, into pages this process has not written before:
// one thread pwrites MIB MiB of zeros to PATH in CHUNK-byte writes and prints the process's CPU time
// per KiB written (BENCHMARKS.md, "The first touch of guest memory"). The file is kept, so several
// runs in a row each take pages the previous ones did not free; delete the files to free them.
//   cc -O2 -o /tmp/page-cache-write bench/page-cache-write.c
//   /tmp/page-cache-write CHUNK MIB PATH
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s CHUNK MIB PATH\n", argv[0]); return 2; }
    long chunk = atol(argv[1]), total = atol(argv[2]) << 20;
    if (chunk <= 0 || chunk > (1 << 20) || total <= 0) { fprintf(stderr, "CHUNK: 1..1048576, MIB: > 0\n"); return 2; }
    char *buf = aligned_alloc(4096, 1 << 20);
    if (buf == NULL) { perror("aligned_alloc"); return 1; }
    memset(buf, 0, 1 << 20);
    int fd = open(argv[3], O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0) { perror(argv[3]); return 1; }
    double start = cpu_seconds();
    for (long offset = 0; offset < total; offset += chunk) {
        if (pwrite(fd, buf, (size_t)chunk, offset) != chunk) { perror("pwrite"); return 1; }
    }
    double used = cpu_seconds() - start;
    printf("%s: %ld-byte writes, %.3f us CPU per KiB\n", argv[3], chunk, used * 1e6 / (double)(total >> 10));
    close(fd);
    return 0;
}
