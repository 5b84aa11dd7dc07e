"""Build script for the Cython fast path (``fastpath/*.pyx``); everything else is pure Python.

Usage: ``python setup.py build_ext --inplace [--cython-annotate] [--cython-debug]``.
The switches follow uvloop's ``build_ext``: ``--cython-annotate`` writes the HTML annotation next to each
``.pyx`` (read it for ``pump()`` and the fan-out loop), ``--cython-debug`` turns bounds checks back on.
"""

from __future__ import annotations

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ("demux", "rtp", "rtcp", "seq", "keyframe", "vp8", "crypto_kernel", "srtp", "counters", "engine")
# The benchmark's load generator (bench/_loadgen.pyx) builds on the fast path's SRTP and RTP helpers;
# bench/_dispatch.pyx reads the generator's socket during set-up.
BENCH_MODULES = ("_loadgen", "_limit", "_dispatch")


class fastpath_build_ext(build_ext):  # noqa: N801 - setuptools command naming
    user_options = build_ext.user_options + [
        ("cython-annotate", None, "write an annotated HTML file next to each .pyx"),
        ("cython-debug", None, "compile with bounds/wraparound checks and assertions on"),
    ]
    boolean_options = build_ext.boolean_options + ["cython-annotate", "cython-debug"]

    def initialize_options(self) -> None:
        super().initialize_options()
        self.cython_annotate = False
        self.cython_debug = False

    def finalize_options(self) -> None:
        from Cython.Build import cythonize

        directives = {
            "language_level": 3,
            "boundscheck": bool(self.cython_debug),
            "wraparound": bool(self.cython_debug),
            "initializedcheck": bool(self.cython_debug),
            "cdivision": True,
            "embedsignature": True,
        }
        extensions = [
            Extension(
                f"fastpath.{name}",
                [f"fastpath/{name}.pyx"],
                extra_compile_args=["-O2", "-fno-strict-aliasing"]
                + ([] if self.cython_debug else ["-DNDEBUG"]),
            )
            for name in MODULES
        ] + [
            Extension(
                f"bench.{name}",
                [f"bench/{name}.pyx"],
                extra_compile_args=["-O2", "-fno-strict-aliasing"]
                + ([] if self.cython_debug else ["-DNDEBUG"]),
            )
            for name in BENCH_MODULES
        ]
        self.distribution.ext_modules = cythonize(
            extensions,
            compiler_directives=directives,
            annotate=bool(self.cython_annotate),
            include_path=["."],
            force=bool(self.cython_annotate or self.force),
        )
        super().finalize_options()


setup(
    cmdclass={"build_ext": fastpath_build_ext},
    ext_modules=[Extension(f"fastpath.{name}", [f"fastpath/{name}.pyx"]) for name in MODULES]
    + [Extension(f"bench.{name}", [f"bench/{name}.pyx"]) for name in BENCH_MODULES],
)
