#!/usr/bin/python3
"""Checks flc's ONNX exports with the official onnx package (python3-onnx).

  check_onnx.py MODEL.onnx... [--outputs K] [--expect-sha256 HEX]
                [--expect-version N]
  check_onnx.py --proto export/onnx.proto

For a model: onnx.checker.check_model(full_check=True) (which runs strict
shape inference too), then shape inference on its own, and the contract of
export/fl_export.h: IR version 8, opset 13, input "input" with a symbolic
batch dimension, output "probabilities" inferred as [N, K], initializers as
raw data, metadata format/spec/output/sha256/version.

With --proto: every field that export/onnx.proto declares has the name,
number, label and type of the same field in the official schema compiled
into the onnx package, so the subset encodes real ONNX.

Exit status: 0 pass, 1 failure, 77 onnx not installed.
"""
import argparse
import re
import sys

try:
    import onnx
    from onnx import checker, shape_inference
except ImportError:
    print("skipped: the onnx package is not installed for " + sys.executable + " (run "
          "scripts/setup.sh, which installs python3-onnx)")
    sys.exit(77)


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def dims(vi):
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_param if d.HasField("dim_param") else
                   d.dim_value if d.HasField("dim_value") else "?")
    return out


def check_model(path, outputs, sha, version):
    model = onnx.load(path)
    try:
        checker.check_model(model, full_check=True)
    except Exception as e:  # the checker's own exception types vary by version
        fail("%s: onnx.checker: %s" % (path, e))
    if model.ir_version != 8:
        fail("%s: ir_version %d, expected 8" % (path, model.ir_version))
    ops = {o.domain: o.version for o in model.opset_import}
    if ops.get("", None) != 13:
        fail("%s: opset imports %s, expected the default domain at 13" % (path, ops))
    g = model.graph
    if [i.name for i in g.input] != ["input"] or [o.name for o in g.output] != ["probabilities"]:
        fail("%s: inputs %s, outputs %s" % (path, [i.name for i in g.input],
                                            [o.name for o in g.output]))
    if dims(g.input[0])[0] != "N":
        fail("%s: input dims %s: the batch dimension should be 'N'" % (path, dims(g.input[0])))
    for t in g.initializer:
        if t.data_type != onnx.TensorProto.FLOAT or not t.raw_data or t.float_data:
            fail("%s: initializer %s is not float raw_data" % (path, t.name))
        if not re.fullmatch(r"layers\.\d+\.(weight|bias)", t.name):
            fail("%s: initializer name %s" % (path, t.name))
    meta = {p.key: p.value for p in model.metadata_props}
    for key in ("format", "spec", "output", "sha256", "version"):
        if key not in meta:
            fail("%s: metadata has no %r: %s" % (path, key, meta))
    if meta["format"] != "flc":
        fail("%s: metadata format %r" % (path, meta["format"]))
    if sha and meta["sha256"] != sha:
        fail("%s: metadata sha256 %s, expected %s" % (path, meta["sha256"], sha))
    if version and meta["version"] != version:
        fail("%s: metadata version %s, expected %s" % (path, meta["version"], version))
    last = g.node[-1].op_type
    if last != {"sigmoid": "Sigmoid", "softmax": "Softmax"}.get(meta["output"]):
        fail("%s: last node %s for output %s" % (path, last, meta["output"]))

    inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    out = dims(inferred.graph.output[0])
    if len(out) != 2 or out[0] != "N" or (outputs and out[1] != outputs):
        fail("%s: output shape %s, expected ['N', %s]" % (path, out, outputs or "K"))
    known = {v.name: dims(v) for v in inferred.graph.value_info}
    for node in g.node[:-1]:
        for o in node.output:
            if o not in known or not known[o] or known[o][0] != "N":
                fail("%s: shape inference gives no [N, ...] shape for %s (%s)" %
                     (path, o, node.op_type))
    print("ok: %s: %s (%s), %d nodes (%s), output %s, checker full_check passed" %
          (path, meta["spec"], meta["output"], len(g.node),
           " ".join(n.op_type for n in g.node), out))


def check_proto(path):
    """Compares the subset's fields with onnx's own descriptors."""
    text = re.sub(r"//[^\n]*", "", open(path).read())
    label = {1: "optional", 2: "required", 3: "repeated"}
    fdt = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].__class__
    scalar = {getattr(fdt, n): n[5:].lower() for n in dir(fdt) if n.startswith("TYPE_")}
    stack, checked = [], 0
    for tok in re.finditer(r"(message|enum|oneof)\s+(\w+)\s*\{|\}|(optional|repeated|required)?\s*"
                           r"([\w.]+)\s+(\w+)\s*=\s*(\d+)", text):
        if tok.group(1):
            stack.append((tok.group(1), tok.group(2)))
            continue
        if tok.group(0) == "}":
            stack.pop()
            continue
        scopes = [s for s in stack if s[0] != "oneof"]
        if not scopes or scopes[-1][0] != "message":
            continue
        desc = getattr(onnx, scopes[0][1]).DESCRIPTOR
        for _, name in scopes[1:]:
            desc = desc.nested_types_by_name[name]
        lab, typ, name, num = tok.group(3), tok.group(4), tok.group(5), int(tok.group(6))
        ref = desc.fields_by_name.get(name)
        where = "%s.%s" % (".".join(n for _, n in scopes), name)
        if ref is None:
            fail("%s: %s is not a field of the official %s" % (path, where, desc.full_name))
        if ref.number != num:
            fail("%s: %s = %d, official %d" % (path, where, num, ref.number))
        if lab and label[ref.label] != lab:
            fail("%s: %s is %s, official %s" % (path, where, lab, label[ref.label]))
        if ref.message_type is not None or ref.enum_type is not None:
            ref_name = (ref.message_type or ref.enum_type).name
            if typ.split(".")[-1] != ref_name:
                fail("%s: %s has type %s, official %s" % (path, where, typ, ref_name))
        elif scalar[ref.type] != typ:
            fail("%s: %s has type %s, official %s" % (path, where, typ, scalar[ref.type]))
        checked += 1
    if checked < 40:
        fail("%s: only %d fields found: is the parser out of step with the file?" %
             (path, checked))
    print("ok: %s: %d fields match the official onnx.proto (onnx %s)" %
          (path, checked, onnx.__version__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--proto")
    ap.add_argument("--outputs", type=int)
    ap.add_argument("--expect-sha256")
    ap.add_argument("--expect-version")
    args = ap.parse_args()
    if args.proto:
        check_proto(args.proto)
    for m in args.models:
        check_model(m, args.outputs, args.expect_sha256, args.expect_version)
    if not args.proto and not args.models:
        fail("nothing to check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
