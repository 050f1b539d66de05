"""Weight-stationary systolic MAC array.

Dataflow
--------
The array holds a ``rows × cols`` tile of int8 weights ``W[k][n]``, one per processing
element (PE). Activation vectors ``a[m][0:rows]`` (one K-slice of one output row) enter
from the left, one per cycle, skewed so that element ``k`` enters row ``k`` ``k`` cycles
later. Each PE multiplies the activation passing through it by its stationary weight and
adds the partial sum arriving from above; partial sums leave the bottom of each column
and are de-skewed, so that one output vector ``sum_k a[m][k] * W[k][n]`` (``cols``
int32 values) leaves the array per cycle, in input order::

    cycle        t     t+1    t+2   ...   t+R+C+1
    acts.p      a[m]  a[m+1] a[m+2]
    PE(0,0)                  a[m]0
    PE(1,0)                  a[m]1
    PE(r,c)           (r > 0: a[m]r arrives at t+1+r+c, its product is registered at
                       t+2+r+c and added to the sum from above at t+3+r+c; r = 0: a[m]0
                       arrives at t+2+c, and its product, registered at t+3+c, is the
                       column's first partial sum)
    results.p                            y[m]         (R = rows, C = cols)

Weights are double-buffered: each PE holds two weights, and every activation carries the
bank it is multiplied with. While one tile computes from one bank, the ``weights``
stream writes the next tile into the other bank, one row of ``cols`` weights per beat,
rows in order ``0 .. rows-1``. Activations switch to the new bank on the beat after the
previous tile's ``last`` beat, with no bubble.

Interlocks (all inside the array, so any schedule is safe):

* ``acts`` is not ready until the bank it computes from has all ``rows`` rows accepted.
  Row ``r``'s activation selects its weight ``max(r, 1)`` cycles after its own handshake
  (one cycle less with ``registered_products``), so it finds its row written even when
  rows are written a cycle late (``registered_weights``; with ``registered_products`` as
  well, the early selection needs three rows or more, and fewer rows select as without).
* ``weights`` is not ready for row 0 of a bank until the previous tile that used that
  bank has left every column: ``cols`` cycles after its ``last`` activation entered.
  ``weights.ready`` and ``acts.ready`` come from registers.

In steady state a tile therefore streams without a bubble when the tile before it has at
least ``rows + cols - 1`` activation vectors; shorter tiles insert the difference.

Members
-------
weights : ``In(stream.Signature(ArrayLayout(signed(8), cols)))``
    One weight row per beat, written into its PEs' registers in the cycle of its
    handshake, or, with ``registered_weights``, in the cycle after it, from registers (so
    the handshake does not reach the weight registers' enables).
acts : ``In(stream.Signature(ActivationBeat))``
    ``data``: ``rows`` int8 activations; ``last``: the tile's final vector; ``tag``:
    carried unchanged to ``results``.
results : ``Out(stream.Signature(ResultBeat, always_ready=True))``
    ``data``: ``cols`` int32 sums; ``tag``. No back-pressure: the consumer reserves room
    before activations are accepted (see :class:`hw.matrix_unit.MatrixUnit`).
upcoming_tag : ``Out(tag_shape)``
    The ``tag`` that ``results`` carries in the next cycle, from a register: a consumer
    may start a synchronous read with it (the accumulators do).

Latency
-------
A vector accepted on ``acts`` in cycle ``t`` appears on ``results`` in cycle
``t + rows + cols + 1`` (:attr:`latency`): each PE registers its product, then its sum
(row 0 has no sum to register: its input skew takes that cycle instead). With
``registered_products``, ``t + rows + cols + 2``: each product is registered once more,
in the fabric, before its sum, so that no path runs from a multiplier (an ECP5 DSP block,
whose neighbours are other multipliers) through an adder; placement puts that register
anywhere between the two. The multipliers' operands then come from registers alone: each
weight is selected from its bank a cycle early (see the interlocks).
The ``tag`` travels that far in a chain of registers, or, with ``tag_memory``, in a
memory (``hw.arith.delay_line``: a block RAM instead of ``latency`` registers of it).

Reset
-----
Only the bank bookkeeping and the valid bits are reset. The data registers (weights,
activations, partial sums, tags) are not (but on iCE40), so that a reset reaches few
flip-flops; what they hold after a reset never reaches a valid result.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import delay_line, device_family, registered_product


__all__ = ["SystolicArray", "activation_layout", "result_layout"]


def activation_layout(rows, tag_shape):
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8), rows),
        "last": unsigned(1),
        "tag":  tag_shape,
    })


def result_layout(cols, tag_shape):
    return data.StructLayout({
        "data": data.ArrayLayout(signed(32), cols),
        "tag":  tag_shape,
    })


def _registered(m, value, name, *, reset_less):
    register = Signal.like(value, name=name, reset_less=reset_less)
    m.d.sync += register.eq(value)
    return register


class SystolicArray(wiring.Component):
    def __init__(self, rows=8, cols=8, tag_shape=unsigned(1), *, tag_memory=False,
                 registered_weights=False, registered_products=False):
        self.rows = rows
        self.cols = cols
        self.tag_shape = tag_shape
        self.tag_memory = tag_memory
        self.registered_weights = registered_weights
        self.registered_products = registered_products
        self.latency = self.latency_of(rows, cols, registered_products)
        super().__init__({
            "weights": In(stream.Signature(data.ArrayLayout(signed(8), cols))),
            "acts":    In(stream.Signature(activation_layout(rows, tag_shape))),
            "results": Out(stream.Signature(result_layout(cols, tag_shape), always_ready=True)),
            "upcoming_tag": Out(tag_shape),
        })

    @staticmethod
    def latency_of(rows, cols, registered_products=False):
        """:attr:`latency` of a ``rows`` x ``cols`` array, without building one."""
        return rows + cols + 1 + registered_products

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        # On iCE40 the data registers keep their reset: without it, Yosys (``synth_ice40
        # -dsp``) builds a netlist that does not match this design
        # (``tests/test_array_netlist.py``).
        data_reset_less = device_family(platform) != "ice40"

        def data_signal(shape=1, *, name):
            return Signal(shape, name=name, reset_less=data_reset_less)

        # Weight banks: weight[bank][r][c].
        weight = [[[data_signal(signed(8), name=f"w{b}_{r}_{c}") for c in range(C)]
                   for r in range(R)] for b in range(2)]

        # --- Bank bookkeeping --------------------------------------------------------
        load_bank = Signal()               # bank the weights stream writes next
        load_row = Signal(range(R))        # row the weights stream writes next
        compute_bank = Signal()            # bank the next activation uses
        loaded = Signal(2)                 # bank holds a complete tile not yet consumed
        # Cycles since the last activation of each bank entered, saturating at C.
        since_last = [Signal(range(C + 1), init=C, name=f"since_last{b}") for b in range(2)]

        # A weight row is taken unless it is a tile's first and its bank is still in use
        # (holding a tile, or an activation of its last tile within C cycles): that
        # condition on the bookkeeping's next values, in a register, so that no logic lies
        # between ``weights.ready`` and a register.
        weights_ready = Signal(init=1)
        m.d.comb += self.weights.ready.eq(weights_ready)
        m.d.comb += self.acts.ready.eq(loaded.bit_select(compute_bank, 1))

        weights_accepted = self.weights.valid & self.weights.ready
        acts_accepted = self.acts.valid & self.acts.ready
        tile_loaded = weights_accepted & (load_row == R - 1)
        tile_done = acts_accepted & self.acts.p.last

        # Each bank's bookkeeping, updated from its next values, which also give the next
        # cycle's ``weights.ready``.
        next_free = []
        for b in range(2):
            last_entered = tile_done & (compute_bank == b)
            next_loaded = (tile_loaded & (load_bank == b)) | (loaded[b] & ~last_entered)
            next_full = ~last_entered & (since_last[b] >= C - 1)
            next_free.append(~next_loaded & next_full)
            m.d.sync += loaded[b].eq(next_loaded)
            with m.If(last_entered):
                m.d.sync += since_last[b].eq(1)
            with m.Elif(since_last[b] != C):
                m.d.sync += since_last[b].eq(since_last[b] + 1)
        next_at_row0 = Mux(weights_accepted, load_row == R - 1, load_row == 0)
        next_load_bank = load_bank ^ tile_loaded
        m.d.sync += load_bank.eq(next_load_bank)
        m.d.sync += weights_ready.eq(~next_at_row0 | Mux(next_load_bank, next_free[1],
                                                          next_free[0]))

        # With ``registered_weights``, an accepted weight row is written a cycle later,
        # from registers. An activation accepted in the cycle after a tile's last row
        # selects its first weight a cycle later still.
        write_valid, write_bank, write_row, write_data = \
            weights_accepted, load_bank, load_row, self.weights.p
        if self.registered_weights:
            write_valid, write_bank, write_row, write_data = [
                _registered(m, value, name,
                            reset_less=data_reset_less and name != "write_valid")
                for value, name in ((write_valid, "write_valid"), (write_bank, "write_bank"),
                                    (write_row, "write_row"), (write_data, "write_data"))]
        for b in range(2):
            for r in range(R):
                with m.If(write_valid & (write_bank == b) & (write_row == r)):
                    m.d.sync += [weight[b][r][c].eq(write_data[c]) for c in range(C)]

        with m.If(weights_accepted):
            with m.If(load_row == R - 1):
                m.d.sync += load_row.eq(0)
            with m.Else():
                m.d.sync += load_row.eq(load_row + 1)
        with m.If(tile_done):
            m.d.sync += compute_bank.eq(~compute_bank)

        # --- Input skew: row r's element (and its bank) is delayed r + 1 cycles, row 0's
        # two (its product is its partial sum: it needs no cycle for an addition) -------
        # Each stage registers an activation with its bank and with the weight of the PE
        # it enters next, already selected from that bank (no multiplexer between a
        # register and a multiplier).
        # With ``registered_products`` (and at least three rows when weight rows are
        # written a cycle late), each weight is selected a cycle earlier still, into a
        # register (``early_weight``) that the multiplier's operand register loads: no logic
        # lies between a register and a multiplier. An activation then selects its first
        # weight a cycle after its handshake, when every row of its tile is written.
        select_early = self.registered_products and R >= (3 if self.registered_weights else 1)

        def selected(r, c, bank):
            return Mux(bank, weight[1][r][c], weight[0][r][c])

        def chosen_weight(r, c, bank, bank_before):
            """The weight register of PE (r, c) and the value it loads, for an activation
            whose bank register is ``bank`` (the one before it ``bank_before``) as the
            register loads."""
            chosen = data_signal(signed(8), name=f"weight{r}_{c}")
            if select_early:
                chosen_next = _registered(m, selected(r, c, bank_before),
                                          f"early_weight{r}_{c}", reset_less=data_reset_less)
            else:
                chosen_next = selected(r, c, bank)
            m.d.sync += chosen.eq(chosen_next)
            return chosen, chosen_next

        # Each operand register is kept with the value it loads (``*_next``): an ECP5
        # multiplier takes that value into its own input register
        # (``hw.arith.registered_product``).
        row_in = []
        for r in range(R):
            act, bank, bank_before = self.acts.p.data[r], compute_bank, None
            stages = max(r, 1) + 1
            for i in range(stages):
                next_act = data_signal(signed(8), name=f"skew_act{r}_{i}")
                next_bank = data_signal(name=f"skew_bank{r}_{i}")
                m.d.sync += [next_act.eq(act), next_bank.eq(bank)]
                if i == stages - 1:
                    chosen = chosen_weight(r, 0, bank, bank_before)
                    act_next = act
                act, bank, bank_before = next_act, next_bank, bank
            row_in.append(((act, act_next), (bank, bank_before), chosen))

        # --- PE grid ----------------------------------------------------------------
        # A partial sum below row r adds r + 1 products of magnitude at most 2^14
        # (-128 * -128), and is only as wide as that needs; results are sign-extended.
        psum_above = [None] * C
        for r in range(R):
            act, (bank, bank_before), chosen = row_in[r]
            psum_row = []
            psum_shape = signed(((r + 1) << 14).bit_length() + 1)
            for c in range(C):
                # The product is registered, the sum one cycle later: every PE below row 0
                # adds the same cycle of latency, which row 0 spends in its input skew.
                product = registered_product(m, platform, act, chosen, signed(16),
                                             f"product{r}_{c}")
                if self.registered_products:
                    product = _registered(m, product, f"product_near{r}_{c}",
                                          reset_less=data_reset_less)
                if r == 0:
                    psum = product
                else:
                    psum = data_signal(psum_shape, name=f"psum{r}_{c}")
                    m.d.sync += psum.eq(psum_above[c] + product)
                psum_row.append(psum)
                if c != C - 1:
                    act_right = data_signal(signed(8), name=f"act{r}_{c + 1}")
                    bank_right = data_signal(name=f"bank{r}_{c + 1}")
                    m.d.sync += [act_right.eq(act[0]), bank_right.eq(bank)]
                    chosen = chosen_weight(r, c + 1, bank, bank_before)
                    act, bank, bank_before = (act_right, act[0]), bank_right, bank
            psum_above = psum_row

        # --- Output de-skew: column c is delayed C - 1 - c more cycles ----------------
        for c in range(C):
            value = psum_above[c]
            for i in range(C - 1 - c):
                delayed = data_signal(psum_shape, name=f"deskew{c}_{i}")
                m.d.sync += delayed.eq(value)
                value = delayed
            m.d.comb += self.results.p.data[c].eq(value)

        # --- Sideband: valid and tag travel alongside, latency rows + cols + 1 (+ 1) ------
        valid, tag = acts_accepted, Value.cast(self.acts.p.tag)
        for i in range(self.latency):
            next_valid = Signal(name=f"valid_d{i}")
            m.d.sync += next_valid.eq(valid)
            valid = next_valid
            if not self.tag_memory and i < self.latency - 1:
                next_tag = data_signal(self.tag_shape, name=f"tag_d{i}")
                m.d.sync += next_tag.eq(tag)
                tag = next_tag
        if self.tag_memory:
            tag = delay_line(m, tag, self.latency - 1, "tag_line", block_ram=True)
        m.d.comb += self.upcoming_tag.eq(tag)
        result_tag = data_signal(self.tag_shape, name="result_tag")
        m.d.sync += result_tag.eq(tag)
        m.d.comb += [self.results.valid.eq(valid), self.results.p.tag.eq(result_tag)]

        return m
