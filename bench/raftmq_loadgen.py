#!/usr/bin/env python3
"""The peers' load generator (../shared/bench/loadgen.py, unchanged) with one more driver: RaftMQ,
spoken to as any RocketMQ 4.x client does, over the remoting protocol (SEND_MESSAGE_V2, JSON
headers), with asyncio and nothing else, so its client cost per message is comparable to the
peers' Python clients. Run it exactly as loadgen.py, with `--peer raftmq` and broker client ports as
endpoints (host:port, e.g. 127.0.0.1:30911); the topic comes from RAFTMQ_BENCH_TOPIC (BenchTopic).

A write is acknowledged when the broker answers SEND_OK (response code 0), which a Raft-group
broker sends once a quorum holds the message (fdatasync'ed on each with SYNC_FLUSH, in the page
cache with ASYNC_FLUSH) and it is committed and dispatched. Any other answer raises.
"""
import asyncio
import json
import os
import struct
import sys
import time

PEERS_DIR = os.environ.get("PEERS_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")
sys.path.insert(0, PEERS_DIR)
import loadgen  # noqa: E402  (the shared harness)

SEND_MESSAGE_V2 = 310
RESPONSE_FLAG = 1


class RemotingProtocol(asyncio.Protocol):
    """Frames: u32 length (of everything after it), u32 (serialize type << 24 | header length),
    the JSON header, the body. Answers are matched to requests by `opaque`."""

    def __init__(self):
        self.buf = bytearray()
        self.pending = {}
        self.transport = None
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buf = self.buf
        buf += data
        at = 0
        n = len(buf)
        while n - at >= 8:
            length, = struct.unpack_from(">I", buf, at)
            if length > 16 << 20:
                self.transport.close()
                return
            if n - at - 4 < length:
                break
            mark, = struct.unpack_from(">I", buf, at + 4)
            header_len = mark & 0xFFFFFF
            header = json.loads(bytes(buf[at + 8:at + 8 + header_len]))
            at += 4 + length
            if header.get("flag", 0) & RESPONSE_FLAG:
                fut = self.pending.pop(header.get("opaque"), None)
                if fut is not None and not fut.done():
                    fut.set_result(header)
        if at:
            del buf[:at]

    def connection_lost(self, exc):
        self.lost = exc or ConnectionResetError("connection closed")
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(self.lost)
        self.pending.clear()


class RaftMQDriver:
    """RocketMQ SEND_MESSAGE_V2 to one broker. endpoint = host:port (the broker's listenPort)."""

    def __init__(self, endpoint, args, tag):
        self.host, port = endpoint.rsplit(":", 1)
        self.port = int(port)
        self.topic = os.environ.get("RAFTMQ_BENCH_TOPIC", "BenchTopic")
        self.queues = int(os.environ.get("RAFTMQ_BENCH_QUEUES", "4"))
        self.proto = None
        self.opaque = 0
        # Everything of the header but opaque, queue id and born timestamp, encoded once.
        self.template = ('{"code":%d,"flag":0,"language":"PYTHON","opaque":%%d,"serializeTypeCurrentRPC":"JSON",'
                         '"version":395,"extFields":{"a":"bench_%s","b":"%s","c":"TBW102","d":"4","e":"%%d",'
                         '"f":"0","g":"%%d","h":"0","i":"","j":"0","k":"false","m":"false"}}') % (SEND_MESSAGE_V2, tag, self.topic)

    async def open(self):
        loop = asyncio.get_running_loop()
        _, self.proto = await asyncio.wait_for(loop.create_connection(RemotingProtocol, self.host, self.port), 2)

    async def write(self, payload, timeout):
        p = self.proto
        if p is None or p.lost is not None:
            raise ConnectionResetError("not connected")
        self.opaque += 1
        opaque = self.opaque
        header = (self.template % (opaque, opaque % self.queues, int(time.time() * 1000))).encode()
        fut = asyncio.get_running_loop().create_future()
        p.pending[opaque] = fut
        p.transport.write(struct.pack(">II", 4 + len(header) + len(payload), len(header)) + header + payload)
        try:
            answer = await asyncio.wait_for(fut, timeout)
        finally:
            p.pending.pop(opaque, None)
        if answer.get("code") != 0:
            raise RuntimeError(f"send answered {answer.get('code')}: {answer.get('remark')}")

    async def close(self):
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


loadgen.DRIVERS["raftmq"] = RaftMQDriver

if __name__ == "__main__":
    loadgen.main()
