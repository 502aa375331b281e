"""Build the ``keyplane.native._kp`` extension: CFFI API mode over OpenSSL's libcrypto.

setuptools runs this through ``cffi_modules`` during ``pip install``. Setting
``KEYPLANE_SANITIZE`` (for example ``address,undefined``) builds the module with those
sanitizers for ``make native-asan``; nothing else should set it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

NATIVE = Path(__file__).resolve().parent
SOURCES = ["hsm.c", "gcm.c", "rand.c", "secmem.c", "wrap.c"]


def _compile_args() -> tuple[list[str], list[str]]:
    compile_args = [
        "-std=c11",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-fvisibility=hidden",
        "-D_GNU_SOURCE",
    ]
    link_args: list[str] = []
    sanitize = os.environ.get("KEYPLANE_SANITIZE", "").strip()
    if sanitize:
        flags = [
            f"-fsanitize={sanitize}",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
            "-g",
        ]
        compile_args = [a for a in compile_args if a != "-O2"] + ["-O1", *flags]
        link_args += flags
    return compile_args, link_args


def make_ffi() -> FFI:
    ffi = FFI()
    ffi.cdef((NATIVE / "ffi" / "kp.cdef").read_text())
    compile_args, link_args = _compile_args()
    ffi.set_source(
        "keyplane.native._kp",
        '#include "kp.h"',
        # Relative paths keep absolute build paths out of the built wheel's records.
        sources=[os.path.relpath(NATIVE / "src" / s) for s in SOURCES],
        include_dirs=[os.path.relpath(NATIVE / "include")],
        libraries=["crypto", "pthread"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return ffi


ffibuilder = make_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
