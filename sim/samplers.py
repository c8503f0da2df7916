"""Exact, rejection-free samplers fed by both words of the threefry2x32 hash.

Why not ``jax.random``: ``jax.random.t`` and ``jax.random.gamma`` run a per-element rejection
loop (about 1e6 draws/s on a 2-core CPU, 100x slower than normals), and ``jax.random.bits``
in its partitionable mode XORs the two 32-bit output words of each threefry2x32 call into
one, so every 32 random bits cost one full hash. Here each hash call yields two words and
both are used:

* ``student_t``: Bailey's (1994) polar form ``T = sqrt(nu (U1^(-2/nu) - 1)) cos(2 pi U2)``,
  exact for any real ``nu > 0`` (we require ``nu > 2``), one hash per variate.
* ``normal``: Box-Muller, ``sqrt(-2 log U1) cos(2 pi U2)``, one hash per variate.
* ``uniform_pair``: two uniforms per hash.

``cos(2 pi U2)`` is drawn as ``S * sin(pi/2 * V)`` with ``S`` a random sign and ``V`` uniform
on (0, 1): ``|cos(2 pi U)|`` and ``sin(pi V / 2)`` have the same law (both are the
arcsine-distributed ``|cos|`` of a uniform angle), and a short odd Taylor polynomial on
``[0, pi/2]`` is accurate to 7e-10 there, far cheaper than XLA's general ``cos``.

All samplers are counter based: the output for lane ``i`` is a pure function of
``(key, i)``, so a block of paths gives the same draws whatever else is computed beside it.

References:
  R. W. Bailey (1994), "Polar generation of random variates with the t-distribution",
  Mathematics of Computation 62(206), 779-781.
  J. K. Salmon et al. (2011), "Parallel random numbers: as easy as 1, 2, 3" (threefry).
"""

from __future__ import annotations

import math

import jax
import jax.extend.random
import jax.numpy as jnp
from jax import lax

from sim import backend

__all__ = ["threefry2x32", "hash_words", "uniform", "uniform_pair", "normal", "student_t", "poisson_small"]

# Taylor coefficients of sin(x)/x in x^2, through x^12 (error < 7e-10 on [0, pi/2]).
_SIN = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(7))
# Taylor coefficients of expm1(x)/x, through x^8 (truncation < 1.1e-8 relative on [0, 1/2]).
_EXPM1 = tuple(1.0 / math.factorial(k + 1) for k in range(9))


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotl(x: jax.Array, d: int) -> jax.Array:
    return lax.shift_left(x, jnp.uint32(d)) | lax.shift_right_logical(x, jnp.uint32(32 - d))


def threefry2x32(k0, k1, x0, x1) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash (20 rounds), unrolled, bit-identical to JAX's primitive.

    JAX lowers its ``threefry2x32`` primitive on CPU as a rolled ``fori_loop``, which XLA
    cannot fuse with the arithmetic around it: every group of rounds goes through memory.
    Written out as elementwise ``lax`` ops, the hash fuses into the consumer's loop, which
    measured 2.4x more words per second on a 2-core CPU. ``tests/test_samplers.py`` checks
    that the output equals the primitive's.
    """
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ _rotl(x1, r)
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def hash_words(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Two independent uint32 words per lane from one threefry2x32 call per lane.

    Args:
      key: a typed PRNG key (``jax.random.key``) of the threefry2x32 implementation.
      n: number of lanes (static).

    Returns:
      ``(w0, w1)``, each ``uint32[n]``; lane ``i`` hashes the counter ``(i, 0)``.
    """
    k = jax.random.key_data(key)
    if backend.word_generator() == "primitive":  # JAX's own lowering of the same hash
        counters = jnp.concatenate([lax.iota(jnp.uint32, n), jnp.zeros((n,), jnp.uint32)])  # x0 then x1
        out = jax.extend.random.threefry_2x32(k, counters)
        return out[:n], out[n:]
    return threefry2x32(k[0], k[1], lax.iota(jnp.uint32, n), jnp.zeros((n,), jnp.uint32))


def _unit_open_closed(w: jax.Array) -> jax.Array:
    """A uniform on (0, 1] from the top 31 bits of ``w`` (smallest value 2^-32).

    The signed int32 -> float32 conversion is a single instruction on x86; float32 rounds
    the large values to nearest, which is the correct quantization of a uniform.
    """
    i = lax.shift_right_logical(w, jnp.uint32(1)).astype(jnp.int32)
    return (i.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-31)


def _unit_24(w: jax.Array) -> jax.Array:
    """A uniform on (0, 1) from bits 8..31 of ``w`` (bits 0..7 stay free for signs)."""
    i = lax.shift_right_logical(w, jnp.uint32(8)).astype(jnp.int32)
    return (i.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-24)


def _poly(x: jax.Array, coeffs: tuple[float, ...]) -> jax.Array:
    acc = jnp.asarray(coeffs[-1], x.dtype)
    for c in coeffs[-2::-1]:
        acc = acc * x + jnp.asarray(c, x.dtype)
    return acc


def _expm1_nonneg(x: jax.Array) -> jax.Array:
    """``expm1(x)`` for ``x >= 0``: a Taylor polynomial below 1/2, ``exp(x) - 1`` above.

    Above 1/2 the subtraction is exact (Sterbenz) and cancels little, so the result keeps
    ``exp``'s accuracy; below it the degree-9 polynomial is within 1.1e-8 relative. Measured
    against float64 ``expm1`` on [1e-9, 23]: at most 1.2e-7 relative (one float32 ulp),
    against 3.4e-7 for XLA's ``expm1`` (which evaluates a ``tanh`` below 1/2), and the
    Student-t engine runs 7-8% faster (DESIGN.md, "Random numbers").
    """
    return jnp.where(x < jnp.float32(0.5), x * _poly(x, _EXPM1), jnp.exp(x) - jnp.float32(1.0))


def _with_sign_of_bit0(x: jax.Array, w: jax.Array) -> jax.Array:
    """Flip the sign of float32 ``x`` where bit 0 of ``w`` is set (branch free)."""
    flipped = lax.bitcast_convert_type(x, jnp.uint32) ^ lax.shift_left(w, jnp.uint32(31))
    return lax.bitcast_convert_type(flipped, jnp.float32)


def _signed_arcsine(w: jax.Array) -> jax.Array:
    """A draw of ``cos(2 pi U)`` from one word: random sign times ``sin(pi/2 * V)``."""
    theta = _unit_24(w) * jnp.float32(math.pi / 2)
    s = theta * _poly(theta * theta, _SIN)
    return _with_sign_of_bit0(s, w)


def uniform(key: jax.Array, n: int) -> jax.Array:
    """``float32[n]`` uniforms on (0, 1], from word 0 of one hash per lane."""
    w0, _ = hash_words(key, n)
    return _unit_open_closed(w0)


def uniform_pair(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Two independent ``float32[n]`` uniforms on (0, 1] from the two words of one hash.

    Use it when both feed the same output (one fused loop evaluates the hash once).
    """
    w0, w1 = hash_words(key, n)
    return _unit_open_closed(w0), _unit_open_closed(w1)


def normal(key: jax.Array, n: int) -> jax.Array:
    """``float32[n]`` standard normals by Box-Muller, one per hash call.

    ``Z = sqrt(-2 log U1) cos(2 pi U2)`` with ``cos(2 pi U2)`` drawn as in ``student_t``.
    Box-Muller's second normal ``R sin(2 pi U2)`` is not used: XLA's CPU backend emits
    single-output loop fusions, so a second output per hash would recompute the hash (or
    force the words through memory), which measured slower than one normal per hash.
    """
    w0, w1 = hash_words(key, n)
    r = jnp.sqrt(jnp.float32(-2.0) * jnp.log(_unit_open_closed(w0)))
    return r * _signed_arcsine(w1)


def student_t(key: jax.Array, n: int, nu: jax.Array) -> jax.Array:
    """``float32[n]`` Student-t variates with ``nu`` degrees of freedom (not rescaled).

    Bailey's polar form, exact for every real ``nu > 0``::

        T = sqrt(nu * (U1^(-2/nu) - 1)) * cos(2 pi U2)

    ``U1^(-2/nu) - 1`` is computed as ``expm1(-(2/nu) log U1)`` (``_expm1_nonneg``) so that
    small radii keep full relative precision. ``nu`` may be a traced scalar (differentiable, vmappable).
    The variance is ``nu / (nu - 2)`` for ``nu > 2``; see ``sim.processes`` for the
    unit-variance scaling.
    """
    w0, w1 = hash_words(key, n)
    nu = jnp.asarray(nu, jnp.float32)
    r2 = nu * _expm1_nonneg(jnp.log(_unit_open_closed(w0)) * (jnp.float32(-2.0) / nu))
    return jnp.sqrt(r2) * _signed_arcsine(w1)


def poisson_small(u: jax.Array, lam: jax.Array, kmax: int = 24) -> jax.Array:
    """Poisson(``lam``) counts by inversion of the survival function (branch free).

    ``N = #{k >= 1 : u <= P(N >= k)}`` for ``u`` uniform on (0, 1]. The survival
    probabilities are summed from the far tail inward, so they keep full relative precision
    near zero (an inversion of the CDF would saturate near 1 in float32 and hand out
    ``kmax`` jumps with probability ~1e-8). Exact except for the mass above ``kmax``,
    below 1e-30 for ``lam <= 1``, the per-step jump intensities this is for
    (``sim.processes.Merton`` validates that).

    Args:
      u: ``float32[n]`` uniforms on (0, 1].
      lam: scalar intensity (traced or not).
    Returns:
      ``float32[n]`` counts.
    """
    lam = jnp.asarray(lam, jnp.float32)
    pmf = [jnp.exp(-lam)]
    for k in range(1, kmax + 1):
        pmf.append(pmf[-1] * lam / k)
    survival = jnp.zeros((), jnp.float32)  # P(N > kmax), taken as 0
    count = jnp.zeros_like(u)
    for k in range(kmax, 0, -1):
        survival = survival + pmf[k]  # P(N >= k)
        count = count + (u <= survival).astype(u.dtype)
    return count
