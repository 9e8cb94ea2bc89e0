// How the way a log file is laid out changes what group commit costs on this disk.
//
// One thread appends groups of N x 1072 bytes (64 entries of a 1 KiB body and the 48-byte header by
// default) with pwrite, then fdatasync, for a fixed time, as the raw baseline of `mqbench storage`
// does. Only the file's layout differs between modes:
//   grow      a new file that grows with every write (the baseline and LogStore's segments today)
//   falloc    posix_fallocate'd to its full size first (unwritten extents: what fio lays out)
//   zeroed    written with zeros and synced to its full size first (RocketMQ's warmed mapped file,
//             PostgreSQL's WAL segment): every later sync is an overwrite, no metadata to commit
//   ahead     grows, while a second thread keeps the next MiBs written with zeros and synced
//             (same file: --ahead-direct uses O_DIRECT for the zeros)
//   next      `zeroed`, while a second thread writes another whole file with zeros (the next segment
//             being prepared during the current one)
// Prints one line per run: MB/s, syncs, mean fdatasync and pwrite time.
// Build: cc -O2 -pthread -o disk-discipline bench/disk-discipline.c
// Run:   ./disk-discipline MODE SECONDS DIR [--ahead-direct]
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { GROUP_BYTES = 64 * 1072, ZERO_CHUNK = 1 << 20, FILE_BYTES = 1 << 30 };
enum { AHEAD_LEAD = 64 << 20, AHEAD_STEP = 16 << 20 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void fail(const char *what) {
    fprintf(stderr, "disk-discipline: %s: %s\n", what, strerror(errno));
    exit(1);
}

// Writes [from, to) of fd with zeros in 1 MiB pwrites, syncing every `sync_every` bytes and at the end.
static void zero_fill(int fd, long from, long to, long sync_every, const atomic_int *stop) {
    static char zeros[ZERO_CHUNK] __attribute__((aligned(4096)));
    for (long at = from; at < to && !(stop && atomic_load(stop)); at += ZERO_CHUNK) {
        if (pwrite(fd, zeros, ZERO_CHUNK, at) != ZERO_CHUNK) fail("pwrite zeros");
        if ((at + ZERO_CHUNK - from) % sync_every == 0 && fdatasync(fd) != 0) fail("fdatasync zeros");
    }
    if (fdatasync(fd) != 0) fail("fdatasync zeros");
}

struct helper {
    atomic_int stop;
    atomic_long written;   // bytes the appender has written
    atomic_long zeroed;    // bytes of the log file written with zeros (mode ahead)
    int fd;                // the file the helper writes
    int direct;
    const char *path;      // mode next: the other file
    long prepared;
};

static void *ahead_thread(void *arg) {
    struct helper *h = arg;
    while (!atomic_load(&h->stop)) {
        long z = atomic_load(&h->zeroed);
        if (z - atomic_load(&h->written) < AHEAD_LEAD && z < FILE_BYTES) {
            zero_fill(h->fd, z, z + AHEAD_STEP, AHEAD_STEP, NULL);
            if (h->direct) posix_fadvise(h->fd, z, AHEAD_STEP, POSIX_FADV_WILLNEED);
            atomic_store(&h->zeroed, z + AHEAD_STEP);
        } else {
            usleep(200);
        }
    }
    return NULL;
}

static void *next_thread(void *arg) {
    struct helper *h = arg;
    int fd = open(h->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("open next");
    zero_fill(fd, 0, FILE_BYTES, 8 << 20, &h->stop);
    h->prepared = lseek(fd, 0, SEEK_END);
    close(fd);
    unlink(h->path);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: disk-discipline grow|falloc|zeroed|ahead|next SECONDS DIR [--ahead-direct]\n");
        return 2;
    }
    const char *mode = argv[1];
    double seconds = atof(argv[2]);
    char path[4096], other[4096];
    snprintf(path, sizeof path, "%s/disk-discipline.log", argv[3]);
    snprintf(other, sizeof other, "%s/disk-discipline.next", argv[3]);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("open");
    struct helper h = {.fd = fd, .path = other};
    pthread_t helper;
    int helping = 0;
    if (!strcmp(mode, "falloc")) {
        if (posix_fallocate(fd, 0, FILE_BYTES) != 0 || fsync(fd) != 0) fail("fallocate");
    } else if (!strcmp(mode, "zeroed") || !strcmp(mode, "next")) {
        zero_fill(fd, 0, FILE_BYTES, 64 << 20, NULL);
        if (fsync(fd) != 0) fail("fsync");
        if (!strcmp(mode, "next")) helping = !pthread_create(&helper, NULL, next_thread, &h);
    } else if (!strcmp(mode, "ahead")) {
        h.direct = argc > 4 && !strcmp(argv[4], "--ahead-direct");
        if (h.direct) {
            h.fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
            if (h.fd < 0) fail("open O_DIRECT");
        }
        helping = !pthread_create(&helper, NULL, ahead_thread, &h);
        while (atomic_load(&h.zeroed) < AHEAD_LEAD) usleep(100);
    } else if (strcmp(mode, "grow")) {
        fprintf(stderr, "disk-discipline: unknown mode %s\n", mode);
        return 2;
    }
    char *group = malloc(GROUP_BYTES);
    memset(group, 0x5A, GROUP_BYTES);
    long offset = 0, syncs = 0;
    double syncTime = 0, writeTime = 0, start = now();
    while (now() - start < seconds && offset + GROUP_BYTES <= FILE_BYTES) {
        if (!strcmp(mode, "ahead")) {
            while (offset + GROUP_BYTES > atomic_load(&h.zeroed) && atomic_load(&h.zeroed) < FILE_BYTES) usleep(10);
        }
        double t0 = now();
        if (pwrite(fd, group, GROUP_BYTES, offset) != GROUP_BYTES) fail("pwrite");
        double t1 = now();
        if (fdatasync(fd) != 0) fail("fdatasync");
        syncTime += now() - t1;
        writeTime += t1 - t0;
        offset += GROUP_BYTES;
        atomic_store(&h.written, offset);
        syncs++;
    }
    double elapsed = now() - start;
    atomic_store(&h.stop, 1);
    if (helping) pthread_join(helper, NULL);
    printf("%-6s %7.1f MB/s  %6ld syncs  fdatasync %5.0f us  pwrite %5.1f us%s\n", mode, offset / elapsed / 1e6, syncs,
           syncTime / syncs * 1e6, writeTime / syncs * 1e6, helping && !strcmp(mode, "next") ? "  (next file being zeroed)" : "");
    close(fd);
    if (h.direct) close(h.fd);
    unlink(path);
    return 0;
}
