#!/usr/bin/python3
"""torch_bench: the bench_dpsgd workloads in PyTorch, as the baseline.

Workloads (names as in `bench_dpsgd --json`):
  mlp30   MLP 30-128-64-1, ReLU hidden, sigmoid/BCE, batch 256
  mlp784  MLP 784-256-128-10, ReLU hidden, softmax/CE, batch 256
  cnn     28x28x1 -> conv 16 3x3 -> ReLU -> maxpool 2 -> conv 32 3x3 -> ReLU
          -> maxpool 2 -> flatten (800) -> dense 10, softmax/CE, batch 128

Methods, each ending with the same SGD update of the parameters:
  plain   forward, loss.backward(), update
  vmap    DP-SGD, per-example gradients with functorch.vmap(functorch.grad)
          over functorch.make_functional (torch.func does not exist in 1.13)
  hooks   DP-SGD, per-example gradients the way Opacus computes them:
          forward hooks keep each layer's input, full backward hooks its
          grad_output; einsum gives per-example weight gradients for Linear,
          unfold + einsum for Conv2d
DP-SGD = per-example gradients, clip each to L2 norm C = 1, sum, add
Gaussian noise N(0, (sigma C)^2) per parameter (torch.normal: not a
cryptographic generator, unlike the C code), divide by the batch, update.
Batches are fixed-size random draws from a synthetic pool (fixed seed).

Before timing, one batch per workload is checked: per-example gradient norms
from vmap and from hooks must agree within 1e-4 relative, and the sum of the
hooks per-example gradients must equal the plain batch gradient (same
tolerance, relative to its norm).  The script exits with status 3 on a
mismatch.

Output: one JSON line per (workload, method)
  {"workload":..., "method":"plain|vmap|hooks", "examples_per_s":...,
   "threads":..., ...}
and a human-readable table.  examples_per_s is the median over --repeats
measurements, each of at least --min-time seconds (bounded by --max-steps).

usage: /usr/bin/python3 bench/torch_bench.py [--threads N] [--workloads
       mlp30,mlp784,cnn] [--methods plain,vmap,hooks] [--min-time 2]
       [--repeats 3] [--check-only]
"""

import argparse
import copy
import json
import math
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import functorch
except ImportError as e:  # compare.sh reports this and skips the torch side
    print("torch_bench: PyTorch/functorch not importable (%s); install "
          "python3-torch (scripts/setup.sh --bench)" % e, file=sys.stderr)
    sys.exit(4)

CLIP = 1.0
SIGMA = 1.0
LR = 1e-3
POOL = 4096
SEED = 7
TOL = 1e-4

WORKLOADS = {
    "mlp30": {"batch": 256, "desc": "MLP 30-128-64-1 (sigmoid/BCE)"},
    "mlp784": {"batch": 256, "desc": "MLP 784-256-128-10 (softmax/CE)"},
    "cnn": {"batch": 128, "desc": "CNN 28x28x1 c16-p-c32-p-d10 (softmax/CE)"},
}


def make_model(name):
    if name == "mlp30":
        return nn.Sequential(nn.Linear(30, 128), nn.ReLU(), nn.Linear(128, 64),
                             nn.ReLU(), nn.Linear(64, 1))
    if name == "mlp784":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                             nn.ReLU(), nn.Linear(128, 10))
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(32 * 5 * 5, 10))
    raise ValueError(name)


def make_data(name, gen):
    if name == "mlp30":
        x = torch.rand(POOL, 30, generator=gen) * 2 - 1
        y = torch.randint(0, 2, (POOL, 1), generator=gen).float()
    elif name == "mlp784":
        x = torch.rand(POOL, 784, generator=gen) * 2 - 1
        y = torch.randint(0, 10, (POOL,), generator=gen)
    else:
        x = torch.rand(POOL, 1, 28, 28, generator=gen) * 2 - 1
        y = torch.randint(0, 10, (POOL,), generator=gen)
    return x, y


def loss_sum(name, out, y):
    """Sum over the batch of the per-example losses."""
    if name == "mlp30":
        return F.binary_cross_entropy_with_logits(out, y, reduction="sum")
    return F.cross_entropy(out, y, reduction="sum")


# ---------------------------------------------------------------- plain SGD

class Plain:
    def __init__(self, name, model):
        self.name, self.model = name, model
        self.params = [p for p in model.parameters()]

    def step(self, x, y):
        for p in self.params:
            p.grad = None
        loss = loss_sum(self.name, self.model(x), y) / x.shape[0]
        loss.backward()
        with torch.no_grad():
            for p in self.params:
                p.add_(p.grad, alpha=-LR)

    def batch_grad_sum(self, x, y):
        """Gradient of the summed loss (= sum of per-example gradients)."""
        for p in self.params:
            p.grad = None
        loss_sum(self.name, self.model(x), y).backward()
        return [p.grad.detach().clone() for p in self.params]


# -------------------------------------------------------------- DP helpers

def clip_sum_noise_update(params, grad_samples, batch):
    """grad_samples: per parameter, a (B, *p.shape) tensor.  Clip each
    example to CLIP, sum, add noise, divide by the batch, update params."""
    n = grad_samples[0].shape[0]
    norms = torch.stack([g.reshape(n, -1).norm(2, dim=1) for g in grad_samples],
                        dim=1).norm(2, dim=1)
    factor = (CLIP / (norms + 1e-6)).clamp(max=1.0)
    with torch.no_grad():
        for p, g in zip(params, grad_samples):
            s = torch.einsum("i,i...->...", factor, g)
            s.add_(torch.normal(0.0, SIGMA * CLIP, size=s.shape))
            p.add_(s, alpha=-LR / batch)
    return norms


def per_example_norms(grad_samples):
    n = grad_samples[0].shape[0]
    return torch.stack([g.reshape(n, -1).norm(2, dim=1) for g in grad_samples],
                       dim=1).norm(2, dim=1)


# ------------------------------------------------- DP-SGD: functorch vmap

class Vmap:
    def __init__(self, name, model):
        self.name = name
        fmodel, params = functorch.make_functional(model)
        self.params = [p.detach() for p in params]  # updated in place

        def one_loss(ps, x1, y1):
            out = fmodel(ps, x1.unsqueeze(0))
            return loss_sum(name, out, y1.unsqueeze(0))

        self.ps_grad = functorch.vmap(functorch.grad(one_loss), in_dims=(None, 0, 0))

    def grad_samples(self, x, y):
        return list(self.ps_grad(tuple(self.params), x, y))

    def step(self, x, y):
        clip_sum_noise_update(self.params, self.grad_samples(x, y), x.shape[0])


# ---------------------------------------- DP-SGD: Opacus-style hooks + einsum

class Hooks:
    def __init__(self, name, model):
        self.name, self.model = name, model
        self.layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        self.params = []
        for m in self.layers:
            self.params += [m.weight, m.bias]
        assert len(self.params) == len(list(model.parameters()))
        self.acts, self.gouts = {}, {}
        for m in self.layers:
            m.register_forward_hook(self._fwd)
            m.register_full_backward_hook(self._bwd)

    def _fwd(self, mod, inp, out):
        self.acts[mod] = inp[0].detach()

    def _bwd(self, mod, grad_in, grad_out):
        self.gouts[mod] = grad_out[0].detach()

    def grad_samples(self, x, y):
        for p in self.params:
            p.grad = None
        loss_sum(self.name, self.model(x), y).backward()
        gs = []
        for m in self.layers:
            a, g = self.acts[m], self.gouts[m]
            n = a.shape[0]
            if isinstance(m, nn.Linear):
                gs.append(torch.einsum("ni,nj->nij", g, a))
                gs.append(g)
            else:
                cols = F.unfold(a, m.kernel_size, dilation=m.dilation,
                                padding=m.padding, stride=m.stride)  # (n, cin*k*k, L)
                g2 = g.reshape(n, g.shape[1], -1)  # (n, cout, L)
                gs.append(torch.einsum("noq,npq->nop", g2, cols).reshape(
                    (n,) + tuple(m.weight.shape)))
                gs.append(g2.sum(dim=2))
        return gs

    def step(self, x, y):
        clip_sum_noise_update(self.params, self.grad_samples(x, y), x.shape[0])


# ------------------------------------------------------------------ driver

def check(name, gen):
    """vmap vs hooks per-example norms; hooks sum vs plain batch gradient."""
    torch.manual_seed(SEED)
    base = make_model(name)
    x, y = make_data(name, gen)
    b = WORKLOADS[name]["batch"]
    x, y = x[:b], y[:b]
    mv, mh, mp = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    nv = per_example_norms(Vmap(name, mv).grad_samples(x, y))
    hk = Hooks(name, mh)
    gh = hk.grad_samples(x, y)
    nh = per_example_norms(gh)
    rel_norm = ((nv - nh).abs() / nh.abs().clamp(min=1e-30)).max().item()
    gp = Plain(name, mp).batch_grad_sum(x, y)
    diff = math.sqrt(sum(((g.sum(0) - p) ** 2).sum().item() for g, p in zip(gh, gp)))
    ref = math.sqrt(sum((p ** 2).sum().item() for p in gp))
    rel_sum = diff / max(ref, 1e-30)
    ok = rel_norm <= TOL and rel_sum <= TOL
    print("check %-6s: per-example grad norms vmap vs hooks max rel diff %.2e; "
          "sum(hooks) vs plain batch grad rel diff %.2e (tol %.0e; norms %.3g..%.3g): %s"
          % (name, rel_norm, rel_sum, TOL, nh.min().item(), nh.max().item(),
             "OK" if ok else "MISMATCH"), flush=True)
    return ok


def measure(name, method, args, gen):
    torch.manual_seed(SEED)
    model = make_model(name)
    x, y = make_data(name, gen)
    b = WORKLOADS[name]["batch"]
    runner = {"plain": Plain, "vmap": Vmap, "hooks": Hooks}[method](name, model)

    def run(steps):
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(0, POOL, (b,), generator=gen)
            runner.step(x.index_select(0, idx), y.index_select(0, idx))
        return time.perf_counter() - t0

    # warm-up: at least 3 steps and 0.3 s; gives the step-time estimate
    steps, t = 3, run(3)
    while t < 0.3 and steps < args.max_steps:
        t += run(steps)
        steps *= 2
    per_step = t / steps
    n = max(3, min(args.max_steps, int(math.ceil(args.min_time / per_step))))
    rates = []
    for _ in range(args.repeats):
        sec = run(n)
        while sec < args.min_time and n < args.max_steps:  # estimate was off
            n = min(args.max_steps, 2 * n)
            sec = run(n)
        rates.append(b * n / sec)
    rates.sort()
    med = rates[len(rates) // 2] if len(rates) % 2 else \
        0.5 * (rates[len(rates) // 2 - 1] + rates[len(rates) // 2])
    return {"workload": name, "method": method, "examples_per_s": round(med, 1),
            "threads": torch.get_num_threads(), "batch": b,
            "best_examples_per_s": round(rates[-1], 1),
            "ms_per_step": round(1e3 * b / med, 4), "steps": n,
            "repeats": args.repeats, "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workloads", default="mlp30,mlp784,cnn")
    ap.add_argument("--methods", default="plain,vmap,hooks")
    ap.add_argument("--min-time", type=float, default=2.0,
                    help="seconds per measurement (default 2)")
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()
    wl = [w for w in args.workloads.split(",") if w]
    meths = [m for m in args.methods.split(",") if m]
    for w in wl:
        if w not in WORKLOADS:
            ap.error("unknown workload %s" % w)
    for m in meths:
        if m not in ("plain", "vmap", "hooks"):
            ap.error("unknown method %s" % m)
    if args.threads < 1 or args.repeats < 1 or args.min_time <= 0 or args.max_steps < 3:
        ap.error("bad --threads/--repeats/--min-time/--max-steps")

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    print("torch %s, threads %d (%s)" % (torch.__version__, torch.get_num_threads(),
          torch.__config__.parallel_info().splitlines()[-1].strip()), flush=True)

    gen = torch.Generator().manual_seed(SEED)
    ok = all([check(w, gen) for w in wl])
    if not ok:
        print("torch_bench: per-example gradient check FAILED", file=sys.stderr)
        return 3
    if args.check_only:
        return 0

    results = []
    for w in wl:
        for m in meths:
            r = measure(w, m, args, gen)
            print(json.dumps(r), flush=True)
            results.append(r)

    print("\n%-8s %-6s %6s %14s %14s %10s  %s" % ("workload", "method", "batch",
          "ex/s median", "ex/s best", "ms/step", "cost / plain"))
    plain = {r["workload"]: r["examples_per_s"] for r in results if r["method"] == "plain"}
    for r in results:
        cost = ("%.2f" % (plain[r["workload"]] / r["examples_per_s"])
                if r["workload"] in plain else "-")
        print("%-8s %-6s %6d %14.0f %14.0f %10.3f  %s" % (
            r["workload"], r["method"], r["batch"], r["examples_per_s"],
            r["best_examples_per_s"], r["ms_per_step"], cost))
    return 0


if __name__ == "__main__":
    sys.exit(main())
