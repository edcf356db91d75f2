"""SASS instructions a thread EXECUTES per junction reading for typical inputs, without a GPU.

``reading_sass.py`` counts static instructions: every instruction once, including code typical
inputs never reach (the Payne-Hanek reduction of float64 sin and cos for |x| >= 2^31, the full
routines of a division, reciprocal or square root with an operand near the limits of float64).
This script follows one path through the sm_90 code of ``reading_sass.py``'s kernels of
``stt_compact_prepared`` and ``normal_pair`` and counts every instruction issued on it
(predicated-off ones and the BSSY/BSYNC reconvergence markers included: they take issue slots).
Each conditional branch of the path is decided in the tables below with its reason; the input-
dependent ones are the tanh form (``|I / i_c| < 0.6554``: an odd polynomial; else through exp) and
the Newton loop's trip count.

The tables name branches by their address in the listing of numba-cuda 0.30.4 and nvJitLink 13
(sm_90); the script checks that each address still holds a conditional branch and says so where
another toolchain moved them (the tables must then be read again off the listing,
``--listing``). Needs the ``nvidia-cuda-nvdisasm`` and ``nvidia-cuda-cuobjdump`` wheels (or the
toolkit's tools on the PATH).

    python benchmarks/executed_sass.py              # ~20 s
    python benchmarks/executed_sass.py --listing junction > junction.sass
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reading_sass  # noqa: E402

ARCH = "sm_90"
LINE = re.compile(r"/\*([0-9a-f]{4})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?);")
LABEL = re.compile(r"^(\.L_x_\d+|[A-Za-z_][\w.$]*):\s*$")
SECTION = re.compile(r"^\s*\.section\s+\.text\.([^,]+),")
TANH_SPLIT = 0.6554117889404296  # |x| from which libdevice's tanh takes its exp form (the listing's constant)


def junction_branches(tanh_exp_form, newton_steps):
    """{address: taken} of the conditional branches of the stt_compact_prepared kernel's path."""
    return {
        0x0090: False,           # @P0 EXIT: the thread has an element
        0x0300: not tanh_exp_form,  # |I / i_c| < 0.6554: tanh's odd polynomial, else its exp form
        0x0920: False,           # theta is +-inf (cos)
        0x0a20: True,            # |theta| < 2^31: no Payne-Hanek reduction (cos)
        0x0de0: True,            # v0 = I (1 + tmr0) / c1: the division's fast path
        0x0f30: False,           # the 100-step cap reached
        0x10c0: True,            # step = p / dp: the division's fast path (p != 0, a normal quotient)
        0x1180: lambda visit: visit < newton_steps,  # |step| > 1e-9 |v|: another Newton step
        0x11c0: False,           # theta is +-inf (sin)
        0x12c0: True,            # |theta| < 2^31: no Payne-Hanek reduction (sin)
        0x1660: True,            # 1 / (1 + tmr0 + x^2): the reciprocal's fast path
        0x1910: True,            # dV/dI's division: the fast path
    }


NORMAL_PAIR_BRANCHES = {
    0x0090: False,  # @P0 EXIT: the thread has an element
    0x09d0: False,  # log(u1), u1 in [2^-53, 1]: no special operand
    0x0de0: False,  # 2 pi u2 is not +-inf (cos)
    0x0ee0: True,   # |2 pi u2| < 2^31: no Payne-Hanek reduction (cos)
    0x1140: False,  # not +-inf (sin)
    0x1240: True,   # no Payne-Hanek reduction (sin)
    0x1560: True,   # sqrt(-2 log u1): the fast path
}


class Instruction:
    def __init__(self, address, predicate, opcode, operands):
        self.address, self.opcode = address, opcode
        self.base = opcode.split(".")[0]
        target = re.search(r"`\(([^)]+)\)", operands)
        self.target = target.group(1) if target else None
        # "@P0 BRA P1, `(...)" and "BRA !P2, ..." are conditional too
        self.conditional = bool(predicate) or (self.base == "BRA" and re.match(r"!?P\d", operands.strip()) is not None)


def parse(listing):
    """({function: [Instruction]}, {(function, label): index}) of an ``nvdisasm -c`` listing."""
    functions, labels, current = collections.OrderedDict(), {}, None
    for line in listing.splitlines():
        line = re.sub(r"\s*/\* 0x[0-9a-f]+ \*/", "", line)
        section = SECTION.match(line)
        if section:
            current = section.group(1)
            functions[current] = []
        elif current is not None:
            label = LABEL.match(line.strip())
            if label:
                labels[(current, label.group(1))] = len(functions[current])
            elif (found := LINE.search(line)):
                functions[current].append(Instruction(int(found.group(1), 16), found.group(2), found.group(3),
                                                      found.group(4)))
    return functions, labels


def executed(functions, labels, branches):
    """(instructions issued, Counter of opcodes) along the path from the kernel's entry on which each
    conditional branch or exit at address a is taken as ``branches[a]`` (a bool, or a function of
    the how-many-th time it is reached), CALLs followed into their callee."""
    kernel = next(f for f in functions if f.startswith("_Z"))
    at = {i.address: i for i in functions[kernel]}
    moved = [f"{a:#06x}" for a in branches if a not in at or not at[a].conditional]
    if moved:
        sys.exit(f"the listing's branches are not where the tables expect them ({', '.join(moved)}): another "
                 "numba-cuda or nvJitLink; read the tables again off --listing")
    function, index, stack = kernel, 0, []
    visits, opcodes, issued = collections.Counter(), collections.Counter(), 0
    while issued < 100_000:
        ins = functions[function][index]
        visits[(function, ins.address)] += 1
        opcodes[ins.base] += 1
        issued += 1

        def taken():
            if not ins.conditional:
                return True
            if function != kernel or ins.address not in branches:
                sys.exit(f"an undecided branch at {ins.address:#06x} of {function}: extend the tables")
            decision = branches[ins.address]
            return decision(visits[(function, ins.address)]) if callable(decision) else decision

        if ins.base == "EXIT" and taken():
            return issued, opcodes
        if ins.base == "BRA" and taken():
            index = labels[(function, ins.target)]
        elif ins.base == "CALL":
            stack.append((function, index + 1))
            function, index = ins.target, 0
        elif ins.base == "RET":
            function, index = stack.pop()
        else:
            index += 1
    raise RuntimeError("no exit after 100,000 instructions")


def listing(name):
    """(nvdisasm's listing, static instruction count) of ``reading_sass.py``'s kernel ``name``
    (junction, normal_pair) for sm_90."""
    from spingpu.cuda_kernels import parse_arch
    from spingpu.kernels.ptx import compile_ptx

    row = {"junction": "stt_compact_prepared (kernel rows)", "normal_pair": "normal_pair (2 normals)"}[name]
    kernel, signature = next((k, s) for n, k, s in reading_sass.kernels() if n == row)
    binary = reading_sass.cubin(compile_ptx(kernel, signature, parse_arch(ARCH)), ARCH)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(binary)
        f.flush()
        tool = reading_sass.cuda_tool("nvdisasm", "nvidia-cuda-nvdisasm")
        text = subprocess.run([tool, "-c", f.name], capture_output=True, text=True, check=True).stdout
    return text, sum(reading_sass.counts(binary, reading_sass.cuobjdump()).values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listing", choices=("junction", "normal_pair"), help="print a kernel's listing and stop")
    parser.add_argument("--steps", type=float, default=3.5, help="Newton steps per solve (default: 3.5, the mean "
                                                                 "over 10 %% spreads at I ~ N(0, 200 uA))")
    parser.add_argument("--exp-tanh", type=float, default=0.5,
                        help=f"fraction of readings with |I / i_c| >= {TANH_SPLIT:.4f} (default 0.5)")
    args = parser.parse_args(argv)
    if args.listing:
        print(listing(args.listing)[0])
        return
    text, junction_static = listing("junction")
    junction = parse(text)
    counts = {(form, n): executed(*junction, junction_branches(form, n)) for form in (False, True) for n in (1, 2)}
    per_step = counts[(False, 2)][0] - counts[(False, 1)][0]
    base = counts[(False, 1)][0] - per_step
    exp_form = counts[(True, 1)][0] - counts[(False, 1)][0]
    text, pair_static = listing("normal_pair")
    pair, pair_ops = executed(*parse(text), NORMAL_PAIR_BRANCHES)
    total = base + per_step * args.steps + exp_form * args.exp_tanh
    print(f"Executed SASS instructions per thread, {ARCH} (reading_sass.py's one-element kernels, their "
          "indexing, loads and store included)\n")
    print("| kernel | static | executed |")
    print("| --- | ---: | ---: |")
    print(f"| stt_compact_prepared | {junction_static} | "
          f"{base} + {per_step} per Newton step (+ {exp_form} with tanh's exp form): {total:.0f} at "
          f"{args.steps:g} steps, {args.exp_tanh:.0%} exp form |")
    print(f"| normal_pair (2 normals) | {pair_static} | {pair} |")
    float64 = [sum(n for op, n in ops.items() if op.startswith("D")) for ops in (counts[(False, 2)][1], pair_ops)]
    print(f"\nfloat64 instructions executed: stt_compact_prepared {float64[0]} with 2 Newton steps "
          f"(+{float64[0] - sum(n for op, n in counts[(False, 1)][1].items() if op.startswith('D'))} per step), "
          f"normal_pair {float64[1]}")


if __name__ == "__main__":
    main()
