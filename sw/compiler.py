"""ONNX → NPU compiler.

Input: int8/uint8 models as ``onnxruntime.quantization.quantize_static`` writes them, in
either format:

* QOperator: QLinearConv, QLinearMatMul, QGemm, MatMulInteger, ConvInteger, QLinearAdd,
  MaxPool, QLinearAveragePool, QLinearGlobalAveragePool, Reshape/Flatten,
  QuantizeLinear/DequantizeLinear at the graph's edges;
* QDQ: each ``DequantizeLinear → op → [Relu|Clip] → QuantizeLinear`` group is folded into
  the same quantized operation.

Output: a :class:`sw.npu_file.CompiledModel`: a list of steps. Convolutions and matrix
products become NPU programs (``sw.kernels``, planned for the configuration's array and
SRAM sizes: a convolution runs straight from its NHWC input on the NPU, or as a GEMM on
the host's im2col, whichever the cost model prefers for the whole network (see
:meth:`_Compiler.network_lowerings`). Additions of two tensors of one shape and type
with per-tensor constant scales and zero points run in the output stage's add mode
(``sw.kernels.emit_add``) when the configuration has it and computes them exactly (see
:meth:`_Compiler.add_mode_refusal`). Consecutive NPU steps (direct convolutions and adds)
may run as one program, a *run*, the tensors between them kept in the scratchpad rather
than stored and loaded again (:meth:`_Compiler.plan_run`): with the add mode, a whole
residual network runs so, its activations never leaving the chip. Pooling, the other
additions and the quantize/dequantize at the edges run on the host with onnxruntime's arithmetic
(``sw.host_ops``). Scales and zero points may be constants or graph inputs: they are
resolved at run time, so the requantization multipliers are computed exactly as
onnxruntime computes them.

Every problem is a :class:`CompileError` with a one-line message that names the file and
the node.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import numpy_helper

from hw.add_stage import add_mode_unsupported
from hw.config import DEFAULT_CONFIG
from hw.isa import INSTRUCTION_BYTES
from sw import host_ops
from sw.asm import Program
from sw.kernels import (AddLayer, ConvLayer, GemmLayer, LayerError, a_pitch, conv_k_tiles,
                        conv_pad_bytes, emit_add, emit_conv, emit_gemm, param_bytes, plan_add,
                        predict_layer, predict_program, preferred, resident_tensor,
                        tiles_fill_slots, weight_bytes, LOWERING_TOLERANCE)
from sw.npu_file import CompiledModel


__all__ = ["CompileError", "compile_model", "ONNX_DTYPES"]


class CompileError(Exception):
    """A model the compiler cannot compile; the message names the file and the node."""


ONNX_DTYPES = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8",
               onnx.TensorProto.INT32: "int32", onnx.TensorProto.FLOAT: "float32",
               onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT16: "float16"}

_FLOAT_COMPUTE = {"Conv", "MatMul", "Gemm", "Add", "AveragePool", "GlobalAveragePool",
                  "MaxPool", "Relu", "Clip", "Mul", "Sub", "Sigmoid", "Softmax", "Concat"}


class _Memory:
    """Bump allocator of the model's memory image."""

    def __init__(self):
        self.top = 0x1000

    def alloc(self, size, align=64):
        addr = -(-self.top // align) * align
        self.top = addr + max(int(size), 1)
        return addr


@dataclass
class _Q:
    """A quantized operand: tensor, scale and zero-point names."""
    tensor: str
    scale: str
    zero_point: str


#: The keys of a step that name tensors it reads (alone, or in _Q dicts and lists).
_OPERAND_KEYS = ("a", "b", "x", "bias", "scale", "zero_point", "y_scale", "y_zero_point", "y_q")


def _reads(step):
    """Names of the tensors (and run-time scales and zero points) a step reads."""
    found = set()

    def walk(value):
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for key in _OPERAND_KEYS:
        walk(step.get(key))
    if isinstance(step.get("activation"), dict):
        walk(step["activation"])
    return found - {""}


@dataclass
class _RunMember:
    """A step that may join a run (:meth:`_Compiler.plan_run`): the tensor it computes,
    the tensors it reads at run time, its layer (a ``ConvLayer`` or an ``AddLayer``), and
    for an add the (height, width, channels) of its NCHW tensors."""
    output: str
    inputs: list
    layer: object
    add_shape: tuple = None

    @property
    def is_add(self):
        return self.add_shape is not None

    @property
    def shape(self):
        """(height, width, channels) of the tensor it computes."""
        if self.is_add:
            return self.add_shape
        return self.layer.OH, self.layer.OW, self.layer.N


@dataclass
class _Residency:
    """Runs of NPU steps compiled as one program and the tensors kept in the scratchpad
    between them (:meth:`_Compiler.plan_run`). ``runs``: the outputs of each run's steps,
    in order; ``tensors``: tensor -> ``sw.kernels.ResidentTensor``; ``windows``: step
    output -> (scratchpad base, bytes) its buffers are planned in."""
    runs: list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)
    windows: dict = field(default_factory=dict)

    def run_of(self, output):
        """The run of the step computing ``output``, or None."""
        return next((run for run in self.runs if output in run), None)


#: Alignment of the tensors kept in the scratchpad and of the windows beside them.
_SCRATCHPAD_ALIGN = 64
#: Windows are whole multiples of this, so that their buffers stay aligned.
_WINDOW_GRAIN = 1024


def _first_fit(spans, size, total):
    """The lowest aligned address where ``size`` bytes fit between ``spans`` ((address,
    bytes) in use) within ``total`` bytes, or None."""
    addr = 0
    for start, length in sorted(spans):
        if addr + size <= start:
            return addr
        addr = max(addr, -(-(start + length) // _SCRATCHPAD_ALIGN) * _SCRATCHPAD_ALIGN)
    return addr if addr + size <= total else None


def _largest_gap(spans, total):
    """(base, bytes) of the largest free part between ``spans`` within ``total`` bytes,
    aligned and cut to whole window grains."""
    best, addr = (0, 0), 0
    for start, length in sorted(spans) + [(total, 0)]:
        base = -(-addr // _SCRATCHPAD_ALIGN) * _SCRATCHPAD_ALIGN
        size = (start - base) // _WINDOW_GRAIN * _WINDOW_GRAIN
        if size > best[1]:
            best = (base, size)
        addr = max(addr, start + length)
    return best


class _Compiler:
    def __init__(self, model, config, source, lowerings=None, residency=None):
        self.config = config
        self.lowerings = lowerings or {}    # see network_lowerings
        self.lowering_options = {}          # convolution: [(cycles, DRAM bytes) im2col, direct]
        self.lowering_choices = {}          # convolution: whether it runs straight from its input
        self.residency = residency or _Residency()
        self.run_program = Program()        # the program of the run being compiled
        self.tensor_addrs = {}              # tensor an NPU step computes -> its memory address
        self.add_layers = {}                # output name -> AddLayer of an add on the NPU
        self.program_adds = []              # [start, end) of each add in the next program
        self.programs = {}                  # program constant -> its sw.asm.Program
        self.source = source
        self.graph = model.graph
        self.constants = {}
        for init in self.graph.initializer:
            self.constants[init.name] = numpy_helper.to_array(init)
        self.shapes, self.dtypes = {}, {}
        for value in list(self.graph.input) + list(self.graph.output) + list(self.graph.value_info):
            tensor_type = value.type.tensor_type
            if tensor_type.elem_type:
                self.dtypes[value.name] = ONNX_DTYPES.get(tensor_type.elem_type, "unsupported")
        for value in self.graph.input:
            if value.name in self.constants:
                continue
            dims = value.type.tensor_type.shape.dim
            if any(not d.HasField("dim_value") for d in dims):
                raise CompileError(f"{source}: input '{value.name}' has a dynamic shape; "
                                   f"give it a fixed shape")
            self.shapes[value.name] = tuple(d.dim_value for d in dims)
        for name, value in self.constants.items():
            self.shapes[name] = value.shape
            self.dtypes[name] = str(value.dtype)
        self.consumers = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.steps = []
        self.memory = _Memory()
        self.done = set()
        self.dequantized = {}       # float tensor name -> _Q
        self.node_names = {}
        self.conv_layers = {}       # output name -> ConvLayer of a convolution run directly

    # --- helpers ------------------------------------------------------------------------
    def name(self, node):
        return node.name or f"{node.op_type}#{list(self.graph.node).index(node)}"

    def fail(self, node, message):
        raise CompileError(f"{self.source}: node '{self.name(node)}' ({node.op_type}): {message}")

    def attrs(self, node):
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def shape(self, node, name):
        if name not in self.shapes:
            self.fail(node, f"the shape of '{name}' is unknown")
        return self.shapes[name]

    def scalar_param(self, node, name):
        if name and name not in self.constants and name not in self.shapes:
            self.fail(node, f"'{name}' is neither a constant nor a graph input")
        return name

    def dtype(self, name):
        return self.dtypes.get(name, "unknown")

    def only_consumer(self, name):
        users = self.consumers.get(name, [])
        outputs = {o.name for o in self.graph.output}
        return users[0] if len(users) == 1 and name not in outputs else None

    # --- graph walk ------------------------------------------------------------------------
    def run(self):
        if not self.is_quantized_graph():
            for node in self.graph.node:
                if node.op_type in _FLOAT_COMPUTE:
                    raise CompileError(
                        f"{self.source}: node '{self.name(node)}' ({node.op_type}) computes in "
                        f"float: the model was never quantized (quantize it with "
                        f"onnxruntime.quantization.quantize_static)")
        for node in self.graph.node:
            if id(node) in self.done:
                continue
            if node.op_type == "Constant":
                value = numpy_helper.to_array(node.attribute[0].t)
                self.constants[node.output[0]] = value
                self.shapes[node.output[0]] = value.shape
                self.dtypes[node.output[0]] = str(value.dtype)
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                self.fail(node, "operator not supported by the NPU compiler")
            handler(node)
        self.order_steps()
        for output in self.graph.output:
            if output.name not in self.shapes:
                raise CompileError(f"{self.source}: output '{output.name}' is not produced by "
                                   f"any supported operation")

    def is_quantized_graph(self):
        ops = {node.op_type for node in self.graph.node}
        return bool(ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                           "QGemm", "MatMulInteger", "ConvInteger"})

    def produce(self, name, shape, dtype):
        self.shapes[name] = tuple(int(d) for d in shape)
        self.dtypes[name] = dtype

    # --- edges: QuantizeLinear / DequantizeLinear ----------------------------------------------
    def op_QuantizeLinear(self, node):
        x, scale, zp = node.input[0], node.input[1], node.input[2] if len(node.input) > 2 else ""
        dtype = self.dtype(zp) if zp else "uint8"
        self.produce(node.output[0], self.shape(node, x), dtype)
        self.steps.append({"op": "quantize", "node": self.name(node), "x": x, "scale": scale,
                           "zero_point": zp, "y": node.output[0], "dtype": dtype,
                           "axis": self.attrs(node).get("axis", 1)})

    def op_DequantizeLinear(self, node):
        q, scale = node.input[0], node.input[1]
        zp = node.input[2] if len(node.input) > 2 else ""
        out = node.output[0]
        users = self.consumers.get(out, [])
        # Inside a QDQ group the consumer folds this DequantizeLinear into its own step.
        self.dequantized[out] = _Q(q, scale, zp)
        if q in self.constants and all(u.op_type in _FOLDABLE for u in users):
            return
        if users and all(u.op_type in _FOLDABLE for u in users) and \
                all(self.qdq_group(u) is not None for u in users):
            return
        self.produce(out, self.shape(node, q), "float32")
        self.steps.append({"op": "dequantize", "node": self.name(node), "x": q, "scale": scale,
                           "zero_point": zp, "y": out, "axis": self.attrs(node).get("axis", 1)})

    # --- QDQ groups ----------------------------------------------------------------------------
    def qdq_group(self, node):
        """(inputs as _Q or constant names, output _Q, activation, nodes) of a QDQ group
        around ``node``, or None."""
        inputs = []
        for name in node.input:
            if not name:
                inputs.append(None)
            elif name in self.dequantized:
                inputs.append(self.dequantized[name])
            elif name in self.constants:
                inputs.append(name)
            else:
                producer = next((n for n in self.graph.node if name in n.output), None)
                if producer is not None and producer.op_type == "DequantizeLinear":
                    zp = producer.input[2] if len(producer.input) > 2 else ""
                    inputs.append(_Q(producer.input[0], producer.input[1], zp))
                else:
                    return None
        tail, activation, chain = node.output[0], None, []
        user = self.only_consumer(tail)
        if user is not None and user.op_type in ("Relu", "Clip"):
            activation = "relu" if user.op_type == "Relu" else \
                {"clip": [user.input[1] if len(user.input) > 1 else "",
                          user.input[2] if len(user.input) > 2 else ""]}
            chain.append(user)
            tail = user.output[0]
            user = self.only_consumer(tail)
        if user is None or user.op_type != "QuantizeLinear":
            return None
        chain.append(user)
        zp = user.input[2] if len(user.input) > 2 else ""
        return inputs, _Q(user.output[0], user.input[1], zp), activation, chain

    def take_group(self, node):
        group = self.qdq_group(node)
        if group is None:
            self.fail(node, "computes in float: it is not inside a DequantizeLinear → op → "
                            "QuantizeLinear group, and the NPU computes only quantized")
        for member in group[3]:
            self.done.add(id(member))
        return group

    def output_dtype(self, q):
        return self.dtype(q.zero_point) if q.zero_point else "uint8"

    # --- matrix products and convolutions -------------------------------------------------------
    def gemm_step(self, node, kind, a, b, bias, y, y_dtype, activation=None, attrs=None,
                  y_name=None):
        attrs = attrs or {}
        a_shape = self.shape(node, a.tensor)
        b_shape = self.shape(node, b.tensor)
        a_dtype = self.dtype(a.tensor)
        if a_dtype not in ("uint8", "int8") or self.dtype(b.tensor) not in ("uint8", "int8"):
            self.fail(node, f"operands are {a_dtype} and {self.dtype(b.tensor)}, not 8-bit integers")
        for scale in (a.scale, b.scale, y_name.scale if y_name else ""):
            if scale and self.dtype(scale) != "float32":
                self.fail(node, f"scale '{scale}' is {self.dtype(scale)}: the NPU's "
                                f"requantization is defined for float32 scales")
        layers, out_shape = self.gemm_geometry(node, kind, a_shape, b_shape, attrs)
        split = self.weight_split(b)
        out_int32 = y_dtype in ("int32", "float32")
        program = Program()
        geometry = []
        name = f"{self.source}: node '{self.name(node)}' ({node.op_type})"
        out_bytes = 4 if out_int32 else 1
        direct = kind == "conv" and split == 1 and \
            self.prefers_direct(layers, a_shape, b_shape, attrs, a_dtype, out_int32, name)
        run = self.residency.run_of(y)
        resident_in = self.residency.tensors.get(a.tensor) if run else None
        resident_out = self.residency.tensors.get(y) if run else None
        if direct and self.depthwise(a_shape, b_shape, attrs):
            # One layer for all the channels of an image, its weight tiles diagonal.
            layers = [dict(layer, group=0, N=b_shape[0], depthwise=True)
                      for layer in layers if layer["group"] == 0]
        for layer in layers:
            M, K, N = layer["M"], layer["K"] * split, layer["N"]
            try:
                if direct:
                    conv = self.conv_layer(a_shape, b_shape, attrs, a_dtype, out_int32, name)
                    conv.x_resident, conv.y_resident = resident_in, resident_out
                    conv.window = self.residency.windows.get(y)
                    pad_bytes = conv_pad_bytes(self.config, conv)
                    # A tensor kept in the scratchpad has no memory; one an earlier step of
                    # the same program stores is read where it stored it.
                    in_program = bool(run) and a.tensor in self.tensor_addrs and \
                        self.residency.run_of(a.tensor) == run
                    conv.x_addr = 0 if resident_in else self.tensor_addrs[a.tensor] if in_program \
                        else self.memory.alloc(conv.H * conv.W * conv.C)
                    conv.pad_addr = self.memory.alloc(pad_bytes)
                    conv.weight_addr = self.memory.alloc(
                        weight_bytes(self.config, conv_k_tiles(self.config, conv), N))
                    conv.param_addr = self.memory.alloc(param_bytes(self.config, N))
                    conv.y_addr = 0 if resident_out else self.memory.alloc(M * N * out_bytes)
                    self.tensor_addrs[y] = conv.y_addr
                    emit_conv(self.config, conv, self.run_program if run else program)
                    geometry.append(dict(layer, direct=True, x_addr=conv.x_addr,
                                         pad_addr=conv.pad_addr, pad_bytes=pad_bytes,
                                         weight_addr=conv.weight_addr, param_addr=conv.param_addr,
                                         y_addr=conv.y_addr,
                                         **({"x_resident": True} if resident_in else {}),
                                         **({"x_in_program": True} if in_program else {})))
                    continue
                pitch = a_pitch(self.config, K)
                gemm = GemmLayer(M, K, N, a_addr=self.memory.alloc(M * pitch),
                                 weight_addr=0, param_addr=0, y_addr=0,
                                 act_flip=a_dtype == "uint8", out_int32=out_int32, name=name,
                                 a_pitch=pitch)
                gemm.weight_addr = self.memory.alloc(weight_bytes(self.config, -(-K // self.config.rows), N))
                gemm.param_addr = self.memory.alloc(param_bytes(self.config, N))
                gemm.y_addr = self.memory.alloc(M * N * out_bytes)
                emit_gemm(self.config, gemm, program)
            except LayerError as error:
                raise CompileError(str(error)) from None
            geometry.append(dict(layer, a_addr=gemm.a_addr, a_pitch=pitch,
                                 weight_addr=gemm.weight_addr, param_addr=gemm.param_addr,
                                 y_addr=gemm.y_addr))
        if direct and len(layers) == 1:
            self.conv_layers[y] = conv
        self.produce(y, out_shape, y_dtype)
        step = {
            "op": "gemm", "node": self.name(node), "op_type": node.op_type, "kind": kind,
            "a": a.__dict__, "a_dtype": a_dtype, "b": b.__dict__, "bias": bias, "y": y,
            "y_dtype": y_dtype, "y_scale": y_name.scale if y_name else "",
            "y_zero_point": y_name.zero_point if y_name else "", "activation": activation,
            "attrs": attrs, "layers": geometry, "out_shape": list(out_shape), "weight_split": split,
        }
        if resident_out:
            step["y_resident"] = True
        self.end_step(step, run, program)

    def end_step(self, step, run, program):
        """Append ``step`` with its ``program``; a step of a run (:class:`_Residency`) adds
        to the run's program instead, which the run's last step runs, and the others run
        with the next step."""
        if run and run[-1] != self.output_of(step):
            step.update(program=None, program_addr=None, instructions=0, runs_with_next=True)
        elif run:
            self.store_program(step, self.run_program.end())
            step["add_ranges"], self.program_adds = self.program_adds, []
            self.run_program = Program()
        else:
            self.store_program(step, program.end())
            step["add_ranges"] = [[0, len(program) - 1]] if step["op"] == "npu_add" else []
        self.steps.append(step)

    @staticmethod
    def output_of(step):
        """The tensor a step computes."""
        return step["y"]["tensor"] if isinstance(step["y"], dict) else step["y"]

    def store_program(self, step, program):
        """Give ``step`` its (ended) ``program``: a constant of the model and a place in
        memory."""
        code = program.to_bytes()
        self.programs[f"program{len(self.steps)}"] = program
        step.update(program=f"program{len(self.steps)}", instructions=len(program),
                    program_addr=self.memory.alloc(len(code), INSTRUCTION_BYTES))
        self.constants[step["program"]] = np.frombuffer(code, np.uint8)

    def im2col_between_npu_steps(self):
        """Whether a convolution on the host's im2col reads what an NPU step computes (it
        then keeps the NPU steps around it from one run)."""
        computed = {self.output_of(step) for step in self.steps
                    if step["op"] in ("gemm", "npu_add")}
        return any(step["op"] == "gemm" and step["kind"] == "conv" and
                   not step["layers"][0].get("direct") and step["a"]["tensor"] in computed
                   for step in self.steps)

    def run_member(self, step):
        """The :class:`_RunMember` of ``step`` if it may join a run, else None."""
        y = step.get("y")
        if step["op"] == "gemm" and y in self.conv_layers and \
                not self.conv_layers[y].depthwise and not self.conv_layers[y].out_int32:
            return _RunMember(y, [step["a"]["tensor"]], self.conv_layers[y])
        if step["op"] == "npu_add" and len(step["out_shape"]) == 4 and step["out_shape"][0] == 1:
            _, c, h, w = step["out_shape"]
            return _RunMember(y["tensor"], [step["a"]["tensor"], step["b"]["tensor"]],
                              self.add_layers[y["tensor"]], (h, w, c))
        return None

    def order_steps(self):
        """Move each step that cannot join a run after the steps that may and do not read
        what it computes (a shortcut on im2col after the convolution beside it), so that
        those form longer runs."""
        moved = True
        while moved:
            moved = False
            for i in range(len(self.steps) - 1):
                step, after = self.steps[i], self.steps[i + 1]
                if self.run_member(step) is None and self.run_member(after) is not None and \
                        "y" in step and self.output_of(step) not in _reads(after):
                    self.steps[i:i + 2] = [after, step]
                    moved = True

    def plan_residency(self):
        """The :class:`_Residency` of this compilation's steps: the runs of consecutive NPU
        steps (direct convolutions of one image, adds in the add mode) that may run as one
        program, each planned by :meth:`plan_run`."""
        outputs = {o.name for o in self.graph.output}
        members = [self.run_member(step) for step in self.steps]
        readers = {}
        for index, step in enumerate(self.steps):
            for name in _reads(step):
                readers.setdefault(name, []).append(index)
        residency = _Residency()
        run = []
        for index, member in enumerate(members + [None]):
            if member is not None:
                run.append(index)
            elif run:
                self.plan_run(run, members, readers, outputs, residency)
                run = []
        return residency

    def plan_run(self, run, members, readers, outputs, residency):
        """Add to ``residency`` the steps ``run`` (indices of consecutive members), as one
        program if the cost model prefers it, else cut in two and each half planned the
        same way.

        A tensor the run computes stays in the scratchpad when only steps of the run read
        it; the others are stored (a later step of the run reads them back). An add of the
        run must find both operands there. Its operands and result share one layout: NHWC,
        each pixel in whole activation slots, padded as much as any convolution reading
        one of them needs (the add runs over the padding too; a convolution fills the
        padding before it reads). The tensors are placed first fit in order of
        computation, an add's result over an operand it is the last to read, and each
        step plans its buffers in the largest gap that is left."""
        config = self.config
        if len(run) < 2:
            return
        inside = set(run)
        tensors = [members[i].output for i in run]
        kept = {t for t, i in zip(tensors, run) if t not in outputs and readers.get(t) and
                set(readers[t]) <= inside and tiles_fill_slots(config) and
                members[i].shape[2] <= config.channel_depth * config.cols}

        def cut(at):
            self.plan_run(run[:at], members, readers, outputs, residency)
            self.plan_run(run[at:], members, readers, outputs, residency)

        # Layouts: the classes of tensors an add joins, padded for their readers.
        classes = {t: {t} for t in tensors}
        for k, i in enumerate(run):
            member = members[i]
            if member.is_add:
                if not all(t in kept for t in member.inputs):
                    # It runs alone, from memory.
                    self.plan_run(run[:k], members, readers, outputs, residency)
                    self.plan_run(run[k + 1:], members, readers, outputs, residency)
                    return
                joined = set().union(*(classes[t] for t in member.inputs + [member.output]))
                for t in joined:
                    classes[t] = joined
        pads = {}
        for t in kept:
            key = id(classes[t])
            for j in run:
                if not members[j].is_add and members[j].inputs[0] in classes[t]:
                    pads[key] = [max(a, b) for a, b in zip(pads.get(key, [0] * 4),
                                                           members[j].layer.pads)]
        layouts = {t: resident_tensor(config, 0, *members[i].shape,
                                      pads.get(id(classes[t]), [0] * 4))
                   for t, i in zip(tensors, run) if t in kept or members[i].is_add}
        for k, i in enumerate(run):
            member = members[i]
            if member.is_add and member.output not in kept:
                layout = layouts[member.output]
                if any(layout.pads(*member.shape[:2])) or layout.pixel != member.shape[2]:
                    return cut(k)       # stored as plain NHWC only
        # Placement, first fit, and each step's window.
        S = config.scratchpad_bytes
        last = {t: max(k for k, i in enumerate(run) if t in members[i].inputs) for t in kept}
        placed, tensors_at, windows = {}, {}, {}
        for k, i in enumerate(run):
            member = members[i]
            live = {t: span for t, span in placed.items() if last[t] >= k}
            if member.output in kept:
                size = layouts[member.output].size
                addr = next((placed[t][0] for t in member.inputs if member.is_add and
                             last[t] == k and placed[t][1] == size), None)
                if addr is None:
                    addr = _first_fit(live.values(), size, S)
                if addr is None:
                    return cut(max(k, 1))
                placed[member.output] = live[member.output] = (addr, size)
                tensors_at[member.output] = replace(layouts[member.output], addr=addr)
            windows[member.output] = _largest_gap(live.values(), S)
        # Emission, and the cost model's verdict against running the steps apart.
        together, apart = Program(), []
        adds = []
        for k, i in enumerate(run):
            member = members[i]
            window = windows[member.output]
            try:
                if member.is_add:
                    layer = replace(member.layer, x_resident=tensors_at[member.inputs[0]],
                                    y_resident=tensors_at[member.inputs[1]],
                                    out_resident=tensors_at.get(member.output), window=window,
                                    n=layouts[member.inputs[0]].size)
                    start = len(together)
                    emit_add(config, layer, together)
                    adds.append([start, len(together)])
                    apart.append(predict_program(config, emit_add(config, member.layer), add=True))
                else:
                    layer = replace(member.layer, x_resident=tensors_at.get(member.inputs[0]),
                                    y_resident=tensors_at.get(member.output), window=window)
                    emit_conv(config, layer, together)
                    apart.append(predict_layer(config, member.layer))
            except LayerError:
                return cut(max(k, 1))
        if preferred([sum(apart[1:], apart[0]), predict_program(config, together, add=adds)],
                     LOWERING_TOLERANCE) != 1:
            return cut(len(run) // 2)
        residency.runs.append(tensors)
        residency.tensors.update(tensors_at)
        residency.windows.update(windows)

    @staticmethod
    def depthwise(a_shape, b_shape, attrs):
        """Whether the convolution is depthwise: a group per input and output channel."""
        return attrs.get("group", 1) > 1 and attrs["group"] == a_shape[1] == b_shape[0]

    def conv_layer(self, a_shape, b_shape, attrs, a_dtype, out_int32, name):
        """The :class:`sw.kernels.ConvLayer` of one group of a convolution, or of all of a
        depthwise one's channels (addresses 0)."""
        _, _, h, w = a_shape
        oc, cg, kh, kw = b_shape
        depthwise = self.depthwise(a_shape, b_shape, attrs)
        return ConvLayer(h, w, oc if depthwise else cg,
                         oc if depthwise else oc // attrs.get("group", 1), (kh, kw),
                         tuple(attrs.get("strides", [1, 1])),
                         tuple(attrs.get("pads", [0, 0, 0, 0])),
                         act_flip=a_dtype == "uint8", out_int32=out_int32, name=name,
                         depthwise=depthwise)

    def prefers_direct(self, layers, a_shape, b_shape, attrs, a_dtype, out_int32, name):
        """Whether the convolution runs straight from its input (``sw.kernels.emit_conv``)
        rather than as GEMMs on the host's im2col, one per group: the cost model's
        :func:`sw.kernels.preferred` of the two, per image, with the lowering's tolerance
        (:data:`sw.kernels.LOWERING_TOLERANCE`)."""
        conv = self.conv_layer(a_shape, b_shape, attrs, a_dtype, out_int32, name)
        try:
            direct = predict_layer(self.config, conv)
        except LayerError:
            return False
        layer = layers[0]
        K = layer["K"]
        gemm = GemmLayer(layer["M"], K, layer["N"], 0, 0, 0, 0, act_flip=a_dtype == "uint8",
                         out_int32=out_int32, name=name, a_pitch=a_pitch(self.config, K))
        try:
            one_group = predict_layer(self.config, gemm)
        except LayerError:
            return True
        groups = 1 if not conv.depthwise else attrs["group"]
        im2col = replace(one_group, **{key: getattr(one_group, key) * groups for key in
                                       ("cycles", "dma_read_bytes", "dma_write_bytes")})
        images = a_shape[0]
        self.lowering_options[name] = [(images * p.cycles, images * (p.dma_read_bytes + p.dma_write_bytes))
                                       for p in (im2col, direct)]
        decision = self.lowerings.get(name, preferred([im2col, direct], LOWERING_TOLERANCE) == 1)
        self.lowering_choices[name] = decision
        return decision

    def network_lowerings(self):
        """{convolution: whether it runs straight from its input} for every convolution
        that can run either way, chosen for the whole network: each layer's own
        :meth:`prefers_direct` choice on this (first) compilation, then, most DRAM bytes saved per cycle added first,
        the other lowering of layers where it moves fewer bytes, as long as these layers
        together stay within the lowering's tolerance of their fastest cycles. (A slow
        lowering of one small layer, such as ResNet-8's stem run straight from its three
        channels, may cost the network a few percent of its cycles for a tenth of its
        bytes.)"""
        chosen, extra, candidates = {}, 0, []
        fastest = sum(min(cycles for cycles, _ in options) for options in self.lowering_options.values())
        for name, options in self.lowering_options.items():
            direct = chosen[name] = self.lowering_choices[name]
            (cycles, bytes_), (other_cycles, other_bytes) = options[direct], options[not direct]
            extra += cycles - min(cycles, other_cycles)
            if other_bytes < bytes_:
                candidates.append(((bytes_ - other_bytes) / max(other_cycles - cycles, 1),
                                   name, other_cycles - cycles))
        for _, name, added in sorted(candidates, reverse=True):
            if extra + added <= LOWERING_TOLERANCE * fastest:
                chosen[name] = not chosen[name]
                extra += added
        return chosen

    def weight_split(self, b):
        """How many int8 weight matrices ``w - zero_point`` needs (1 to 3).

        The array multiplies int8 × int8. Weights minus their zero point span up to
        [-255, 255]; such a layer runs with its K dimension repeated, the weights split
        into parts that each fit int8 and sum to the original (the activations are
        repeated to match), so any zero point stays exact.
        """
        dtype = self.dtype(b.tensor)
        zp = self.constants.get(b.zero_point) if b.zero_point else np.zeros(1, np.int64)
        if b.tensor in self.constants and zp is not None:
            w = self.constants[b.tensor].astype(np.int64)
            zp = np.asarray(zp, np.int64)
            low, high = int(w.min()) - int(zp.max()), int(w.max()) - int(zp.min())
        elif dtype == "int8" and zp is not None and not np.any(zp):
            return 1
        else:
            low, high = -255, 255
        return max(1, -(-high // 127), -(-(-low) // 128))

    def gemm_geometry(self, node, kind, a_shape, b_shape, attrs):
        """The GEMM layers (M, K, N, batch and group indices) and the output shape."""
        if kind == "conv":
            if len(a_shape) != 4 or len(b_shape) != 4:
                self.fail(node, "only 2-D convolutions (NCHW) are supported")
            n, c, h, w = a_shape
            oc, cg, kh, kw = b_shape
            group = attrs.get("group", 1)
            if attrs.get("dilations", [1, 1]) != [1, 1]:
                self.fail(node, "dilated convolutions are not supported")
            if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                self.fail(node, f"auto_pad {attrs['auto_pad']} is not supported: give the pads")
            if c != cg * group or oc % group:
                self.fail(node, f"{c} input channels do not match the weights' {cg} x {group} groups")
            sh, sw = attrs.get("strides", [1, 1])
            pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
            oh = (h + pt + pb - kh) // sh + 1
            ow = (w + pl + pr - kw) // sw + 1
            layers = [{"M": oh * ow, "K": cg * kh * kw, "N": oc // group, "batch": i, "group": g}
                      for i in range(n) for g in range(group)]
            return layers, (n, oc, oh, ow)
        if kind == "gemm":
            (m, k) = a_shape[::-1] if attrs.get("transA") else a_shape
            (k2, nn) = b_shape[::-1] if attrs.get("transB") else b_shape
            if k != k2:
                self.fail(node, f"inner dimensions {k} and {k2} differ")
            return [{"M": m, "K": k, "N": nn, "batch": 0, "group": 0}], (m, nn)
        # matmul, with NumPy broadcasting of batch dimensions
        if len(a_shape) < 2 or len(b_shape) < 2:
            self.fail(node, "1-D matrix products are not supported")
        m, k = a_shape[-2:]
        k2, nn = b_shape[-2:]
        if k != k2:
            self.fail(node, f"inner dimensions {k} and {k2} differ")
        try:
            batch = np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2]))
        except ValueError:
            self.fail(node, f"batch dimensions {a_shape[:-2]} and {b_shape[:-2]} do not broadcast")
        count = int(np.prod(batch)) if batch else 1
        return ([{"M": m, "K": k, "N": nn, "batch": i, "group": 0} for i in range(count)],
                (*batch, m, nn))

    def op_QLinearConv(self, node):
        i = list(node.input) + [""] * (9 - len(node.input))
        y = _Q(node.output[0], i[6], i[7])
        self.gemm_step(node, "conv", _Q(i[0], i[1], i[2]), _Q(i[3], i[4], i[5]), i[8] or None,
                       node.output[0], self.output_dtype(y), None, self.conv_attrs(node), y)

    def conv_attrs(self, node):
        attrs = self.attrs(node)
        kernel = list(self.shapes[node.input[3]][2:]) if node.input[3] in self.shapes else None
        return {"group": attrs.get("group", 1), "strides": list(attrs.get("strides", [1, 1])),
                "pads": list(attrs.get("pads", [0, 0, 0, 0])),
                "dilations": list(attrs.get("dilations", [1, 1])),
                "kernel": list(attrs.get("kernel_shape", kernel or [])),
                "auto_pad": attrs.get("auto_pad", b"NOTSET").decode()
                if isinstance(attrs.get("auto_pad", b""), bytes) else attrs.get("auto_pad", "NOTSET")}

    def op_QLinearMatMul(self, node):
        i = node.input
        y = _Q(node.output[0], i[6], i[7])
        self.gemm_step(node, "matmul", _Q(i[0], i[1], i[2]), _Q(i[3], i[4], i[5]), None,
                       node.output[0], self.output_dtype(y), None, {}, y)

    def op_QGemm(self, node):
        i = list(node.input) + [""] * (9 - len(node.input))
        attrs = self.attrs(node)
        gemm_attrs = {"transA": attrs.get("transA", 0), "transB": attrs.get("transB", 0),
                      "alpha": float(attrs.get("alpha", 1.0))}
        if i[7]:
            y = _Q(node.output[0], i[7], i[8])
            self.gemm_step(node, "gemm", _Q(i[0], i[1], i[2]), _Q(i[3], i[4], i[5]), i[6] or None,
                           node.output[0], self.output_dtype(y), None, gemm_attrs, y)
        else:
            self.gemm_step(node, "gemm", _Q(i[0], i[1], i[2]), _Q(i[3], i[4], i[5]), i[6] or None,
                           node.output[0], "float32", None, gemm_attrs, None)

    def op_MatMulInteger(self, node):
        i = list(node.input) + [""] * (4 - len(node.input))
        self.gemm_step(node, "matmul", _Q(i[0], "", i[2]), _Q(i[1], "", i[3]), None,
                       node.output[0], "int32")

    def op_ConvInteger(self, node):
        i = list(node.input) + [""] * (4 - len(node.input))
        attrs = self.conv_attrs(_Shifted(node, {3: 1}))
        self.gemm_step(node, "conv", _Q(i[0], "", i[2]), _Q(i[1], "", i[3]), None,
                       node.output[0], "int32", None, attrs)

    def op_Conv(self, node):
        inputs, y, activation, _ = self.take_group(node)
        a, w = inputs[0], inputs[1]
        bias = self.quantized_bias(node, inputs[2] if len(inputs) > 2 else None)
        if not isinstance(w, _Q):
            self.fail(node, "the weights are not quantized")
        self.gemm_step(node, "conv", a, w, bias, y.tensor, self.output_dtype(y), activation,
                       self.conv_attrs(_Shifted(node, {3: 1})), y)

    def op_MatMul(self, node):
        inputs, y, activation, _ = self.take_group(node)
        self.gemm_step(node, "matmul", inputs[0], inputs[1], None, y.tensor,
                       self.output_dtype(y), activation, {}, y)

    def op_Gemm(self, node):
        inputs, y, activation, _ = self.take_group(node)
        attrs = self.attrs(node)
        if float(attrs.get("beta", 1.0)) != 1.0:
            self.fail(node, "beta != 1 is not supported")
        bias = self.quantized_bias(node, inputs[2] if len(inputs) > 2 else None)
        self.gemm_step(node, "gemm", inputs[0], inputs[1], bias, y.tensor, self.output_dtype(y),
                       activation, {"transA": attrs.get("transA", 0), "transB": attrs.get("transB", 0),
                                    "alpha": float(attrs.get("alpha", 1.0))}, y)

    def quantized_bias(self, node, bias):
        if bias is None:
            return None
        if isinstance(bias, _Q):
            if self.dtype(bias.tensor) != "int32":
                self.fail(node, "the bias is not quantized to int32")
            return bias.tensor
        self.fail(node, "a float bias is not supported (quantize the model with its bias)")

    # --- additions -------------------------------------------------------------------------------
    def op_QLinearAdd(self, node):
        i = node.input
        self.add_step(node, _Q(i[0], i[1], i[2]), _Q(i[3], i[4], i[5]),
                      _Q(node.output[0], i[6], i[7] if len(i) > 7 else ""), None)

    def op_Add(self, node):
        inputs, y, activation, _ = self.take_group(node)
        if not all(isinstance(v, _Q) for v in inputs):
            self.fail(node, "adds a float constant")
        self.add_step(node, inputs[0], inputs[1], y, activation)

    def add_step(self, node, a, b, y, activation):
        """An ``add`` step on the host (``sw.host_ops.qlinear_add``, with the reason it does
        not run on the NPU), or an ``npu_add`` step: a program of the output stage's add
        mode (``sw.kernels.emit_add``), whose ``a`` is the operand onnxruntime streams as X
        (input B when it swaps them, ``sw.host_ops.qlinear_add_swaps``) and ``b`` the other."""
        a_shape, b_shape = self.shape(node, a.tensor), self.shape(node, b.tensor)
        try:
            shape = np.broadcast_shapes(a_shape, b_shape)
        except ValueError:
            self.fail(node, f"input shapes {list(a_shape)} and {list(b_shape)} do not broadcast")
        dtype = self.output_dtype(y)
        self.produce(y.tensor, shape, dtype)
        step = {"node": self.name(node), "y": y.__dict__, "activation": activation}
        x, y_in = (b, a) if host_ops.qlinear_add_swaps(a_shape, b_shape) else (a, b)
        refusal = self.add_mode_refusal(x, y_in, y, a_shape, b_shape)
        name = f"{self.source}: node '{self.name(node)}' ({node.op_type})"
        layer = AddLayer(int(np.prod(shape)), unsigned=dtype == "uint8", name=name)
        if refusal is None:
            try:
                chunk = plan_add(self.config, layer)
            except LayerError as error:
                refusal = str(error).removeprefix(f"{name}: ")
        if refusal is not None:
            self.steps.append({"op": "add", **step, "a": a.__dict__, "b": b.__dict__,
                               "host_reason": refusal})
            return
        run = self.residency.run_of(y.tensor)
        tensors = self.residency.tensors
        if run:
            # In a run, its operands are in the scratchpad (NHWC, padded as their class,
            # see _Residency), and so is its result, or it is stored as plain NHWC.
            layer = replace(layer, x_resident=tensors[x.tensor], y_resident=tensors[y_in.tensor],
                            out_resident=tensors.get(y.tensor),
                            window=self.residency.windows.get(y.tensor))
            layer.n = layer.x_resident.size
        n = layer.n
        if not run:
            layer.x_addr, layer.y_addr = self.memory.alloc(n), self.memory.alloc(n)
        layer.weight_addr = self.memory.alloc(weight_bytes(self.config, 2, self.config.cols))
        layer.param_addr = self.memory.alloc(param_bytes(self.config, self.config.cols))
        layer.out_addr = 0 if layer.out_resident else self.memory.alloc(n)
        self.tensor_addrs[y.tensor] = layer.out_addr
        self.add_layers[y.tensor] = layer
        step.update(op="npu_add", op_type=node.op_type, a=x.__dict__, b=y_in.__dict__,
                    layer=dict(n=n, x_addr=layer.x_addr, y_addr=layer.y_addr,
                               weight_addr=layer.weight_addr, param_addr=layer.param_addr,
                               out_addr=layer.out_addr, unsigned=layer.unsigned),
                    out_shape=list(shape))
        if run:
            step.update(x_resident=True, nhwc=True, y_resident=layer.out_resident is not None)
        program = Program()
        target = self.run_program if run else program
        start = len(target)
        emit_add(self.config, layer, target, chunk_vectors=None if run else chunk)
        if run:
            self.program_adds.append([start, len(target)])
        self.end_step(step, run, program)

    def add_mode_refusal(self, x, y_in, y, x_shape, y_shape):
        """Why the add of ``x`` and ``y_in`` into ``y`` (X and Y as onnxruntime streams them)
        cannot run in the output stage's add mode, as a phrase, or None: it needs the mode
        in the configuration, inputs of one shape, one 8-bit type for inputs and output,
        per-tensor constant scales and zero points, and parameters the mode computes
        exactly (``hw.add_stage.add_mode_unsupported``)."""
        if not self.config.elementwise_add:
            return "the configuration has no add mode"
        if tuple(x_shape) != tuple(y_shape):
            return f"its inputs broadcast ({list(x_shape)} and {list(y_shape)})"
        dtypes = [self.dtype(x.tensor), self.dtype(y_in.tensor), self.output_dtype(y)]
        if len(set(dtypes)) != 1 or dtypes[0] not in ("uint8", "int8"):
            return f"its inputs and output are {', '.join(dtypes)}, not one 8-bit type"
        values = []
        for name in (x.scale, x.zero_point, y_in.scale, y_in.zero_point, y.scale, y.zero_point):
            if name and (name not in self.constants or self.constants[name].size != 1):
                return f"'{name}' is not a per-tensor constant"
            values.append(self.constants[name] if name else np.zeros((), dtypes[0]))
        ratio_x, ratio_y, fixed = host_ops.qlinear_add_parameters(*values)
        return add_mode_unsupported(fixed, ratio_x, ratio_y)

    def pool_attrs(self, node):
        attrs = self.attrs(node)
        kernel = list(attrs["kernel_shape"])
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if isinstance(auto_pad, bytes):
            auto_pad = auto_pad.decode()
        if auto_pad not in ("NOTSET", "VALID"):
            self.fail(node, f"auto_pad {auto_pad} is not supported")
        return {"kernel_shape": kernel, "strides": list(attrs.get("strides", [1] * len(kernel))),
                "pads": list(attrs.get("pads", [0] * 2 * len(kernel))),
                "dilations": list(attrs.get("dilations", [1] * len(kernel))),
                "ceil_mode": int(attrs.get("ceil_mode", 0)),
                "count_include_pad": int(attrs.get("count_include_pad", 0))}

    def pool_shape(self, node, shape, attrs):
        out = list(shape[:2])
        for axis, k in enumerate(attrs["kernel_shape"]):
            size = shape[2 + axis] + attrs["pads"][axis] + attrs["pads"][axis + len(attrs["kernel_shape"])]
            span = (k - 1) * attrs["dilations"][axis] + 1
            stride = attrs["strides"][axis]
            count = (-(-(size - span) // stride) if attrs["ceil_mode"] else (size - span) // stride) + 1
            out.append(count)
        return out

    def op_MaxPool(self, node):
        x = node.input[0]
        if x in self.dequantized or self.dtype(x) == "float32":
            inputs, y, activation, _ = self.take_group(node)
            x_q = inputs[0]
            out_name, out_q = y.tensor, y
        else:
            x_q, out_name, out_q = _Q(x, "", ""), node.output[0], None
        attrs = self.pool_attrs(node)
        shape = self.pool_shape(node, self.shape(node, x_q.tensor), attrs)
        self.produce(out_name, shape, self.dtype(x_q.tensor))
        self.steps.append({"op": "maxpool", "node": self.name(node), "x": x_q.__dict__,
                           "y": out_name, "y_q": out_q.__dict__ if out_q else None, "attrs": attrs})

    def op_QLinearAveragePool(self, node):
        i = node.input
        self.avgpool_step(node, _Q(i[0], i[1], i[2]), _Q(node.output[0], i[3], i[4] if len(i) > 4 else ""))

    def op_AveragePool(self, node):
        inputs, y, _, _ = self.take_group(node)
        self.avgpool_step(node, inputs[0], y)

    def avgpool_step(self, node, x, y):
        attrs = self.pool_attrs(node)
        self.produce(y.tensor, self.pool_shape(node, self.shape(node, x.tensor), attrs),
                     self.output_dtype(y))
        self.steps.append({"op": "avgpool", "node": self.name(node), "x": x.__dict__,
                           "y": y.__dict__, "attrs": attrs})

    def op_QLinearGlobalAveragePool(self, node):
        i = node.input
        if self.attrs(node).get("channels_last", 0):
            self.fail(node, "channels_last is not supported")
        self.gap_step(node, _Q(i[0], i[1], i[2]), _Q(node.output[0], i[3], i[4] if len(i) > 4 else ""))

    def op_GlobalAveragePool(self, node):
        inputs, y, _, _ = self.take_group(node)
        self.gap_step(node, inputs[0], y)

    def gap_step(self, node, x, y):
        shape = self.shape(node, x.tensor)
        self.produce(y.tensor, (*shape[:2],) + (1,) * (len(shape) - 2), self.output_dtype(y))
        self.steps.append({"op": "global_avgpool", "node": self.name(node), "x": x.__dict__,
                           "y": y.__dict__})

    def reshape_like(self, node, shape_of):
        x = node.input[0]
        if x in self.dequantized:
            inputs, y, _, _ = self.take_group(_Only(node, 1))
            source, target, y_q = inputs[0], y.tensor, y
        else:
            source, target, y_q = _Q(x, "", ""), node.output[0], None
        shape = shape_of(self.shape(node, source.tensor))
        self.produce(target, shape, self.dtype(source.tensor))
        self.steps.append({"op": "reshape", "node": self.name(node), "x": source.__dict__,
                           "y": target, "y_q": y_q.__dict__ if y_q else None, "shape": list(shape)})

    def op_Reshape(self, node):
        if node.input[1] not in self.constants:
            self.fail(node, "the target shape is not a constant")
        target = [int(v) for v in self.constants[node.input[1]]]

        def shape_of(shape):
            out = [shape[i] if v == 0 else v for i, v in enumerate(target)]
            if -1 in out:
                known = int(np.prod([v for v in out if v != -1]))
                out[out.index(-1)] = int(np.prod(shape)) // known
            if int(np.prod(out)) != int(np.prod(shape)):
                self.fail(node, f"cannot reshape {shape} to {target}")
            return out
        self.reshape_like(node, shape_of)

    def op_Flatten(self, node):
        axis = self.attrs(node).get("axis", 1)
        self.reshape_like(node, lambda s: [int(np.prod(s[:axis])), int(np.prod(s[axis:]))])


_FOLDABLE = {"Conv", "MatMul", "Gemm", "Add", "AveragePool", "GlobalAveragePool", "MaxPool",
             "Reshape", "Flatten"}


class _Shifted:
    """A node whose input ``i`` is read as input ``j`` (to share attribute helpers)."""

    def __init__(self, node, mapping):
        self.node = node
        inputs = list(node.input)
        for target, source in mapping.items():
            while len(inputs) <= target:
                inputs.append("")
            inputs[target] = node.input[source]
        self.input = inputs
        self.attribute = node.attribute
        self.output = node.output
        self.op_type = node.op_type
        self.name = node.name


class _Only:
    """A node seen with only its first ``count`` inputs (the data, not the shape)."""

    def __init__(self, node, count):
        self.input = list(node.input)[:count]
        self.output = node.output
        self.op_type = node.op_type
        self.name = node.name
        self.attribute = node.attribute


def _network_prediction(compiler):
    """The cost model's prediction of all the NPU programs of ``compiler``'s steps."""
    total = None
    for step in compiler.steps:
        if step.get("program"):
            p = predict_program(compiler.config, compiler.programs[step["program"]],
                                add=step["add_ranges"])
            total = p if total is None else total + p
    return total


def compile_model(model, config=DEFAULT_CONFIG, source=None):
    """Compile an ONNX model (a path or a ``ModelProto``) for ``config``."""
    if not isinstance(model, onnx.ModelProto):
        source = source or str(model)
        try:
            model = onnx.load(model)
        except FileNotFoundError:
            raise CompileError(f"{source}: no such file") from None
        except Exception as error:
            raise CompileError(f"{source}: not an ONNX model ({type(error).__name__})") from None
        if not model.graph.node:
            raise CompileError(f"{source}: not an ONNX model (no graph)")
    source = source or model.graph.name or "model"
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:
        pass
    compiler = _Compiler(model, config, source)
    compiler.run()
    lowerings = compiler.network_lowerings()
    if any(direct != compiler.lowering_choices[name] for name, direct in lowerings.items()):
        compiler = _Compiler(model, config, source, lowerings)
        compiler.run()
    # Runs of steps as one program, tensors kept in the scratchpad between them; a
    # convolution on the host's im2col cannot join one, so the network is also tried with
    # every convolution run directly, and the cost model chooses.
    options = [(compiler, lowerings)]
    if compiler.im2col_between_npu_steps():
        direct = {name: True for name in compiler.lowering_options}
        options.append((_Compiler(model, config, source, direct), direct))
        options[-1][0].run()
    for index, (option, choice) in enumerate(options):
        residency = option.plan_residency()
        if residency.runs:
            options[index] = (_Compiler(model, config, source, choice, residency), choice)
            options[index][0].run()
    compiler = options[0][0] if len(options) == 1 else options[preferred(
        [_network_prediction(option) for option, _ in options], LOWERING_TOLERANCE)][0]

    def describe(value):
        entry = {"name": value.name, "shape": list(compiler.shapes[value.name]),
                 "dtype": compiler.dtypes.get(value.name, "unknown")}
        return entry

    inputs = [describe(v) for v in model.graph.input if v.name not in compiler.constants]
    outputs = [describe(v) for v in model.graph.output]
    constants = {name: np.asarray(value) for name, value in compiler.constants.items()}
    return CompiledModel(config, inputs, outputs, compiler.steps, constants,
                         memory_bytes=-(-compiler.memory.top // 4096) * 4096 + 4096,
                         source=source)
