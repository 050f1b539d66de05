"""Runtime: runs a compiled model (``.npu``) on a backend.

One runtime, several backends, as a driver over transports: the **golden** backend is
the NumPy NPU simulator; the **rtl** backend is the Verilator model driven through
cocotb (``verif/tb_runtime.py``); a board backend talks to the FPGA over its host link.
A backend only moves bytes and runs programs:

* ``async write_memory(address, data)`` and ``async read_memory(address, length)``;
* ``async run_program(address)`` → :class:`sw.driver.RunStatus` (with the counters).

The runtime does the rest: it writes the programs once, and for every inference packs
operands and channel parameters (computing each requantization multiplier, and each add
mode's ratios and offset, in float32 exactly as onnxruntime does), runs the NPU programs,
and runs the host steps.
"""

import asyncio
from dataclasses import dataclass, field

import numpy as np

from hw.config import DEFAULT_CONFIG
from hw.registers import ErrorCode
from sw import host_ops
from sw.driver import RunStatus
from sw.kernels import (im2col, pack_add_weights, pack_conv_weights, pack_depthwise_weights,
                        pack_weights)
from sw.simulator import NPUSimulator, pack_add_params, pack_channel_params


__all__ = ["Runtime", "InferenceError", "GoldenBackend", "InferenceStats"]


class InferenceError(Exception):
    """A run that cannot proceed; the message names the tensor, node or file at fault."""


_NUMPY = {"uint8": np.uint8, "int8": np.int8, "int32": np.int32, "float32": np.float32}


@dataclass
class InferenceStats:
    npu_runs: int = 0
    instructions: int = 0
    macs: int = 0
    counters: dict = field(default_factory=dict)

    def add(self, status, macs, instructions):
        self.npu_runs += 1
        self.macs += macs
        self.instructions += instructions
        for key, value in status.counters.items():
            self.counters[key] = self.counters.get(key, 0) + value


class GoldenBackend:
    """The NumPy NPU simulator as a backend."""

    name = "golden"

    def __init__(self, config, memory_bytes):
        self.config = config
        self.memory = np.zeros(memory_bytes, np.uint8)
        self.simulator = NPUSimulator(config)

    async def write_memory(self, address, data):
        data = np.frombuffer(bytes(data), np.uint8)
        self.memory[address:address + len(data)] = data

    async def read_memory(self, address, length):
        return self.memory[address:address + length].tobytes()

    async def run_program(self, address):
        result = self.simulator.run(self.memory, address)
        return RunStatus(done=result.error is ErrorCode.NONE, error=result.error,
                         error_addr=result.error_addr,
                         counters={"mac_cycles": result.mac_cycles,
                                   "dma_read_bytes": result.dma_read_bytes,
                                   "dma_write_bytes": result.dma_write_bytes})


class Runtime:
    """Runs ``model`` (a :class:`sw.npu_file.CompiledModel`) on ``backend``."""

    def __init__(self, model, backend, config=DEFAULT_CONFIG, source="model.npu"):
        if model.config.config_id() != config.config_id():
            raise InferenceError(
                f"{source}: compiled for configuration 0x{model.config.config_id():08x} "
                f"({model.config.rows}x{model.config.cols} array, "
                f"{model.config.scratchpad_bytes // 1024} KiB scratchpad), but the "
                f"{getattr(backend, 'name', 'target')} NPU is 0x{config.config_id():08x} "
                f"({config.rows}x{config.cols}, {config.scratchpad_bytes // 1024} KiB): recompile "
                f"with the target's --config")
        self.model = model
        self.backend = backend
        self.source = source
        self.loaded = False
        self.stats = InferenceStats()
        self._pending = []      # NPU steps written, waiting for the step that runs them

    async def load(self):
        for step in self.model.steps:
            if step.get("program"):
                await self.backend.write_memory(step["program_addr"],
                                                self.model.constants[step["program"]].tobytes())
        self.loaded = True

    def check_inputs(self, inputs):
        for spec in self.model.inputs:
            name = spec["name"]
            if name not in inputs:
                raise InferenceError(f"{self.source}: input '{name}' is missing")
            value = np.asarray(inputs[name])
            if list(value.shape) != spec["shape"]:
                raise InferenceError(f"{self.source}: input '{name}' has shape {list(value.shape)}, "
                                    f"the model expects {spec['shape']}")
            if str(value.dtype) != spec["dtype"]:
                raise InferenceError(f"{self.source}: input '{name}' is {value.dtype}, the model "
                                    f"expects {spec['dtype']}")
        unknown = set(inputs) - {spec["name"] for spec in self.model.inputs}
        if unknown:
            raise InferenceError(f"{self.source}: the model has no input named "
                                f"'{sorted(unknown)[0]}'")

    async def infer(self, inputs):
        """{input name: array} → {output name: array}."""
        self.check_inputs(inputs)
        if not self.loaded:
            await self.load()
        self._pending = []
        env = dict(self.model.constants)
        env.update({name: np.asarray(value) for name, value in inputs.items()})
        for step in self.model.steps:
            await getattr(self, f"_{step['op']}")(step, env)
        return {spec["name"]: env[spec["name"]] for spec in self.model.outputs}

    def infer_sync(self, inputs):
        return asyncio.run(self.infer(inputs))

    # --- host steps ---------------------------------------------------------------------------
    @staticmethod
    def _param(env, name, default_dtype=np.uint8):
        if not name:
            return np.zeros((), default_dtype)
        return np.asarray(env[name])

    async def _quantize(self, step, env):
        zp = self._param(env, step["zero_point"])
        env[step["y"]] = host_ops.quantize_linear(env[step["x"]].astype(np.float32),
                                                  env[step["scale"]], zp)

    async def _dequantize(self, step, env):
        zp = self._param(env, step["zero_point"], env[step["x"]].dtype)
        env[step["y"]] = host_ops.dequantize_linear(env[step["x"]], env[step["scale"]], zp)

    def _q(self, env, q):
        x = env[q["tensor"]]
        return x, env[q["scale"]], self._param(env, q["zero_point"], x.dtype)

    async def _add(self, step, env):
        a, sa, za = self._q(env, step["a"])
        b, sb, zb = self._q(env, step["b"])
        y = step["y"]
        sy, zy = env[y["scale"]], self._param(env, y["zero_point"])
        out = host_ops.qlinear_add(a, sa, za, b, sb, zb, sy, zy)
        env[y["tensor"]] = self._activation(step, env, out, sy, zy)

    def _activation(self, step, env, q, scale, zero_point):
        activation = step.get("activation")
        if not activation:
            return q
        info = np.iinfo(q.dtype)
        lo, hi = self._clamp(activation, env, scale, zero_point, info.min, info.max)
        return np.clip(q, lo, hi).astype(q.dtype)

    @staticmethod
    def _clamp(activation, env, scale, zero_point, qmin, qmax):
        zero_point = int(np.asarray(zero_point).reshape(-1)[0])
        if activation == "relu":
            return max(zero_point, qmin), qmax
        low, high = activation["clip"]

        def quantized(name, default):
            if not name:
                return default
            value = np.float32(np.asarray(env[name]).reshape(-1)[0])
            return int(np.clip(np.rint(value / np.float32(np.asarray(scale).reshape(-1)[0])) +
                               zero_point, qmin, qmax))
        return quantized(low, qmin), quantized(high, qmax)

    async def _maxpool(self, step, env):
        x = env[step["x"]["tensor"]]
        a = step["attrs"]
        env[step["y"]] = host_ops.max_pool(x, a["kernel_shape"], a["strides"], a["pads"],
                                           a["dilations"], a["ceil_mode"])

    async def _avgpool(self, step, env):
        x, sx, zx = self._q(env, step["x"])
        y = step["y"]
        a = step["attrs"]
        env[y["tensor"]] = host_ops.qlinear_average_pool(
            x, sx, zx, env[y["scale"]], self._param(env, y["zero_point"]), a["kernel_shape"],
            a["strides"], a["pads"], a["count_include_pad"], a["ceil_mode"])

    async def _global_avgpool(self, step, env):
        x, sx, zx = self._q(env, step["x"])
        y = step["y"]
        env[y["tensor"]] = host_ops.qlinear_global_average_pool(
            x, sx, zx, env[y["scale"]], self._param(env, y["zero_point"]))

    async def _reshape(self, step, env):
        env[step["y"]] = env[step["x"]["tensor"]].reshape(step["shape"])

    # --- NPU steps ------------------------------------------------------------------------------
    def _operands(self, step, env, layer):
        """(A, W matrix K×N as int64, output columns) of one layer. A is the M×K matrix,
        or for a convolution run straight from its input, that input as H×W×C (None when
        that input stays in the scratchpad, written there by the step before)."""
        b = env[step["b"]["tensor"]]
        za = self._param(env, step["a"]["zero_point"], np.dtype(step["a_dtype"]))
        resident = layer.get("x_resident") or layer.get("x_in_program")
        a = None if resident else env[step["a"]["tensor"]]
        kind, attrs = step["kind"], step["attrs"]
        if kind == "conv" and layer.get("depthwise"):
            # Every channel at once: W holds each channel's kernel in its own column.
            return a[layer["batch"]].transpose(1, 2, 0), b.reshape(b.shape[0], -1).T.astype(np.int64), \
                slice(None)
        if kind == "conv":
            group, batch = layer["group"], layer["batch"]
            oc, cg = b.shape[:2]
            ocg = oc // attrs["group"]
            x = None if resident else a[batch, group * cg:(group + 1) * cg]
            A = None if resident else x.transpose(1, 2, 0) if layer.get("direct") else \
                im2col(x, b.shape[2:], attrs["strides"], attrs["pads"], za.reshape(-1)[0])
            W = b[group * ocg:(group + 1) * ocg].reshape(ocg, -1).T
            columns = slice(group * ocg, (group + 1) * ocg)
        elif kind == "gemm":
            A = a.T if attrs.get("transA") else a
            W = b.T if attrs.get("transB") else b
            columns = slice(None)
        else:
            batch = step["out_shape"][:-2]
            A = np.broadcast_to(a, (*batch, *a.shape[-2:])).reshape(-1, *a.shape[-2:])[layer["batch"]]
            W = np.broadcast_to(b, (*batch, *b.shape[-2:])).reshape(-1, *b.shape[-2:])[layer["batch"]]
            columns = slice(None)
        return A, W.astype(np.int64), columns

    async def _gemm(self, step, env):
        """One NPU step: its operands, weights and channel parameters written, its program
        run, its outputs read (:meth:`_npu_step`)."""
        await self._npu_step(step, env, await self._write_operands(step, env))

    async def _npu_step(self, step, env, written):
        """Run ``step``'s program once its operands are ``written`` (what reading its
        outputs needs), and read the outputs. A step that ``runs_with_next`` only writes:
        the program of the last step of its run computes them all, the tensors between
        them staying in the scratchpad (``y_resident``) or stored for later steps."""
        self._pending.append((step, written))
        if step.get("runs_with_next"):
            return
        steps, self._pending = self._pending, []
        await self._run(step, sum(layer["M"] * layer["K"] * layer["N"] for s, _ in steps
                                  if s["op"] == "gemm" for layer in s["layers"]))
        for s, state in steps:
            if not s.get("y_resident"):
                await (self._read_gemm if s["op"] == "gemm" else self._read_add)(s, env, state)

    async def _read_gemm(self, step, env, corrections):
        """The outputs of a GEMM or convolution step into ``env``."""
        y_dtype = step["y_dtype"]
        out_int32 = y_dtype in ("int32", "float32")
        out = np.zeros(step["out_shape"], _NUMPY[y_dtype])
        for layer, (correction, columns) in zip(step["layers"], corrections):
            M, N = layer["M"], layer["N"]
            raw = await self.backend.read_memory(layer["y_addr"], M * N * (4 if out_int32 else 1))
            if out_int32:
                acc = np.frombuffer(raw, "<i4").reshape(M, N).astype(np.int64) + correction
                value = acc.astype(np.int32)
                if y_dtype == "float32":
                    value = value.astype(np.float32) * self._multipliers(step, env, N, columns, False)
            else:
                value = np.frombuffer(raw, _NUMPY[y_dtype]).reshape(M, N)
            self._place(step, out, layer, value)
        env[step["y"]] = out

    async def _run(self, step, macs):
        """Run ``step``'s program; count its ``macs`` and the NPU's counters in the stats."""
        status = await self.backend.run_program(step["program_addr"])
        if status.error is not ErrorCode.NONE:
            raise InferenceError(f"{self.source}: node '{step['node']}': the NPU stopped with {status}")
        self.stats.add(status, macs, step["instructions"])

    async def _write_operands(self, step, env):
        """Write ``step``'s activations (unless they stay in the scratchpad), weights and
        channel parameters; return each layer's (bias and zero-point correction, output
        columns)."""
        config = self.model.config
        a_dtype = np.dtype(step["a_dtype"])
        offset = 128 if a_dtype == np.uint8 else 0
        za = int(self._param(env, step["a"]["zero_point"], a_dtype).reshape(-1)[0])
        zb_all = self._param(env, step["b"]["zero_point"], np.int8).astype(np.int64)
        corrections = []
        for layer in step["layers"]:
            A, W, columns = self._operands(step, env, layer)
            N = W.shape[1]
            zb = np.broadcast_to(zb_all.reshape(-1)[columns] if zb_all.size > 1 else zb_all.reshape(-1),
                                 (N,))
            W = W - zb
            split = step["weight_split"]
            if W.size and (W.min() < -128 * split or W.max() > 127 * split):
                raise InferenceError(f"{self.source}: node '{step['node']}': weights minus their zero "
                                    f"point exceed the range compiled for ({split} int8 parts)")
            correction = (offset - za) * W.sum(axis=0)
            if split > 1:
                quotient, remainder = np.divmod(W, split)
                W = np.concatenate([quotient + (remainder > part) for part in range(split)])
                A = np.tile(A, (1, split))
            bias = np.zeros(N, np.int64)
            if step["bias"]:
                bias = np.broadcast_to(env[step["bias"]].astype(np.int64).reshape(-1), (
                    env[step["bias"]].size,))[columns] if env[step["bias"]].size > 1 else \
                    np.full(N, int(env[step["bias"]].reshape(-1)[0]))
            if layer.get("direct"):
                if A is not None:
                    await self.backend.write_memory(layer["x_addr"], np.ascontiguousarray(A).tobytes())
                if layer["pad_bytes"]:
                    await self.backend.write_memory(
                        layer["pad_addr"], np.full(layer["pad_bytes"], za, a_dtype).tobytes())
                kernel = env[step["b"]["tensor"]].shape[2:]
                pack = pack_depthwise_weights if layer.get("depthwise") else pack_conv_weights
                weights = pack(config, W.T.reshape(N, -1, *kernel).astype(np.int8))
            else:
                pitch = layer.get("a_pitch", A.shape[1])
                rows = np.zeros((A.shape[0], pitch), a_dtype)
                rows[:, :A.shape[1]] = A
                await self.backend.write_memory(layer["a_addr"], rows.tobytes())
                weights = pack_weights(config, W.astype(np.int8))
            await self.backend.write_memory(layer["weight_addr"], weights.tobytes())
            params = self._channel_params(step, env, N, columns, bias + correction)
            await self.backend.write_memory(layer["param_addr"], pack_channel_params(config, params).tobytes())
            corrections.append((bias + correction, columns))
        return corrections

    async def _npu_add(self, step, env):
        """An add in the output stage's add mode: its operands (``a`` as X, ``b`` as Y, unless
        they are in the scratchpad already), weight tiles and channel row written, its
        program run, its output read (:meth:`_npu_step`)."""
        config = self.model.config
        layer = step["layer"]
        dtype = np.dtype(np.uint8 if layer["unsigned"] else np.int8)
        x_scale, x_zero = env[step["a"]["scale"]], self._param(env, step["a"]["zero_point"], dtype)
        y_scale, y_zero = env[step["b"]["scale"]], self._param(env, step["b"]["zero_point"], dtype)
        out = step["y"]
        scale, zero_point = env[out["scale"]], self._param(env, out["zero_point"])
        ratio_x, ratio_y, fixed = host_ops.qlinear_add_parameters(x_scale, x_zero, y_scale, y_zero,
                                                                  scale, zero_point)
        info = np.iinfo(dtype)
        lo, hi = (info.min, info.max) if not step["activation"] else \
            self._clamp(step["activation"], env, scale, zero_point, info.min, info.max)
        params = pack_add_params(config, config.cols, fixed, ratio_x, ratio_y, lo, hi,
                                 layer["unsigned"])
        writes = [(layer["weight_addr"], pack_add_weights(config)), (layer["param_addr"], params)]
        if not step.get("x_resident"):
            writes += [(layer["x_addr"], env[step["a"]["tensor"]]),
                       (layer["y_addr"], env[step["b"]["tensor"]])]
        for addr, data in writes:
            await self.backend.write_memory(addr, np.ascontiguousarray(data).tobytes())
        await self._npu_step(step, env, dtype)

    async def _read_add(self, step, env, dtype):
        """The output of an add step into ``env``: NCHW as its operands were written, or
        NHWC when they were in the scratchpad (``nhwc``)."""
        layer, shape = step["layer"], step["out_shape"]
        raw = await self.backend.read_memory(layer["out_addr"], layer["n"])
        value = np.frombuffer(raw, dtype)
        if step.get("nhwc"):
            n, c, h, w = shape
            value = value.reshape(h, w, c).transpose(2, 0, 1)
        env[step["y"]["tensor"]] = value.reshape(shape).copy()

    def _multipliers(self, step, env, N, columns, divide=True):
        sa = np.float32(np.asarray(env[step["a"]["scale"]]).reshape(-1)[0])
        sb = np.asarray(env[step["b"]["scale"]], np.float32).reshape(-1)
        sb = sb[columns] if sb.size > 1 else np.full(N, sb[0], np.float32)
        alpha = np.float32(step["attrs"].get("alpha", 1.0))
        scale = (alpha * sa) * sb if step["kind"] == "gemm" else sa * sb
        if divide:
            scale = scale / np.float32(np.asarray(env[step["y_scale"]]).reshape(-1)[0])
        return scale.astype(np.float32)

    def _channel_params(self, step, env, N, columns, bias):
        y_dtype = step["y_dtype"]
        params = {"bias": bias.astype(np.int64).astype(np.int32).astype(np.int64),
                  "zero_point": np.zeros(N, np.int64), "unsigned": np.zeros(N, bool),
                  "clamp_lo": np.full(N, -128), "clamp_hi": np.full(N, 127),
                  "multiplier": np.ones(N, np.float32)}
        if y_dtype in ("uint8", "int8"):
            unsigned = y_dtype == "uint8"
            qmin, qmax = (0, 255) if unsigned else (-128, 127)
            zy = int(self._param(env, step["y_zero_point"]).reshape(-1)[0])
            sy = env[step["y_scale"]]
            lo, hi = (qmin, qmax) if not step["activation"] else \
                self._clamp(step["activation"], env, sy, zy, qmin, qmax)
            params.update(zero_point=np.full(N, zy), unsigned=np.full(N, unsigned),
                          clamp_lo=np.full(N, lo), clamp_hi=np.full(N, hi),
                          multiplier=self._multipliers(step, env, N, columns))
        return params

    @staticmethod
    def _place(step, out, layer, value):
        if step["kind"] == "conv":
            n, oc, oh, ow = out.shape
            N = value.shape[1]
            g = layer["group"]
            out[layer["batch"], g * N:(g + 1) * N] = value.T.reshape(N, oh, ow)
        elif step["kind"] == "gemm":
            out[...] = value
        else:
            out.reshape(-1, *out.shape[-2:])[layer["batch"]] = value
