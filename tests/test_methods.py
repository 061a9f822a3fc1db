"""The method registry: one declaration per method, and nothing else in the package naming a method."""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from gnn_cml import methods
from gnn_cml.errors import GnnCmlError

PACKAGE = Path(methods.__file__).resolve().parent
# Files that may name a method besides its own module and the registry, and why:
# - data/: dataset families are named after their source ("gpn": the GPN paper's graphs), not methods;
# - experiments/{common,regression,image}.py: the paper's sinusoid and Omniglot experiments, whose
#   learner is fixed (MAML on an MLP / conv net) and labelled "maml" / "maml+cml" in their reports.
NOT_METHOD_NAMES = ("data/", "experiments/common.py", "experiments/regression.py", "experiments/image.py")


def _own_module(method: methods.Method) -> Path:
    module = method.learner.split(":")[0] if isinstance(method.learner, str) else method.learner.__module__
    return PACKAGE.parent / (module.replace(".", "/") + ".py")


def _text_tokens(path: Path):
    """String literals (f-string parts included) and comments of a Python file."""
    kinds = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in kinds:
            yield tok.start[0], tok.string


def test_method_names_appear_only_in_their_module_and_the_registry():
    """A new built-in method is its module plus one registry entry: no other file lists or branches on it."""
    own = {}
    for m in methods.BUILTIN:
        own.setdefault(m.name, set()).add(_own_module(m))
    assert len(own) >= 7 and all(p.is_file() for ps in own.values() for p in ps)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path == Path(methods.__file__).resolve() or rel.startswith(NOT_METHOD_NAMES):
            continue
        for line, text in _text_tokens(path):
            for name, modules in own.items():
                if path not in modules and re.search(rf"(?<![A-Za-z0-9_.]){re.escape(name)}(?![A-Za-z0-9_])", text):
                    found.append(f"{rel}:{line}: '{name}' in {text[:80]!r}")
    assert not found, "method names outside their module and gnn_cml/methods.py:\n" + "\n".join(found)


def test_the_scan_finds_a_name_typed_elsewhere(tmp_path):
    """The check above can fail: a literal naming a method is found, a module path or identifier is not."""
    probe = tmp_path / "probe.py"
    name = methods.BUILTIN[0].name
    probe.write_text(f'import gnn_cml.meta.{name}\nx = 1  # fine\nif m == "{name}":\n    pass\n')
    hits = [line for line, text in _text_tokens(probe)
            if re.search(rf"(?<![A-Za-z0-9_.]){name}(?![A-Za-z0-9_])", text)]
    assert hits == [3]


def test_every_listing_comes_from_the_registry(capsys):
    from gnn_cml.cli import build_parser
    from gnn_cml.config import RunConfig, describe_default
    from gnn_cml.report import gamma, table3

    names = methods.builtin_names()
    assert names == tuple(m.name for m in methods.BUILTIN) and len(set(names)) == len(names)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for m in methods.BUILTIN:
        assert f"{m.name} ({' '.join(m.summary.split())})" in help_text
    assert "|".join(names) in help_text
    # per-method defaults come from the declarations
    for m in methods.BUILTIN:
        for key, value in m.defaults.items():
            if key in RunConfig.__dataclass_fields__ and value != getattr(RunConfig(), key):
                assert m.name in describe_default(key), (m.name, key)
    assert table3.BASE_METHODS == methods.table3_methods()
    assert set(table3.BASELINES) == {a for m in methods.BUILTIN for a in m.arms}
    assert set(gamma.METHODS) <= set(methods.cml_methods())
    assert all(table3.PAPER[cell][m.name] == base for m in methods.BUILTIN for cell, (base, _) in m.paper_table3.items())


def test_unknown_method_error_lists_the_registry():
    with pytest.raises(GnnCmlError) as info:
        methods.get("nosuch")
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in methods.builtin_names())
    assert "my_pkg.my_module:MyLearner" in message


@pytest.mark.parametrize("path, expected", [
    ("no_such_pkg_xyz.mod:Learner", "cannot import module 'no_such_pkg_xyz.mod'"),
    ("gnn_cml.methods:NoSuchThing", "has no 'NoSuchThing'"),
    ("gnn_cml.methods:Option", "neither a gnn_cml.methods.Method nor a learner class"),
])
def test_bad_plugin_paths_are_one_line_errors(path, expected):
    with pytest.raises(GnnCmlError) as info:
        methods.get(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_declared_capabilities_match_the_learner_classes():
    """``adapts`` on the declaration (read without torch) and on the class (read by CML) agree; every
    built-in learner implements the contract's ``from_config``."""
    from gnn_cml.meta.base import MetaLearner

    for m in methods.BUILTIN:
        cls = m.learner_class()
        assert issubclass(cls, MetaLearner) and "from_config" in {k for c in cls.__mro__[:-1] for k in vars(c)}
        assert cls.adapts == m.adapts, m.name
        assert m.cml <= m.adapts, m.name  # CML needs an inner loop
        assert m.fast_path or m.why_not_fast, m.name
