"""Layers import downward only: every module of the four packages is parsed (``ast``, nothing imported)
and each of our imports checked, lazy ones inside functions included (a lazy import is still a dependency).

The rules (docs/architecture.md "Import rules", issue 24):

* ``train`` imports nothing of ours outside ``train``;
* ``runtime`` imports neither ``train``, ``export`` nor the top-level ``srdeploy`` package (the CLI);
* a library module imports no CLI module: ``*/cli.py``, ``runtime/cli/*``, ``train/train_cli.py``
  and the top-level ``cli/`` folder (``srdeploy.cli``, ``srdeploy.demo``, ...);
* no module takes a private name (``_x``, or anything from a private module ``_x.py``) from another
  of the four packages (``train``, ``export``, ``runtime``, ``cli``);
* inside the runtime, what ``upscale`` builds on (``media``, ``backends``, tiling, pixels, settings,
  ...) does not import ``upscale`` back.

A failure lists every offender as ``file:line: importer -> imported (rule)``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# folder -> the package it installs as (pyproject [tool.setuptools.package-dir])
PACKAGES = {"cli": "srdeploy", "train": "srdeploy.train", "export": "srdeploy.export", "runtime": "srdeploy.runtime"}
# The runtime modules ``upscale`` sits on; they must not import it back.
BELOW_UPSCALE = ("srdeploy.runtime.media", "srdeploy.runtime.backends", "srdeploy.runtime.tiling",
                 "srdeploy.runtime.pixels", "srdeploy.runtime.settings", "srdeploy.runtime.session",
                 "srdeploy.runtime.metadata", "srdeploy.runtime.parsing", "srdeploy.runtime.budget",
                 "srdeploy.runtime.atomic")
# (importer, imported) -> why it is allowed for now. Each entry is a known, owned exception.
ALLOWED: dict[tuple[str, str], str] = {}


def collect_modules(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """Module name -> (path relative to ``root``, source) for every module of the four packages."""
    mods = {}
    for folder, package in PACKAGES.items():
        for f in sorted((root / folder).rglob("*.py")):
            parts = list(f.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = (str(f.relative_to(root)), f.read_text(encoding="utf-8"))
    return mods


def _imports(name: str, path: str, source: str, known: set[str]):
    """(line, imported module, names taken from it) for every import of ours in one module."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "srdeploy":
                    yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "srdeploy":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                # `from pkg import module` imports the module; `from module import name` takes a name
                yield (node.lineno, sub, ()) if sub in known else (node.lineno, module, (alias.name,))


def _area(module: str) -> str:
    """"train", "export", "runtime", or "cli" (the top-level ``srdeploy`` package and its modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("train", "export", "runtime") else "cli"


def is_cli(module: str) -> bool:
    """A command-line module: ``*/cli.py``, ``runtime/cli/*``, ``train/train_cli.py``, ``cli/*``."""
    return (module.endswith(".cli") or module.startswith("srdeploy.runtime.cli.")
            or module == "srdeploy.train.train_cli" or (_area(module) == "cli" and module != "srdeploy"))


def _private(module: str, names: tuple[str, ...]) -> bool:
    def private(part: str) -> bool:
        return part.startswith("_") and not part.startswith("__")

    return any(private(p) for p in module.split(".")) or any(private(n) for n in names)


def offences(mods: dict[str, tuple[str, str]], allowed: dict[tuple[str, str], str] | None = None) -> list[str]:
    """Every upward or private import in ``mods`` (see ``collect_modules``), one readable line each."""
    allowed = ALLOWED if allowed is None else allowed
    known = set(mods)
    found = []
    for name, (path, source) in sorted(mods.items()):
        for line, target, names in _imports(name, path, source, known):
            rules = []
            src_area, dst_area = _area(name), _area(target)
            if src_area == "train" and dst_area != "train":
                rules.append("train imports nothing of ours outside train")
            if src_area == "runtime" and dst_area != "runtime":
                rules.append("runtime imports neither train, export nor the CLI")
            if not is_cli(name) and is_cli(target):
                rules.append("a library module imports a CLI module")
            if src_area != dst_area and _private(target, names):
                rules.append(f"private name of another package ({', '.join(names) or target})")
            if name.startswith(BELOW_UPSCALE) and target == "srdeploy.runtime.upscale":
                rules.append("a module upscale builds on imports upscale back")
            if rules and (name, target) not in allowed:
                found.append(f"{path}:{line}: {name} -> {target} ({'; '.join(rules)})")
    return found


def test_layers_import_downward_only():
    found = offences(collect_modules())
    assert not found, f"{len(found)} upward or private import(s):\n  " + "\n  ".join(found)


def test_every_allowed_exception_names_its_owner():
    assert all(why.strip() for why in ALLOWED.values())


def test_the_check_flags_each_rule():
    """The check itself can fail: one planted module per rule (and a clean one) in a made-up tree."""
    planted = {
        "srdeploy.train.archs": ("train/archs.py", "from srdeploy.runtime.tiling import plan_tiles\n"),
        "srdeploy.runtime.open": ("runtime/open.py", "def f():\n    from srdeploy.train import checkpoint\n"),
        "srdeploy.runtime.batch.worker": ("runtime/batch/worker.py", "from ..cli._args import describe_session\n"),
        "srdeploy.export.engine": ("export/engine.py", "from srdeploy.runtime.backends.trt import _import\n"),
        "srdeploy.runtime.media.video": ("runtime/media/video.py", "from ..upscale import PixelMap\n"),
        "srdeploy.export.pipeline": ("export/pipeline.py", "from srdeploy.runtime.tiling import plan_tiles\n"
                                                           "from srdeploy.train.archs import ARCHS\n"),
        "srdeploy.runtime.cli._args": ("runtime/cli/_args.py", ""),
        "srdeploy.runtime.cli": ("runtime/cli/__init__.py", ""),
        "srdeploy.train.checkpoint": ("train/checkpoint.py", ""),
        "srdeploy.train": ("train/__init__.py", ""),
    }
    found = offences(planted, allowed={})
    assert [line.split(":")[0] for line in found] == ["export/engine.py", "runtime/batch/worker.py",
                                                      "runtime/media/video.py", "runtime/open.py", "train/archs.py"]
    assert "private name of another package (_import)" in found[0]
    assert "a library module imports a CLI module" in found[1] and "runtime/batch/worker.py:1:" in found[1]
    assert "imports upscale back" in found[2]
    assert "srdeploy.runtime.open -> srdeploy.train.checkpoint" in found[3] and ":2:" in found[3]
    assert "train imports nothing of ours outside train" in found[4]


def test_no_command_hard_wires_an_architecture_name():
    """Issue 22: outside training (which builds SRResNet/SRGAN itself) every command reads models through
    the family table, so no string constant in runtime/, export/ or cli/ names an architecture."""
    from srdeploy.train.families import FAMILIES

    # "spandrel" is also the package's name (the CLI's install hints name it): not an architecture here
    names = {f.name for f in FAMILIES} - {"spandrel"} | {"SRResNet", "RRDBNet", "ESRGAN", "SwinIR", "Compact", "SPAN"}
    found = []
    for folder in ("runtime", "export", "cli"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                    found.append(f"{f.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)
