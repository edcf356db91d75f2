"""Static SASS instruction counts of the parts of one junction reading, without a GPU.

Each part is compiled alone in a one-thread-per-element CUDA kernel (inputs read from arrays, so
nothing is folded away) to PTX by numba-cuda, assembled for the chosen architecture by nvJitLink and
disassembled by cuobjdump (the ``nvidia-cuda-cuobjdump`` wheel, or one on the PATH). Rows:

  stt_compact(I, r_p, ..., i_c)             the model as :meth:`DeviceModel.iv` evaluates it
  stt_compact_prepared(I, 1/r_p, ..., 1/i_c)  what the training kernels evaluate (rows from ``bind``)
  tabulated (Hermite)                       a measured curve's reading (knot interval, cubic Hermite)
  normal_pair (Philox + Box-Muller)         the read noise of two readings
  stt_compact_f32_prepared (kernel rows)    the stt_compact_f32 model: the same junction in float32
  float32: normal_pair                      the noise in float32 (benchmarks/float32_reading.py): what
                                            float32 noise would leave of it

Counts are static: each instruction of the code once, whether it runs never (a division's slow
path), once, or once per Newton step. They show what a change removes from the code, not the time
a reading takes; that needs a GPU (``gpu_check.py``).

    python benchmarks/reading_sass.py             # ~20 s
    python benchmarks/reading_sass.py --arch sm_100
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

INSTRUCTION = re.compile(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")


def kernels():
    """(row name, Python kernel function, signature) of each part."""
    from numba import cuda

    from spingpu.kernels.philox import normal_pair
    from spingpu.kernels.stt_compact import stt_compact, stt_compact_f32_prepared, stt_compact_prepared
    from spingpu.kernels.tabulated import tabulated

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from float32_reading import normal_pair_f32

    def reading(junction):
        """A kernel of one reading per thread of ``junction(I, 6 row values)`` -> (V, dV/dI)."""
        def read(current, rows, out):
            k = cuda.grid(1)
            if k < current.size:
                v, d = junction(current[k], rows[k, 0], rows[k, 1], rows[k, 2], rows[k, 3], rows[k, 4], rows[k, 5])
                out[k] = v + d

        return read

    def draws(normals):
        """A kernel of one Philox normal pair per thread."""
        def draw(counters, k0, k1, out):
            k = cuda.grid(1)
            if k < out.size:
                a, b = normals(counters[k, 0], counters[k, 1], counters[k, 2], counters[k, 3], k0, k1)
                out[k] = a + b

        return draw

    def measured(current, rows, table, out):
        k = cuda.grid(1)
        if k < current.size:
            v, d = tabulated(current[k], rows[k, 0], rows[k, 1], rows[k, 2], table)
            out[k] = v + d

    junction = "(float64[::1], float64[:, ::1], float64[::1])"
    return [("stt_compact (parameters)", reading(stt_compact), junction),
            ("stt_compact_prepared (kernel rows)", reading(stt_compact_prepared), junction),
            ("tabulated (Hermite)", measured, "(float64[::1], float64[:, ::1], float64[:, ::1], float64[::1])"),
            ("normal_pair (2 normals)", draws(normal_pair), "(int64[:, ::1], int64, int64, float64[::1])"),
            ("stt_compact_f32_prepared (kernel rows, float32)", reading(stt_compact_f32_prepared), junction),
            ("float32: normal_pair", draws(normal_pair_f32), "(int64[:, ::1], int64, int64, float32[::1])")]


def cubin(ptx, arch):
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(1, [f"-arch={arch}"])
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
        nvjitlink.complete(handle)
        out = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, out)
    finally:
        nvjitlink.destroy(handle)
    return bytes(out)


def cuda_tool(name, wheel):
    """The path of the CUDA binary tool ``name`` (cuobjdump, nvdisasm): the pip wheel ``wheel``'s,
    or one on the PATH; exits saying what to install where there is none."""
    try:
        import nvidia.cu13

        path = os.path.join(list(nvidia.cu13.__path__)[0], "bin", name)
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} not found: pip install {wheel}, or put the CUDA toolkit's on the PATH")
    return found


def cuobjdump():
    return cuda_tool("cuobjdump", "nvidia-cuda-cuobjdump")


def counts(binary, tool):
    """Counter of the SASS opcodes (without modifiers) of the cubin ``binary``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(binary)
        f.flush()
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    return collections.Counter(op.split(".")[0] for op in INSTRUCTION.findall(sass))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    args = parser.parse_args(argv)
    from spingpu.cuda_kernels import parse_arch
    from spingpu.kernels.ptx import compile_ptx

    cc, tool = parse_arch(args.arch), cuobjdump()
    from importlib.metadata import version

    import spingpu

    print(f"spingpu {spingpu.__version__}, numba-cuda {version('numba-cuda')}, "
          f"nvJitLink {version('nvidia-nvjitlink')}")
    print(f"\nStatic SASS instructions, {args.arch} (float64: opcodes D*; float32 arithmetic: FFMA, FMUL, "
          "FADD; MUFU: the special-function unit)\n")
    print("| part | instructions | float64 | DFMA | DMUL | DADD | float32 arithmetic | MUFU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, kernel, signature in kernels():
        ops = counts(cubin(compile_ptx(kernel, signature, cc), args.arch), tool)
        f64 = sum(n for op, n in ops.items() if op.startswith("D"))
        f32 = ops["FFMA"] + ops["FMUL"] + ops["FADD"]
        print(f"| {name} | {sum(ops.values())} | {f64} | {ops['DFMA']} | {ops['DMUL']} | {ops['DADD']} | {f32} | "
              f"{ops['MUFU']} |")


if __name__ == "__main__":
    main()
