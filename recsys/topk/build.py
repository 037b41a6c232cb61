"""Compiling and loading the LibTorch extension in ``cpp/``, cached by a hash of what goes into it.

The ``.so`` lands in ``<cache_root()>/<hash of sources, flags, torch version, Python, machine>/`` so it
is rebuilt only when one of them changes; ``python -m recsys.topk build`` prebuilds it (``make
install`` does).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
from pathlib import Path

import torch

from recsys.topk.fakes import register_fakes

CPP_DIR = Path(__file__).resolve().parents[2] / "cpp"
EXTENSION_NAME = "feedrec_topk"
NATIVE_ENV = "FEEDREC_TOPK_NATIVE"
CACHE_ENV = "FEEDREC_EXTENSIONS_DIR"

_load_lock = threading.Lock()
_loaded_library: Path | None = None


def cache_root() -> Path:
    """Root of the build cache: ``$FEEDREC_EXTENSIONS_DIR``, else ``$XDG_CACHE_HOME/feedrec/torch_extensions``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "feedrec" / "torch_extensions"


def _with_cuda() -> bool:
    from torch.utils import cpp_extension

    return torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None


def build_spec() -> tuple[list[Path], list[str], bool, Path]:
    """Sources, C++ flags, whether CUDA is compiled, and the cache directory keyed by all of them."""
    with_cuda = _with_cuda()
    sources = [CPP_DIR / "topk_ops.cpp", CPP_DIR / "topk_cpu.cpp", CPP_DIR / "spmm_cpu.cpp"]
    if with_cuda:
        sources.append(CPP_DIR / "topk_cuda.cu")
    # -ffp-contract=fast lets the lane-accumulator dot loops use FMA (ISO C++ mode turns it off).
    # -fopenmp: at::parallel_for is an inline "#pragma omp parallel" in the ATen headers; without
    # it the op silently ran on one thread. Only compiled with it, not linked: the GOMP symbols then
    # resolve to the libgomp torch itself loads (libtorch_cpu's dependency), one OpenMP runtime.
    cflags = ["-O3", "-ffp-contract=fast", "-fopenmp"]
    if os.environ.get(NATIVE_ENV, "") not in ("", "0"):
        cflags += ["-march=native", "-DFEEDREC_NATIVE"]
    digest = hashlib.sha256()
    for part in (torch.__version__, sys.implementation.cache_tag, platform.machine(), " ".join(cflags), str(with_cuda)):
        digest.update(part.encode() + b"\0")
    for path in sorted(CPP_DIR.glob("*")):
        if path.suffix in (".cpp", ".cu", ".h"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return sources, cflags, with_cuda, cache_root() / digest.hexdigest()[:20]


def build_extension(verbose: bool = False) -> Path:
    """Compiles (if not cached) and loads the extension into this process; returns the ``.so`` path.

    Prints one line to stderr when it actually compiles. Raises whatever the compiler raised.
    """
    global _loaded_library
    with _load_lock:
        if _loaded_library is not None:
            return _loaded_library
        sources, cflags, with_cuda, build_dir = build_spec()
        library = build_dir / f"{EXTENSION_NAME}.so"
        # Written after a successful build: a .so without it may be half-linked by another process.
        marker = build_dir / "BUILD_OK"
        if marker.exists() and library.exists():
            torch.ops.load_library(str(library))
        else:
            from torch.utils import cpp_extension

            print(
                f"feedrec: compiling the C++ extension (top-k, CSR propagation) into {build_dir} (once per source change, ~1 min)",
                file=sys.stderr,
                flush=True,
            )
            build_dir.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(
                name=EXTENSION_NAME,
                sources=[str(s) for s in sources],
                extra_cflags=cflags,
                extra_cuda_cflags=["-O3"],
                extra_include_paths=[str(CPP_DIR)],
                build_directory=str(build_dir),
                with_cuda=with_cuda,
                is_python_module=False,
                verbose=verbose,
            )
            marker.write_text(f"torch {torch.__version__}\n")
        register_fakes()
        _loaded_library = library
        return library
