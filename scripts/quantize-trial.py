#!/usr/bin/env python3
"""The int8 trial: SFace statically quantized, calibrated on aligned faces.

    quantize-trial.py CROPS_DIR MODELS_DIR OUT_DIR

CROPS_DIR holds aligned 112 x 112 faces as binary PPM files, written by
`recognition-bench --only crops` (from the group photos, which the accuracy figures do not
use, so calibration does not see the faces it is judged on). MODELS_DIR is a prepared model
directory (scripts/setup). OUT_DIR receives a copy of MODELS_DIR in which the prepared SFace
(`*.stripped.onnx`) is the int8 one, so that

    recognition-bench --model-dir OUT_DIR --engines onnxruntime --only accuracy,latency

measures it exactly as the float model is measured. Both quantized forms are written (the
float model is kept beside them as `*.float.onnx`): activations uint8 and weights int8, per
tensor, in QDQ form, which ONNX Runtime fuses into integer convolutions. Not part of setup:
facewire ships the float model unless this trial shows int8 is both faster and as accurate
(see services/recognition/README.md).
"""
import pathlib
import shutil
import sys
import tempfile

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

SFACE = "face_recognition_sface_2021dec.stripped.onnx"
SIDE = 112


def read_ppm(path: pathlib.Path) -> np.ndarray:
    """An RGB P6 image as a 1 x 3 x H x W float32 blob of 0..255, as SFace is fed."""
    data = path.read_bytes()
    fields, offset = [], 0
    while len(fields) < 4:
        while data[offset : offset + 1].isspace():
            offset += 1
        if data[offset : offset + 1] == b"#":
            offset = data.index(b"\n", offset) + 1
            continue
        end = offset
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[offset:end])
        offset = end
    offset += 1  # the single whitespace byte after maxval
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic != b"P6" or maxval != 255 or (width, height) != (SIDE, SIDE):
        raise ValueError(f"{path}: not a {SIDE}x{SIDE} 8-bit P6 image")
    pixels = np.frombuffer(data, dtype=np.uint8, count=width * height * 3, offset=offset)
    return pixels.reshape(height, width, 3).transpose(2, 0, 1)[None].astype(np.float32)


class Crops(CalibrationDataReader):
    def __init__(self, blobs: list[np.ndarray]):
        self.blobs = iter(blobs)

    def get_next(self):
        blob = next(self.blobs, None)
        return None if blob is None else {"data": blob}


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    crops, models, out = (pathlib.Path(a) for a in sys.argv[1:])
    blobs = [read_ppm(p) for p in sorted(crops.glob("*.ppm"))]
    if len(blobs) < 16:
        sys.exit(f"quantize-trial: {len(blobs)} crops in {crops}; want at least 16")
    out.mkdir(parents=True, exist_ok=True)
    for f in models.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    with tempfile.TemporaryDirectory() as tmp:
        pre = pathlib.Path(tmp) / "sface.pre.onnx"
        # Folds the batch norms and fixes shapes first, as ONNX Runtime recommends.
        quant_pre_process(str(models / SFACE), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out / SFACE),
            Crops(blobs),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
        )
    shutil.copy2(models / SFACE, out / SFACE.replace(".stripped.", ".float."))
    print(f"quantize-trial: {out / SFACE} from {len(blobs)} crops")


if __name__ == "__main__":
    main()
