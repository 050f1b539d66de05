"""The committed digits model (models/digits_int8.onnx): its accuracy on the committed test
split in onnxruntime, and its ops against the table in models/README.md."""

from pathlib import Path

import numpy as np
import onnx

from verif.oracle import onnxruntime_session

MODELS = Path(__file__).resolve().parents[1] / "models"


def _readme_ops():
    """(op, domain) per row of the "Quantized graph" table in models/README.md, in order."""
    section = (MODELS / "README.md").read_text().split("### Quantized graph", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows.append((cells[1], cells[2]))
    return rows


def test_int8_accuracy():
    data = np.load(MODELS / "digits_test.npz")
    images, labels = data["images"], data["labels"]
    assert images.shape == (len(labels), 1, 8, 8) and images.dtype == np.float32
    session = onnxruntime_session(MODELS / "digits_int8.onnx")
    predictions = np.array([np.argmax(session.run(["logits"], {"input": image[None]})[0]) for image in images])
    accuracy = np.mean(predictions == labels)
    print(f"int8 test accuracy {accuracy:.4f} on {len(labels)} images")
    assert accuracy >= 0.93


def test_int8_ops_match_readme():
    documented = _readme_ops()
    assert documented, "no rows found in the Quantized graph table of models/README.md"
    graph = onnx.load(str(MODELS / "digits_int8.onnx")).graph
    assert [(node.op_type, node.domain) for node in graph.node] == documented
    assert [inp.name for inp in graph.input] == ["input"]
    assert [out.name for out in graph.output] == ["logits"]
