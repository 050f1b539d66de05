"""Small arithmetic helpers shared by the NPU's blocks."""

from amaranth import *


__all__ = ["serial_product"]


def serial_product(m, a, b, start, name):
    """``a * b`` (unsigned) by shift and add, one bit of ``b`` per cycle: a multiplier's
    worth of LUTs instead of a DSP block, for products off the critical path.

    ``b`` is read in the cycle ``start`` is high; ``a`` must hold its value from the next
    cycle until the product is done. Returns ``(product, done)``: ``product`` (``len(a) +
    len(b)`` bits) is valid while ``done`` is high, from ``len(b)`` cycles after ``start``
    (the next ``start`` excepted); ``done`` is high before the first ``start`` too.
    """
    steps = len(b)
    register = Signal(len(a) + len(b) + 1, name=f"{name}_product")
    left = Signal(range(steps + 1), name=f"{name}_steps")
    high = register[steps:]
    with m.If(start):
        m.d.sync += [register.eq(b), left.eq(steps)]
    with m.Elif(left != 0):
        added = Mux(register[0], high + a, high)
        m.d.sync += [register.eq(Cat(register[1:steps], added)), left.eq(left - 1)]
    return register[:len(a) + len(b)], left == 0
