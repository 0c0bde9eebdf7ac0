"""Compiled (Numba) passes over the hull's triangles for ``partition_gen.graph.triangulate_sphere``.

The same formulas as the NumPy path in ``graph`` (which stays as the fallback and the reference), one pass
over the triangles instead of a dozen whole-array temporaries of 5.6M rows each:

- ``orient``: turn every facet counter-clockwise seen from outside; its circumcentre is the unit normal;
- ``voronoi_areas``: each vertex's territory as the sum of its kites, per corner k summed in triangle
  order and the three corner sums added in the order k = 0, 1, 2, as the NumPy path's bincounts do
  (values agree to rounding of the 3-vectors' dot products; the tests compare both paths);
- ``oriented_csr``: the symmetric adjacency from the 3T directed edges by a counting sort on the source
  and an insertion sort of each (short) row, instead of sorting 3T int64 keys; returns ok=False when a
  directed edge repeats (inconsistent orientation), and the caller then symmetrises explicitly.

All are ``nogil``: the areas run on a second thread while the adjacency is built.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def orient(points, simplices, equations):
    t = simplices.shape[0]
    tri = np.empty((t, 3), dtype=np.int64)
    centre = np.empty((t, 3))
    for i in range(t):
        a, b, c = simplices[i, 0], simplices[i, 1], simplices[i, 2]
        ux, uy, uz = points[b, 0] - points[a, 0], points[b, 1] - points[a, 1], points[b, 2] - points[a, 2]
        vx, vy, vz = points[c, 0] - points[a, 0], points[c, 1] - points[a, 1], points[c, 2] - points[a, 2]
        nx, ny, nz = equations[i, 0], equations[i, 1], equations[i, 2]
        det = (uy * vz - uz * vy) * nx + (uz * vx - ux * vz) * ny + (ux * vy - uy * vx) * nz
        tri[i, 0] = a
        if det < 0:
            tri[i, 1], tri[i, 2] = c, b
        else:
            tri[i, 1], tri[i, 2] = b, c
        norm = math.sqrt(nx * nx + ny * ny + nz * nz)
        centre[i, 0], centre[i, 1], centre[i, 2] = nx / norm, ny / norm, nz / norm
    return tri, centre


@njit(cache=True, nogil=True, inline="always")
def _signed_area(ax, ay, az, bx, by, bz, cx, cy, cz):
    """Signed solid angle of the spherical triangle (a, b, c) (Van Oosterom & Strackee)."""
    det = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
    den = 1.0 + (ax * bx + ay * by + az * bz) + (bx * cx + by * cy + bz * cz) + (cx * ax + cy * ay + cz * az)
    return 2.0 * math.atan2(det, den)


@njit(cache=True, nogil=True)
def voronoi_areas(points, tri, centre):
    n = points.shape[0]
    acc = np.zeros((3, n))
    for i in range(tri.shape[0]):
        cx, cy, cz = centre[i, 0], centre[i, 1], centre[i, 2]
        for k in range(3):
            v0, v1, v2 = tri[i, k], tri[i, (k + 1) % 3], tri[i, (k + 2) % 3]
            px, py, pz = points[v0, 0], points[v0, 1], points[v0, 2]
            mx, my, mz = px + points[v1, 0], py + points[v1, 1], pz + points[v1, 2]
            norm = math.sqrt(mx * mx + my * my + mz * mz)
            if norm > 0:
                mx, my, mz = mx / norm, my / norm, mz / norm
            else:
                mx = my = mz = 0.0
            qx, qy, qz = points[v2, 0] + px, points[v2, 1] + py, points[v2, 2] + pz
            norm = math.sqrt(qx * qx + qy * qy + qz * qz)
            if norm > 0:
                qx, qy, qz = qx / norm, qy / norm, qz / norm
            else:
                qx = qy = qz = 0.0
            part = _signed_area(px, py, pz, mx, my, mz, cx, cy, cz) + _signed_area(
                px, py, pz, cx, cy, cz, qx, qy, qz
            )
            acc[k, v0] += part
    areas = np.zeros(n)
    for k in range(3):
        for v in range(n):
            areas[v] += acc[k, v]
    return areas


@njit(cache=True, nogil=True)
def oriented_csr(n, tri):
    indptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(tri.shape[0]):
        for k in range(3):
            indptr[tri[i, k] + 1] += 1
    for v in range(n):
        indptr[v + 1] += indptr[v]
    fill = indptr[:-1].copy()
    indices = np.empty(3 * tri.shape[0], dtype=np.int32)
    for i in range(tri.shape[0]):
        for k in range(3):
            src = tri[i, k]
            indices[fill[src]] = tri[i, (k + 1) % 3]
            fill[src] += 1
    ok = True
    for v in range(n):
        lo, hi = indptr[v], indptr[v + 1]
        for j in range(lo + 1, hi):
            x = indices[j]
            m = j - 1
            while m >= lo and indices[m] > x:
                indices[m + 1] = indices[m]
                m -= 1
            indices[m + 1] = x
        for j in range(lo + 1, hi):
            if indices[j] == indices[j - 1]:
                ok = False
    return indptr, indices, ok
