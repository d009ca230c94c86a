#!/usr/bin/python3
"""Independent reader for flc's safetensors exports (export/fl_export.h).

Parses the file by the safetensors specification alone (8-byte little-endian
header length, JSON header, tensor data), checks the layout rules (header a
multiple of 8 bytes, data offsets contiguous and covering the data, names
layers.<i>.weight / layers.<i>.bias with shapes that follow from the spec in
the metadata), rebuilds the tensors with numpy, runs its own forward pass
(conv valid stride 1 + ReLU, 2x2 max-pool stride 2, NCHW flatten, dense +
ReLU, sigmoid or softmax) in float64, and compares it with the C model's
predictions within 1e-5 absolute.

usage: check_safetensors.py MODEL.safetensors --input X.f32 --shape S
           [--pred P.f32 | --pred-if-present P.f32] [--write-ref R.f32] [--expect-sha256 HEX]
           [--expect-version N]
  --shape   one example's input shape: d (MLP) or C,H,W
  --pred-if-present  as --pred, but only noted when the file is absent (a
            build without a C model for the spec writes none)
Exit status: 0 pass, 1 mismatch or malformed file, 77 numpy missing.
"""
import argparse
import hashlib
import json
import os
import re
import struct
import sys

try:
    import numpy as np
except ImportError:
    print("skipped: numpy is not installed for " + sys.executable + " (run scripts/setup.sh, which "
          "installs python3-numpy)")
    sys.exit(77)

TOL = 1e-5


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def parse_spec(text):
    """'input HxWxC; conv K k; pool 2; dense N' -> ((C, H, W), [layers])."""
    items = [s.strip() for s in text.split(";")]
    m = re.fullmatch(r"input (\d+)x(\d+)x(\d+)", items[0])
    if not m:
        fail("spec %r does not start with 'input HxWxC'" % text)
    h, w, c = (int(v) for v in m.groups())
    layers = []
    for it in items[1:]:
        parts = it.split()
        if parts[0] == "conv" and len(parts) == 3:
            layers.append(("conv", int(parts[1]), int(parts[2])))
        elif parts[0] == "pool" and len(parts) == 2 and parts[1] == "2":
            layers.append(("pool", 0, 2))
        elif parts[0] == "dense" and len(parts) == 2:
            layers.append(("dense", int(parts[1]), 0))
        else:
            fail("spec item %r is not conv K k, pool 2 or dense N" % it)
    return (c, h, w), layers


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("%s: shorter than the 8-byte header length" % path)
    (hlen,) = struct.unpack("<Q", blob[:8])
    if hlen % 8 != 0:
        fail("%s: header length %d is not a multiple of 8" % (path, hlen))
    if 8 + hlen > len(blob):
        fail("%s: header length %d runs past the end of the file" % (path, hlen))
    raw = blob[8:8 + hlen]
    if not raw.startswith(b"{"):
        fail("%s: the header does not start with '{'" % path)
    if raw.rstrip(b" ") != raw.rstrip():
        fail("%s: the header is padded with something other than spaces" % path)
    header = json.loads(raw.decode("utf-8"))
    data = blob[8 + hlen:]
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        fail("%s: __metadata__ missing or not all strings: %r" % (path, meta))
    spans = []
    tensors = {}
    for name, info in header.items():
        if set(info) != {"dtype", "shape", "data_offsets"}:
            fail("%s: tensor %s has fields %s" % (path, name, sorted(info)))
        if info["dtype"] != "F32":
            fail("%s: tensor %s has dtype %s, not F32" % (path, name, info["dtype"]))
        b, e = info["data_offsets"]
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        if e - b != 4 * count:
            fail("%s: tensor %s spans %d bytes for shape %s" % (path, name, e - b,
                                                                   info["shape"]))
        spans.append((b, e, name))
        tensors[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"])
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            fail("%s: tensor %s starts at %d, expected %d (gap or overlap)" % (path, name, b, pos))
        pos = e
    if pos != len(data):
        fail("%s: tensors cover %d bytes of %d bytes of data" % (path, pos, len(data)))
    return meta, tensors


def forward(x, in_shape, layers, tensors, output):
    """float64 forward pass over a batch x of shape (n, C, H, W)."""
    a = x.astype(np.float64)
    n = a.shape[0]
    flat = False
    c, h, w = in_shape
    for i, (kind, units, k) in enumerate(layers):
        last = i == len(layers) - 1
        if kind == "conv":
            wt = tensors["layers.%d.weight" % i].astype(np.float64)
            bs = tensors["layers.%d.bias" % i].astype(np.float64)
            if wt.shape != (units, c, k, k):
                fail("layers.%d.weight has shape %s, expected %s" % (i, wt.shape,
                                                                     (units, c, k, k)))
            oh, ow = h - k + 1, w - k + 1
            out = np.zeros((n, units, oh, ow))
            for dy in range(k):
                for dx in range(k):
                    patch = a[:, :, dy:dy + oh, dx:dx + ow]       # n, c, oh, ow
                    out += np.einsum("nchw,kc->nkhw", patch, wt[:, :, dy, dx])
            out += bs[None, :, None, None]
            a = np.maximum(out, 0.0)
            c, h, w = units, oh, ow
        elif kind == "pool":
            h2, w2 = h // 2, w // 2
            a = a[:, :, :2 * h2, :2 * w2].reshape(n, c, h2, 2, w2, 2).max(axis=(3, 5))
            h, w = h2, w2
        else:
            if not flat:
                a = a.reshape(n, -1)
                flat = True
            wt = tensors["layers.%d.weight" % i].astype(np.float64)
            bs = tensors["layers.%d.bias" % i].astype(np.float64)
            if wt.shape != (units, a.shape[1]):
                fail("layers.%d.weight has shape %s, expected %s" % (i, wt.shape,
                                                                     (units, a.shape[1])))
            a = a @ wt.T + bs
            if not last:
                a = np.maximum(a, 0.0)
            c, h, w = units, 1, 1
    if output == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    z = a - a.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--input", required=True)
    ap.add_argument("--shape", required=True)
    ap.add_argument("--pred")
    ap.add_argument("--pred-if-present")
    ap.add_argument("--write-ref")
    ap.add_argument("--expect-sha256")
    ap.add_argument("--expect-version")
    args = ap.parse_args()
    if args.pred_if_present:
        if os.path.exists(args.pred_if_present):
            args.pred = args.pred_if_present
        else:
            print("note: %s does not exist: no C predictions to compare" % args.pred_if_present)

    meta, tensors = read_safetensors(args.model)
    for key in ("format", "spec", "output", "sha256", "version"):
        if key not in meta:
            fail("%s: metadata has no %r: %r" % (args.model, key, meta))
    if meta["format"] != "flc":
        fail("metadata format is %r, not 'flc'" % meta["format"])
    if meta["output"] not in ("sigmoid", "softmax"):
        fail("metadata output is %r" % meta["output"])
    if not re.fullmatch(r"[0-9a-f]{64}", meta["sha256"]):
        fail("metadata sha256 %r is not 64 hex digits" % meta["sha256"])
    if args.expect_sha256 and meta["sha256"] != args.expect_sha256:
        fail("metadata sha256 %s, expected %s" % (meta["sha256"], args.expect_sha256))
    if args.expect_version and meta["version"] != args.expect_version:
        fail("metadata version %s, expected %s" % (meta["version"], args.expect_version))

    in_shape, layers = parse_spec(meta["spec"])
    # Every conv and dense layer has exactly its weight and bias; nothing else.
    expect = set()
    for i, (kind, _, _) in enumerate(layers):
        if kind != "pool":
            expect |= {"layers.%d.weight" % i, "layers.%d.bias" % i}
    if set(tensors) != expect:
        fail("tensors %s, expected %s" % (sorted(tensors), sorted(expect)))

    # The model's SHA-256 is that of its parameters' little-endian bytes in
    # parameter order (layer order, weight then bias).
    hsh = hashlib.sha256()
    for i, (kind, _, _) in enumerate(layers):
        if kind != "pool":
            hsh.update(tensors["layers.%d.weight" % i].astype("<f4").tobytes())
            hsh.update(tensors["layers.%d.bias" % i].astype("<f4").tobytes())
    if hsh.hexdigest() != meta["sha256"]:
        fail("SHA-256 of the tensors is %s, the metadata says %s" % (hsh.hexdigest(),
                                                                    meta["sha256"]))

    shape = tuple(int(v) for v in args.shape.split(","))
    per = int(np.prod(shape))
    c, h, w = in_shape
    if per != c * h * w:
        fail("--shape %s has %d values, the spec's input %d" % (args.shape, per, c * h * w))
    x = np.fromfile(args.input, dtype="<f4")
    if x.size % per != 0:
        fail("%s: %d floats is not a whole number of %d-value examples" % (args.input, x.size,
                                                                            per))
    n = x.size // per
    probs = forward(x.reshape(n, c, h, w), in_shape, layers, tensors, meta["output"])
    outs = probs.shape[1]
    if args.write_ref:
        probs.astype("<f4").tofile(args.write_ref)
    if args.pred:
        pred = np.fromfile(args.pred, dtype="<f4").astype(np.float64)
        if pred.size != n * outs:
            fail("%s: %d floats, expected %d x %d" % (args.pred, pred.size, n, outs))
        err = np.abs(pred.reshape(n, outs) - probs).max()
        if not err <= TOL:
            fail("%s: C predictions differ from numpy's by %.3g (> %g)" % (args.model, err, TOL))
        print("ok: %s: %s (%s), %d tensors, %d examples, max |C - numpy| = %.2g" %
              (args.model, meta["spec"], meta["output"], len(tensors), n, err))
    else:
        print("ok: %s: %s (%s), %d tensors, %d examples, numpy reference only" %
              (args.model, meta["spec"], meta["output"], len(tensors), n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
