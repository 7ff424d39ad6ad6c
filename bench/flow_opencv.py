"""impasto's flow against OpenCV's DIS on real frames: for the consecutive frames of a work
directory `impasto video` left (WORK/frames, WORK/flows), OpenCV's DISOpticalFlow (preset
MEDIUM, from opencv-python-headless) on the same grayscale frames; prints the mean end-point
difference between the two flows and each flow's photometric error (the mean absolute
difference, in 0..255 gray levels, between frame k and frame k-1 warped by the flow from k to
k-1) on the pixels whose target stays inside the frame.

    pip install opencv-python-headless numpy
    python3 bench/flow_opencv.py WORK [WORK...]
"""
import glob
import os
import struct
import sys

import cv2
import numpy as np


def read_flow(path):
    data = open(path, "rb").read()
    assert data[:8] == b"IMPFLOW1", path
    w, h = struct.unpack("<II", data[8:16])
    values = np.frombuffer(data[16:], dtype="<f4")
    return np.stack([values[: w * h].reshape(h, w), values[w * h :].reshape(h, w)], axis=-1)


def gray(path):
    # The same luma as impasto's Gray::from_image (Rec. 601 weights).
    rgb = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32)
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def photometric(a, b, flow):
    h, w = a.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = xs + flow[..., 0], ys + flow[..., 1]
    inside = (mx >= 0) & (my >= 0) & (mx <= w - 1) & (my <= h - 1)
    warped = cv2.remap(b, mx, my, cv2.INTER_LINEAR)
    return float(np.abs(a - warped)[inside].mean())


print("| work directory | pairs | mean EPE impasto vs OpenCV | photometric error impasto | OpenCV | zero flow |")
print("|---|---|---|---|---|---|")
dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
for work in sys.argv[1:]:
    epe, ours, theirs, still, n = 0.0, 0.0, 0.0, 0.0, 0
    for path in sorted(glob.glob(os.path.join(work, "flows", "*.flow"))):
        k, j = (int(x) for x in os.path.basename(path)[:-5].split("-"))
        if j != k - 1:
            continue
        a, b = gray(os.path.join(work, "frames", f"{k:06}.png")), gray(os.path.join(work, "frames", f"{j:06}.png"))
        flow = read_flow(path)
        cv = dis.calc(np.clip(a, 0, 255).astype(np.uint8), np.clip(b, 0, 255).astype(np.uint8), None)
        epe += float(np.linalg.norm(flow - cv, axis=-1).mean())
        ours += photometric(a, b, flow)
        theirs += photometric(a, b, cv)
        still += photometric(a, b, np.zeros_like(flow))
        n += 1
    print(f"| {work} | {n} | {epe / n:.3f} px | {ours / n:.2f} | {theirs / n:.2f} | {still / n:.2f} |")
