"The house style of the package (issue 19): docments on every public callable; ruff's F, E501 and E702 rules pass."

import importlib, inspect, pkgutil, subprocess, sys
from dataclasses import is_dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VAR = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _own_init(cls) -> bool:
    "Whether `cls` defines its signature in surgseg (not an inherited library `__init__`, not a NamedTuple's fields)."
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return False
    return getattr(getattr(cls, "__init__", None), "__module__", "").startswith("surgseg") or is_dataclass(cls)


def _missing(f, returns: bool = True) -> list[str]:
    """Parameters of `f` (self, cls, *args and **kwargs aside) without a docment, and 'return' if an annotated one
    lacks it."""
    from fastcore.docments import docments

    sig = inspect.signature(f)
    docs = docments(f, full=True, returns=returns)
    kinds = {n: p.kind for n, p in sig.parameters.items()}
    miss = [
        n
        for n, v in docs.items()
        if n != "return" and n not in ("self", "cls") and kinds.get(n) not in VAR and not v.docment
    ]
    ann = sig.return_annotation
    if returns and ann not in (inspect.Signature.empty, None, "None") and not docs["return"].docment:
        miss.append("return")
    return miss


def public_callables():
    "(qualified name, callable, check the return) of every public function, class and method in surgseg's `__all__`."
    import surgseg

    for m in pkgutil.iter_modules(surgseg.__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"surgseg.{m.name}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                yield f"{m.name}.{name}", obj, True
            elif inspect.isclass(obj) and obj.__module__ == mod.__name__:
                if _own_init(obj):
                    yield f"{m.name}.{name}", obj, False
                for k, v in vars(obj).items():
                    f = v.__func__ if isinstance(v, (classmethod, staticmethod)) else v
                    if not k.startswith("_") and inspect.isfunction(f):
                        yield f"{m.name}.{name}.{k}", f, True


def test_public_callables_have_docments():
    "Every parameter of every public function, class and method (the CLI's subcommands too) has a docment."
    missing = [f"{q}: {', '.join(m)}" for q, f, ret in public_callables() if (m := _missing(f, ret))]
    assert not missing, "parameters without a docment (a trailing `# comment`):\n" + "\n".join(missing)


def test_cli_subcommands_are_checked():
    "The CLI's subcommand functions are among the callables checked (a guard on the test above)."
    names = {q for q, _, _ in public_callables()}
    assert {"cli.run_train", "cli.train_args", "cli.run_predict_video"} <= names, sorted(n for n in names if "cli" in n)


def test_ruff_style():
    """`ruff check` with the repo's ruff.toml (F, E501 at 120 characters, E702) passes on the package, the notebooks,
    tests, tools and bench."""
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    r = subprocess.run(
        [str(ruff), "check", "--select", "F,E501,E702", "--output-format", "concise"]
        + ["surgseg", "nbs", "tests", "tools", "bench"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
