"""Train a small CNN on scikit-learn's digits, export it to ONNX and quantize it to int8.

Run as ``python -m sw.models.train_digits`` (needs the ``train`` extra: torch and
scikit-learn). It writes, under ``models/``:

* ``digits_float.onnx``: the float model (opset 13, input ``input`` 1×1×8×8, output
  ``logits`` 1×10), checked against torch on the test split;
* ``digits_int8.onnx``: the same model through onnxruntime's static quantizer (QOperator
  format, uint8 activations, int8 per-tensor weights, MinMax calibration on training
  images);
* ``digits_test.npz``: the held-out test split, already preprocessed (``images`` float32
  N×1×8×8, ``labels`` int64), so that running the model later needs neither torch nor
  scikit-learn.

Preprocessing is the only thing a caller must reproduce: pixels (0..16) divided by 16, so
that inputs lie in [0, 1].
"""

import argparse
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
TEST_FRACTION = 0.25
EPOCHS = 300
BATCH = 64
LEARNING_RATE = 3e-3
CALIBRATION_IMAGES = 200
OPSET = 13

MODELS = Path(__file__).resolve().parents[2] / "models"


class DigitsNet(nn.Module):
    """Conv-ReLU, Conv-ReLU, MaxPool, Conv-ReLU, global average pool, Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


def preprocess(pixels):
    """Digits pixels (N × 64, values 0..16) to model inputs (N × 1 × 8 × 8 float32 in [0, 1])."""
    return (np.asarray(pixels, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)


def load_split():
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        preprocess(digits.data), digits.target.astype(np.int64),
        test_size=TEST_FRACTION, random_state=SEED, stratify=digits.target)
    return x_train, x_test, y_train, y_test


def train(x_train, y_train):
    torch.manual_seed(SEED)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    images, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    shuffle = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(images), generator=shuffle)
        total = 0.0
        for start in range(0, len(images), BATCH):
            batch = order[start:start + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if (epoch + 1) % 50 == 0:
            print(f"epoch {epoch + 1:3d}: training loss {total / len(images):.4f}")
    return model.eval()


def export(model, path, sample):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export",
                                DeprecationWarning)
        torch.onnx.export(model, torch.from_numpy(sample[:1]), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True)
    onnx.checker.check_model(onnx.load(str(path)))


def onnx_logits(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input": image[None]})[0] for image in images])


class DigitsCalibration(CalibrationDataReader):
    """Feeds calibration images one at a time, as the exported model has batch 1."""

    def __init__(self, images):
        self._images = iter(images)

    def get_next(self):
        image = next(self._images, None)
        return None if image is None else {"input": image[None]}


def quantize(float_path, int8_path, calibration_images):
    """Static QOperator quantization. ``quant_pre_process`` is not run (so the quantizer warns
    about it): on this already constant-folded export it gives the same nodes and weights and
    only adds eight unused opset imports."""
    quantize_static(str(float_path), str(int8_path), DigitsCalibration(calibration_images),
                    quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=False, calibrate_method=CalibrationMethod.MinMax)
    onnx.checker.check_model(onnx.load(str(int8_path)))


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODELS, help="output folder (default: models/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    float_path, int8_path = args.out / "digits_float.onnx", args.out / "digits_int8.onnx"

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # reproducible sums, and faster than several threads for a net this small
    x_train, x_test, y_train, y_test = load_split()
    print(f"{len(x_train)} training and {len(x_test)} test images")
    model = train(x_train, y_train)
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()

    export(model, float_path, x_test)
    float_logits = onnx_logits(float_path, x_test)
    np.testing.assert_allclose(float_logits, torch_logits, rtol=1e-4, atol=1e-4)
    print(f"float ONNX matches torch (max |difference| {np.max(np.abs(float_logits - torch_logits)):.2e})")

    calibration = np.random.default_rng(SEED).permutation(len(x_train))[:CALIBRATION_IMAGES]
    quantize(float_path, int8_path, x_train[calibration])
    int8_logits = onnx_logits(int8_path, x_test)
    np.savez_compressed(args.out / "digits_test.npz", images=x_test, labels=y_test)

    print(f"float test accuracy (torch): {accuracy(torch_logits, y_test):.4f}")
    print(f"float test accuracy (onnxruntime): {accuracy(float_logits, y_test):.4f}")
    print(f"int8 test accuracy (onnxruntime): {accuracy(int8_logits, y_test):.4f}")
    print("int8 graph: " + ", ".join(node.op_type for node in onnx.load(str(int8_path)).graph.node))


if __name__ == "__main__":
    main()
