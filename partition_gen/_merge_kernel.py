"""The compiled inner loop of greedy merging (``partition_gen.merging``), with Numba.

Same rule, state and tie-breaking as the Python loop it replaces (kept in ``merging`` as the reference):
pop the alive node with the lowest (score, node) from a binary heap with lazy invalidation, merge it into
the neighbour with the smallest (weight, neighbour), update integer counts, centre, feature sum and
adjacency. Every float operation is the Python loop's, in its order, except the feature dot products:
those accumulate float32 products in float64 over four interleaved partial sums (fixed order, so the
result is deterministic; for C-ordered float32 features the four sums are the four lanes of one SIMD
register, written as LLVM vector operations, bit for bit the scalar loop), where the Python loop used
BLAS float32 ``gemv``. The two agree to float32
rounding, so a near-tie between two neighbours' weights can be decided differently: the tests find the
same merge sequence on real graphs of 6,000 and 67,000 nodes; at 2.8M nodes x 128-d (bench_geoclass)
8 of 2.8M nodes ended in another class than with the Python loop.

Adjacency lives in one int32 pool: node ``i`` owns ``pool[start[i] : start[i] + cap[i]]`` of which the first
``deg[i]`` entries are its distinct live neighbours. A node that outgrows its slot moves to the end of the
pool with twice the room; when the pool is full it is compacted (live lists only) into a larger one.

The loop runs in slices of at most ``stop - done`` merges so the caller can show progress between calls;
all state is in the arrays passed in (``state`` holds done, heap size, pool end and an error node).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

DONE, HEAP_SIZE, POOL_END, ERROR_NODE = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _less(s1, n1, s2, n2):
    return s1 < s2 or (s1 == s2 and n1 < n2)


@njit(cache=True, nogil=True)
def _sift_down(heap_s, heap_n, size, pos):
    s, nd = heap_s[pos], heap_n[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _less(heap_s[right], heap_n[right], heap_s[child], heap_n[child]):
            child = right
        if _less(heap_s[child], heap_n[child], s, nd):
            heap_s[pos], heap_n[pos] = heap_s[child], heap_n[child]
            pos = child
        else:
            break
    heap_s[pos], heap_n[pos] = s, nd


@njit(cache=True, nogil=True)
def heapify(heap_s, heap_n, size):
    for pos in range(size // 2 - 1, -1, -1):
        _sift_down(heap_s, heap_n, size, pos)


@njit(cache=True, nogil=True)
def _push(heap_s, heap_n, size, s, nd):
    pos = size
    while pos > 0:
        up = (pos - 1) // 2
        if _less(s, nd, heap_s[up], heap_n[up]):
            heap_s[pos], heap_n[pos] = heap_s[up], heap_n[up]
            pos = up
        else:
            break
    heap_s[pos], heap_n[pos] = s, nd


def _dot(feat, a, b):
    """Row a . row b, float32 products summed in float64 over four interleaved partial sums (a remainder of
    d % 4 terms goes to the first), then (s0 + s1) + (s2 + s3). Plain Python, this is the definition; in
    compiled code the overload below takes it, with the four sums in SIMD lanes where the rows allow."""
    d = feat.shape[1]
    s0 = s1 = s2 = s3 = 0.0
    k = 0
    while k + 4 <= d:
        s0 += np.float64(feat[a, k]) * np.float64(feat[b, k])
        s1 += np.float64(feat[a, k + 1]) * np.float64(feat[b, k + 1])
        s2 += np.float64(feat[a, k + 2]) * np.float64(feat[b, k + 2])
        s3 += np.float64(feat[a, k + 3]) * np.float64(feat[b, k + 3])
        k += 4
    while k < d:
        s0 += np.float64(feat[a, k]) * np.float64(feat[b, k])
        k += 1
    return (s0 + s1) + (s2 + s3)


@intrinsic
def _lane_sums(typingctx, feat, a, b):
    """The four partial sums of ``_dot`` over the first d - d % 4 terms of two rows of a C-ordered float32
    matrix, as one <4 x double> accumulator: lane j is partial sum j, each lane's products and additions
    are the scalar loop's own IEEE operations in its order (no fused multiply-add, no reassociation), so
    the sums are bit for bit the scalar ones at a quarter of the instructions."""
    if not (isinstance(feat, types.Array) and feat.ndim == 2 and feat.layout == "C" and feat.dtype == types.float32):
        return None

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        shape = cgutils.unpack_tuple(builder, array.shape)
        strides = cgutils.unpack_tuple(builder, array.strides)
        zero = context.get_constant(types.intp, 0)
        floats4, doubles4 = ir.VectorType(ir.FloatType(), 4), ir.VectorType(ir.DoubleType(), 4)
        rows = []
        for i in (1, 2):
            row = context.cast(builder, args[i], sig.args[i], types.intp)
            first = cgutils.get_item_pointer2(context, builder, data=array.data, shape=shape, strides=strides,
                                              layout=array_type.layout, inds=[row, zero])
            rows.append(builder.bitcast(first, floats4.as_pointer()))
        acc = cgutils.alloca_once_value(builder, ir.Constant(doubles4, [0.0] * 4))
        with cgutils.for_range(builder, builder.udiv(shape[1], context.get_constant(types.intp, 4))) as loop:
            x = builder.fpext(builder.load(builder.gep(rows[0], [loop.index]), align=4), doubles4)
            y = builder.fpext(builder.load(builder.gep(rows[1], [loop.index]), align=4), doubles4)
            builder.store(builder.fadd(builder.load(acc), builder.fmul(x, y)), acc)
        total = builder.load(acc)
        lanes = [builder.extract_element(total, ir.Constant(ir.IntType(32), j)) for j in range(4)]
        return context.make_tuple(builder, sig.return_type, lanes)

    return types.UniTuple(types.float64, 4)(feat, a, b), codegen


@overload(_dot, jit_options={"cache": True, "nogil": True})
def _dot_compiled(feat, a, b):
    if isinstance(feat, types.Array) and feat.layout == "C" and feat.dtype == types.float32:

        def dot_vector(feat, a, b):
            s0, s1, s2, s3 = _lane_sums(feat, a, b)
            d = feat.shape[1]
            for k in range(d - d % 4, d):
                s0 += np.float64(feat[a, k]) * np.float64(feat[b, k])
            return (s0 + s1) + (s2 + s3)

        return dot_vector

    return _dot  # the scalar definition itself, compiled


@njit(cache=True, nogil=True)
def _compact(pool, start, deg, cap, alive, end, extra):
    """A new pool holding only live nodes' lists (each keeping its capacity), with ``extra`` spare room."""
    used = 0
    for i in range(start.size):
        if alive[i]:
            used += cap[i]
    new = np.empty(max(2 * used, used + extra), dtype=pool.dtype)
    pos = 0
    for i in range(start.size):
        if alive[i]:
            c = cap[i]
            new[pos : pos + deg[i]] = pool[start[i] : start[i] + deg[i]]
            start[i] = pos
            pos += c
    return new, pos


@njit(cache=True, nogil=True)
def merge_loop(
    stop, state, heap_s, heap_n, score, img, plus, s2, alive, parent,
    pool, start, deg, cap, feat, norms, cx, cy, cz, sx, sy, sz,
    a1, a2, a3, t1, t2, t3, b1, b2, merges, record,
):  # fmt: skip
    done, size, end = state[DONE], state[HEAP_SIZE], state[POOL_END]
    use_feat = b1 > 0
    use_geo = b2 > 0
    while done < stop:
        # Pop the lowest (score, node).
        sc, u = heap_s[0], heap_n[0]
        size -= 1
        if size > 0:
            heap_s[0], heap_n[0] = heap_s[size], heap_n[size]
            _sift_down(heap_s, heap_n, size, 0)
        if not alive[u] or sc != score[u]:
            continue  # stale entry
        du = deg[u]
        if du == 0:
            state[ERROR_NODE] = u
            break
        su = start[u]
        v = -1
        if du == 1:
            v = pool[su]
        elif not use_feat:
            # Geographic only: the chord is monotone in the angle, so compare squared chords.
            ux, uy, uz = cx[u], cy[u], cz[u]
            best = 9.0
            for j in range(su, su + du):
                w = pool[j]
                dx, dy, dz = cx[w] - ux, cy[w] - uy, cz[w] - uz
                d2 = dx * dx + dy * dy + dz * dz
                if d2 < best or (d2 == best and w < v):
                    best, v = d2, w
        else:
            nu = norms[u]
            best = math.inf
            for j in range(su, su + du):
                w = pool[j]
                sim = _dot(feat, w, u)
                denom = norms[w] * nu
                weight = b1 * (1.0 - (sim / denom if denom > 0 else 0.0))
                if use_geo:
                    dx, dy, dz = cx[w] - cx[u], cy[w] - cy[u], cz[w] - cz[u]
                    half_chord = math.sqrt(dx * dx + dy * dy + dz * dz) * 0.5
                    if half_chord > 1.0:
                        half_chord = 1.0
                    weight += b2 * (2.0 * math.asin(half_chord) / math.pi)
                if weight < best or (weight == best and w < v):
                    best, v = weight, w
        # Merge u into v (u stays alive until its adjacency list has been read: a compaction keeps it).
        parent[u] = v
        img[v] += img[u]
        plus[v] += plus[u]
        s2[v] += s2[u]
        if use_geo:
            x, y, z = sx[v] + sx[u], sy[v] + sy[u], sz[v] + sz[u]
            sx[v], sy[v], sz[v] = x, y, z
            norm = math.sqrt(x * x + y * y + z * z)
            if norm > 0:
                cx[v], cy[v], cz[v] = x / norm, y / norm, z / norm
        if use_feat:
            for k in range(feat.shape[1]):
                feat[v, k] += feat[u, k]
            norms[v] = math.sqrt(_dot(feat, v, v))
        # Adjacency: u's neighbours now see v instead of u (once); v gains those it did not have.
        sv = start[v]
        dv = deg[v]
        for j in range(sv, sv + dv):
            if pool[j] == u:
                dv -= 1
                pool[j] = pool[sv + dv]
                break
        deg[v] = dv
        for j in range(du):
            w = pool[start[u] + j]  # start[u] moves when the pool is compacted
            if w == v:
                continue
            sw, dw = start[w], deg[w]
            at_u = -1
            has_v = False
            for k in range(sw, sw + dw):
                x_ = pool[k]
                if x_ == u:
                    at_u = k
                elif x_ == v:
                    has_v = True
            if has_v:
                dw -= 1
                pool[at_u] = pool[sw + dw]
                deg[w] = dw
            else:
                pool[at_u] = v
                if deg[v] == cap[v]:  # v's slot is full: move it to the end with twice the room
                    new_cap = max(2 * cap[v], 8)
                    if end + new_cap > pool.size:
                        pool, end = _compact(pool, start, deg, cap, alive, end, new_cap)
                    old = start[v]
                    pool[end : end + deg[v]] = pool[old : old + deg[v]]
                    start[v] = end
                    cap[v] = new_cap
                    end += new_cap
                pool[start[v] + deg[v]] = w
                deg[v] += 1
        deg[u] = 0
        alive[u] = 0
        new = a1 * (img[v] / t1) + a2 * (plus[v] / t2) + a3 * (s2[v] / t3)
        score[v] = new
        _push(heap_s, heap_n, size, new, v)
        size += 1
        if record:
            merges[done, 0] = u
            merges[done, 1] = v
        done += 1
    state[DONE], state[HEAP_SIZE], state[POOL_END] = done, size, end
    return pool
