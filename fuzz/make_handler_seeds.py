#!/usr/bin/env python3
"""Writes the seeds of the coord_handler and node_handler fuzz targets.

usage: fuzz/make_handler_seeds.py [CORPUS_DIR]   (default: fuzz/corpus next to this file)

Both targets read records [kind][len lo][len hi][payload] (coord_handler
after one configuration byte); the opening comments of
fuzz/fuzz_coord_handler.c and fuzz/fuzz_node_handler.c define the kinds.
The harnesses build and sign the protocol messages themselves, so the seeds
are plain record sequences that drive the daemons into deep states: whole
rounds with and without secure aggregation, SecAgg+, the evaluation round,
timeouts, unreachable nodes. A few also carry raw envelopes from the wire
target's corpus (fuzz/corpus/wire) as frames.
"""
import os
import struct
import sys


def rec(kind, payload=b""):
    return bytes([kind & 0xFF]) + struct.pack("<H", len(payload)) + payload


# ----------------------------------------------------------- coord_handler
# kind % 8: 0 raw, 1 join, 2 update, 3 secagg (fuzz payload), 4 honest secagg,
# 5 deadline, 6 decline, 7 toggle unreachable; sender ((kind >> 3) & 15) % 5;
# kind & 0x80: the next record comes in the same burst.
def c(kind, who=0, payload=b"", burst=False):
    return rec(kind + 8 * who + (0x80 if burst else 0), payload)


def coord_seeds(wire):
    s = {}
    # No secure aggregation, one round: join x2, an update each; the round
    # completes, then the evaluation round (node_evaluation) runs.
    upd = bytes([0x40]) + struct.pack("<I", 120) + bytes([8]) + bytes(range(60, 200))
    s["plain-round"] = bytes([0x01]) + c(1, 0) + c(1, 1) + c(2, 0, upd) + c(2, 1, upd) + \
        c(2, 0, upd) + c(2, 1, upd)
    # Two rounds, raw float parameters, a decline, a timeout.
    raw = bytes([0x01]) + struct.pack("<I", 7) + bytes([3]) + struct.pack("<129f", *[0.25] * 129)
    s["plain-two-rounds"] = bytes([0x05]) + c(1, 0) + c(1, 1) + c(1, 2) + c(2, 0, raw) + \
        c(6, 2) + c(2, 1, upd) + c(2, 0, upd) + c(5) + c(2, 1, upd) + c(5)
    # Secure aggregation with three parties (min_nodes 3), every step honest,
    # then the evaluation round the same way.
    steps = b""
    for step in range(5):
        for who in range(3):
            pl = struct.pack("<I", 50 + who) + bytes([128 + who] * 16) if step == 2 else b""
            steps += c(4, who, pl)
    s["secagg-three"] = bytes([0x20]) + c(1, 0) + c(1, 1) + c(1, 2) + steps + steps
    # SecAgg+ (2 neighbours) with three parties.
    s["secagg-plus"] = bytes([0x30]) + c(1, 0) + c(1, 1) + c(1, 2) + steps + steps
    # Three parties joining in one burst (threshold 2), one silent at the
# masking step: the deadline moves on without it.
    part = b""
    for step in range(5):
        for who in range(3):
            if step == 2 and who == 1:
                continue
            part += c(4, who)
        if step == 2:
            part += c(5)
    s["secagg-dropout"] = bytes([0x00]) + c(1, 0, burst=True) + c(1, 1, burst=True) + \
        c(1, 2) + part
    # Secure aggregation with a fuzzed message, an unreachable node, a
    # rejoin during the round, an intruder and a malformed frame.
    s["secagg-misc"] = bytes([0x20]) + c(1, 0) + c(1, 1) + c(7, 2) + c(1, 2) + c(7, 2) + \
        c(1, 2) + c(4, 0) + c(3, 1, b"\x01\x02\x03") + c(4, 2) + c(1, 3) + c(0, 3, b"x") + \
        c(0, 4, b"") + c(5) + c(4, 0) + c(4, 2) + c(5)
    # Refused joins, an update without a round, an update in the clear
    # during a secure round.
    s["refusals"] = bytes([0x00]) + c(1, 0, b"\x07\x05") + c(1, 1, b"\x06") + c(2, 0, upd) + \
        c(1, 0) + c(1, 1) + c(2, 0, upd) + c(6, 1, b"\x01")
    # Raw envelopes from the wire corpus, from joined nodes.
    body = bytes([0x01]) + c(1, 0) + c(1, 1)
    for i, frame in enumerate(wire):
        body += c(0, i % 3, frame)
    s["raw-wire"] = body
    return s


# ------------------------------------------------------------ node_handler
# kind % 6: 0 raw, 1 RoundStart, 2 secagg (fuzz payload), 3 simulated
# coordinator step, 4 RoundResult, 5 Error.
def rs(flags, steps=1, q=25, clip=16, lr=25, rounds=3, params=b""):
    return rec(1, bytes([flags, steps, q, clip, lr, rounds]) + params)


def node_seeds(wire):
    s = {}
    sim5 = rec(3) * 5
    # Without secure aggregation: train, send the update, result, next round.
    s["plain-rounds"] = rs(0x01) + rec(4) + rs(0x01, steps=3, params=bytes(range(100))) + \
        rec(4, b"\x01")
    # Secure aggregation with three participants and evaluation counters:
    # all five steps, the result, then a second round.
    s["secagg-round"] = rs(0x08) + sim5 + rec(4) + rs(0x08, steps=2) + sim5 + rec(4, b"\x01")
    # SecAgg+, then an evaluation-only round.
    s["secagg-plus-eval"] = rs(0x0C) + sim5 + rec(4) + rs(0x0A) + sim5 + rec(4, b"\x01")
    # Two participants in another order; a corrupted relay at step 2.
    s["secagg-two"] = rs(0x18) + rec(3) + rec(3) + rec(3, b"\x05\x00\xff\x01") + rec(3) + \
        rec(3)
    # Participant lists the node must refuse; a fuzzed secagg message; an
    # error; a stale RoundStart.
    s["secagg-refusals"] = rs(0x20) + rs(0x30) + rs(0x08) + rec(2, b"\x00" * 40) + \
        rec(5, b"bad things") + rs(0x41) + rec(3) + rec(3)
    # A plan the cap refuses (sampling rate 1, many rounds): decline, then
    # the budget stays spent.
    s["budget"] = rs(0x01, steps=3, q=255, clip=255, rounds=7) + rs(0x01)
    body = b""
    for frame in wire:
        body += rec(0, frame)
    s["raw-wire"] = body + rs(0x08) + rec(3) + rec(3)
    return s


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    wire_dir = os.path.join(here, "corpus", "wire")
    wire = []
    for name in sorted(os.listdir(wire_dir))[:40]:
        with open(os.path.join(wire_dir, name), "rb") as f:
            data = f.read()
        if len(data) <= 4000:
            wire.append(data)
    for target, seeds in (("coord_handler", coord_seeds(wire)),
                          ("node_handler", node_seeds(wire))):
        os.makedirs(os.path.join(root, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(root, target, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
