#!/usr/bin/env python3
"""Does the optimisation get there sooner from the fast picture? For each content x style pair
and size: 60 L-BFGS iterations from the content image give an objective L60; a run from the
fast picture (--init fast) stops at the first evaluation whose best loss is at most L60. The
time of each is the whole process's: its setup (images, network, and for --init fast the fast
picture) plus the optimisation's seconds until L60 is reached. One run at a time, one table.

    python3 bench/init_fast.py [--sizes 384,512] [--iterations 60] [--bin target/release/impasto]

Photos are the contents and paintings the styles (examples/ and ../shared/images/); writes
target/init_fast.jsonl and prints a Markdown table.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "images"
PHOTOS = ["tubingen.jpg", "kodim23.png"]
PAINTINGS = ["starry_night.jpg", "the_scream.jpg", "woman-with-hat-matisse.jpg", "shipwreck.jpg", "starry_night_crop.png"]


def find(name):
    for d in (ROOT / "examples", SHARED):
        if (d / name).exists():
            return d / name
    return None


def run(binary, content, style, size, iterations, init, tmp):
    log = Path(tmp) / f"log-{init}.jsonl"
    out = Path(tmp) / f"out-{init}.png"
    args = [binary, "stylize", str(content), str(style), "--size", str(size), "--scales", "off",
            "--iterations", str(iterations), "-q", "--log", str(log), "-o", str(out)]
    if init == "fast":
        args += ["--init", "fast"]
    start = time.monotonic()
    subprocess.run(args, check=True)
    wall = time.monotonic() - start
    lines = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    evals = [l for l in lines if "best" in l and "seconds" in l]
    setup = wall - evals[-1]["seconds"]
    return setup, evals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="384,512")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--bin", default=str(ROOT / "target/release/impasto"))
    a = ap.parse_args()
    records = ROOT / "target" / "init_fast.jsonl"
    records.parent.mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, open(records, "w") as rec:
        for size in [int(s) for s in a.sizes.split(",")]:
            for p in PHOTOS:
                for s in PAINTINGS:
                    content, style = find(p), find(s)
                    if content is None or style is None:
                        continue
                    setup_c, ev_c = run(a.bin, content, style, size, a.iterations, "content", tmp)
                    target = ev_c[-1]["best"]
                    # When the content start reached its best (its last improvement).
                    t_c = setup_c + next(e["seconds"] for e in ev_c if e["best"] <= target)
                    setup_f, ev_f = run(a.bin, content, style, size, a.iterations, "fast", tmp)
                    hit = next((e for e in ev_f if e["best"] <= target), None)
                    t_f = setup_f + hit["seconds"] if hit else None
                    row = dict(size=size, content=p, style=s, target=target, content_s=t_c,
                               fast_s=t_f, fast_iterations=hit["iteration"] if hit else None,
                               fast_best=ev_f[-1]["best"], fast_setup_s=setup_f, content_setup_s=setup_c)
                    rec.write(json.dumps(row) + "\n")
                    rec.flush()
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    print("| size | content | style | L60 (content start) | content start, s | fast start, s (iterations) | faster |")
    print("|---|---|---|---|---|---|---|")
    wins = 0
    for r in rows:
        f = f"{r['fast_s']:.1f} ({r['fast_iterations']})" if r["fast_s"] is not None else f"not reached (best {r['fast_best']:.3e})"
        win = r["fast_s"] is not None and r["fast_s"] < r["content_s"]
        wins += win
        print(f"| {r['size']} | {r['content']} | {r['style']} | {r['target']:.3e} | {r['content_s']:.1f} | {f} | {'yes' if win else 'no'} |")
    print(f"\nfast start faster on {wins} of {len(rows)}")


if __name__ == "__main__":
    main()
