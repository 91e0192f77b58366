"""Trains the connected-car anomaly autoencoder and writes model/anomaly.onnx.

    python3 udfs/anomaly/train.py            # numpy + onnx from PyPI; about a minute

The model has the demo's topology: 210 inputs, tanh, hidden 50-20-50, 210 outputs. It is
trained on *normal* series only, shaped like the demo's generator (a value walking
between 2.00 and 8.00 in runs of 1-10 steps of 0.01-0.09, sometimes 0.1-0.9, bouncing at
the bounds) and like the demo's ECG-like sample. Inputs are normalised per column as
(x - mean) / (max - min) with the training statistics, inside the ONNX graph, which
also computes the score: the mean squared reconstruction error in raw units, one per row.

The threshold is the 99.9th percentile of the score on held-out normal series; with the
scores of injected faults (spikes, flat-lines, drift, noise bursts; the same kinds as
`weir gen cars`) it is written to model/MODEL.json and reported in MODEL.md.
"""

import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

N = 210
SEED = 20261130
HERE = os.path.dirname(os.path.abspath(__file__))


def random_walk(rng, n=N):
    """The demo generator's walk between 2.00 and 8.00."""
    v = rng.uniform(2.0, 8.0)
    out = []
    direction = rng.choice([-1.0, 1.0])
    while len(out) < n:
        run = rng.integers(1, 11)
        big = rng.random() < 0.1
        direction = rng.choice([-1.0, 1.0])
        for _ in range(run):
            step = rng.uniform(0.1, 0.9) if big else rng.uniform(0.01, 0.09)
            v += direction * step
            if v > 8.0:
                v, direction = 8.0 - (v - 8.0), -1.0
            if v < 2.0:
                v, direction = 2.0 + (2.0 - v), 1.0
            out.append(v)
            if len(out) == n:
                break
    return np.round(np.array(out), 2)


def ecg_like(rng, n=N):
    """A beat like the demo's sample: rise to a peak, fall to a plateau, a bump, fall."""
    t = np.linspace(0.0, 1.0, n)
    base = rng.uniform(1.9, 2.4)
    peak = rng.uniform(6.5, 7.5)
    plateau = rng.uniform(4.7, 5.3)
    p1 = rng.uniform(0.18, 0.28)  # where the peak is
    p2 = rng.uniform(0.78, 0.86)  # where the bump is
    rise = base + (peak - base) * np.clip(t / p1, 0, 1) ** 1.3
    fall = peak + (plateau - peak) * np.clip((t - p1) / 0.25, 0, 1)
    x = np.where(t < p1, rise, fall)
    x = x + rng.uniform(0.5, 1.0) * np.exp(-((t - p2) / 0.015) ** 2)
    tail = np.clip((t - p2 - 0.03) / (1 - p2 - 0.03), 0, 1)
    x = x * (1 - tail) + (plateau + (base - plateau) * tail) * tail
    x = x + rng.normal(0, 0.015, n)
    return np.round(np.clip(x, 1.5, 8.5), 2)


def normal(rng, count):
    return np.stack([ecg_like(rng) if rng.random() < 0.25 else random_walk(rng) for _ in range(count)])


def inject(rng, x, kind):
    """Faults, as `weir gen cars` injects them."""
    x = x.copy()
    if kind == "spike":
        for _ in range(rng.integers(2, 5)):
            i = rng.integers(0, N - 3)
            x[i:i + rng.integers(1, 4)] += rng.choice([-1, 1]) * rng.uniform(4.0, 7.0)
    elif kind == "flatline":
        i = rng.integers(0, N - 60)
        x[i:i + rng.integers(40, 60)] = 0.0
    elif kind == "drift":
        i = rng.integers(0, int(N * 0.4))
        x[i:] += np.linspace(0.0, rng.choice([-1, 1]) * rng.uniform(7.0, 10.0), N - i)
    elif kind == "noise":
        i = rng.integers(0, N - 60)
        x[i:i + 60] += rng.normal(0.0, rng.uniform(1.5, 2.5), 60)
    return np.round(x, 2)


KINDS = ["spike", "flatline", "drift", "noise"]


def train(x, rng, epochs, hidden=(50, 20, 50)):
    mean = x.mean(axis=0)
    rng_ = x.max(axis=0) - x.min(axis=0)
    z = (x - mean) / rng_
    sizes = [N, *hidden, N]
    ws = [rng.normal(0, np.sqrt(1.0 / a), (a, b)) for a, b in zip(sizes, sizes[1:])]
    bs = [np.zeros(b) for b in sizes[1:]]
    params = ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, eps, t = 2e-3, 0.9, 0.999, 1e-8, 0
    for epoch in range(epochs):
        order = rng.permutation(len(z))
        total = 0.0
        for s in range(0, len(z), 128):
            batch = z[order[s:s + 128]]
            acts = [batch]
            for w, b in zip(ws, bs):
                acts.append(np.tanh(acts[-1] @ w + b))
            err = acts[-1] - batch
            total += float((err ** 2).sum())
            grad = 2 * err / err.size
            gws, gbs = [], []
            for i in reversed(range(len(ws))):
                grad = grad * (1 - acts[i + 1] ** 2)
                gws.insert(0, acts[i].T @ grad)
                gbs.insert(0, grad.sum(axis=0))
                grad = grad @ ws[i].T
            t += 1
            for j, g in enumerate(gws + gbs):
                m[j] = b1 * m[j] + (1 - b1) * g
                v[j] = b2 * v[j] + (1 - b2) * g * g
                step = lr * (m[j] / (1 - b1 ** t)) / (np.sqrt(v[j] / (1 - b2 ** t)) + eps)
                params[j] -= step
        if epoch % 10 == 0 or epoch == epochs - 1:
            print(f"epoch {epoch:3d}  loss {total / z.size:.6f}", flush=True)
    return mean, rng_, ws, bs


def score(x, mean, rng_, ws, bs):
    a = (x - mean) / rng_
    for w, b in zip(ws, bs):
        a = np.tanh(a @ w + b)
    recon = a * rng_ + mean
    return ((x - recon) ** 2).mean(axis=1)


def to_onnx(mean, rng_, ws, bs, path):
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    inits = [numpy_helper.from_array(f32(mean), "mean"), numpy_helper.from_array(f32(rng_), "range")]
    nodes = [helper.make_node("Sub", ["sensor", "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "range"], ["h0"])]
    for i, (w, b) in enumerate(zip(ws, bs)):
        inits += [numpy_helper.from_array(f32(w), f"w{i}"), numpy_helper.from_array(f32(b), f"b{i}")]
        nodes += [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Tanh", [f"a{i}"], [f"h{i + 1}"])]
    last = f"h{len(ws)}"
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
    nodes += [helper.make_node("Mul", [last, "range"], ["scaled"]),
              helper.make_node("Add", ["scaled", "mean"], ["reconstruction"]),
              helper.make_node("Sub", ["sensor", "reconstruction"], ["diff"]),
              helper.make_node("Mul", ["diff", "diff"], ["sq"]),
              helper.make_node("ReduceMean", ["sq", "axes"], ["score"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "weir_anomaly_autoencoder",
        [helper.make_tensor_value_info("sensor", TensorProto.FLOAT, ["n", N])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["n", N])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="weir udfs/anomaly/train.py")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)


def sample_message():
    text = open(os.path.join(HERE, "sample_message.txt")).read().strip()
    return np.array([float(v) for v in text.split(",", 1)[1].split("#")])


def main():
    rng = np.random.default_rng(SEED)
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    x = normal(rng, 20000)
    mean, rng_, ws, bs = train(x, rng, epochs)
    held = normal(rng, 10000)
    normal_scores = score(held, mean, rng_, ws, bs)
    threshold = float(np.percentile(normal_scores, 99.9))
    faults = {k: score(np.stack([inject(rng, r, k) for r in normal(rng, 500)]), mean, rng_, ws, bs) for k in KINDS}
    sample = float(score(sample_message()[None, :], mean, rng_, ws, bs)[0])
    os.makedirs(os.path.join(HERE, "model"), exist_ok=True)
    to_onnx(mean, rng_, ws, bs, os.path.join(HERE, "model", "anomaly.onnx"))
    report = {
        "seed": SEED, "epochs": epochs, "trained_on": len(x), "held_out": len(held),
        "threshold": round(threshold, 6),
        "normal_score": {"p50": float(np.median(normal_scores)), "p99.5": float(np.percentile(normal_scores, 99.5)), "p99.9": threshold, "max": float(normal_scores.max())},
        "fault_recall_at_threshold": {k: float((s > threshold).mean()) for k, s in faults.items()},
        "fault_score_p05": {k: float(np.percentile(s, 5)) for k, s in faults.items()},
        "sample_message_score": sample,
    }
    json.dump(report, open(os.path.join(HERE, "model", "MODEL.json"), "w"), indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
