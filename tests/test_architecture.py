"""The shape of the code (docs/architecture.md): which package may import which, and how long
a module may grow.

The directions are import-linter contracts in pyproject.toml; `lint-imports` checks them here
on the project, and on a small tree of the same packages with one wrong import each, so that
a contract that no longer sees anything fails too.
"""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "decide", "admin_api", "lab", "rules")
MAX_LINES = 600
LONG_REASON = "Why this module is long:"
# Folders that hold no module of the project: tools' and packages' own, and generated code.
NOT_OURS = {".git", ".venv", "node_modules", "__pycache__", "build", "dist", "migrations"}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the contracts of pyproject.toml in `cwd`, over the packages there."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command;"
            " sys.exit(lint_imports_command())",
            "--no-cache",
            "--no-logo",
            "--config",
            str(cwd / "pyproject.toml"),
        ],
        cwd=cwd,
        # The packages of `cwd`, not those an editable install points at.
        env={**os.environ, "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_directions__hold():
    # When the contracts are checked on the project
    result = lint_imports(ROOT)
    # Then every one is kept
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


# Modules of a tree that keeps every contract: each direction the contracts allow, once.
ALLOWED_TREE = {
    "config/__init__.py": "",
    "config/http.py": "import lab.errors\n",
    "config/logging.py": "",
    "config/middleware.py": "import config.logging\n",
    "config/urls.py": "import admin_api.api\nimport decide.api\n",
    "config/wsgi.py": "import config.urls\nimport decide.hot_path\n",
    "config/settings.py": "",
    "decide/__init__.py": "",
    "decide/api.py": "import config.http\nimport lab.errors\nimport rules.bucketing\n",
    "decide/hot_path.py": "import config.http\nimport config.logging\nimport config.middleware\n",
    "admin_api/__init__.py": "",
    "admin_api/api.py": "import config.http\nimport lab.models\nimport rules.targeting\n",
    "lab/__init__.py": "",
    "lab/errors.py": "",
    "lab/models.py": "import django.db\nimport rules.vocabulary\n",
    "lab/dev/__init__.py": "",
    "lab/dev/demo.py": "import lab.models\n",
    "lab/management/__init__.py": "",
    "lab/management/commands/__init__.py": "",
    "lab/management/commands/demo.py": "import lab.dev.demo\n",
    "lab/management/commands/seed_benchmark.py": "import lab.dev.demo\n",
    "rules/__init__.py": "",
    "rules/bucketing.py": "import mmh3\nimport rules.targeting\nimport rules.vocabulary\n",
    "rules/targeting.py": "import semver\n",
    "rules/vocabulary.py": "",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for name, text in ALLOWED_TREE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_import_check__tree_with_every_allowed_direction__passes(tree):
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        ("rules/web.py", "import django.http\n", "rules imports no web framework"),
        ("rules/up.py", "import lab.models\n", "rules imports no web framework"),
        ("lab/up.py", "import decide.api\n", "config wires everything"),
        ("lab/wiring.py", "import config.http\n", "config wires everything"),
        ("decide/peer.py", "import admin_api.api\n", "config wires everything"),
        ("admin_api/wiring.py", "import config.urls\n", "config wires everything"),
        ("decide/settings_.py", "import config.settings\n", "config wires everything"),
        ("lab/services.py", "import lab.dev.demo\n", "the dev fixtures are imported only"),
        ("decide/seed.py", "from lab.dev import demo\n", "the dev fixtures are imported only"),
    ],
)
def test_import_check__a_wrong_direction__breaks_its_contract(tree, module, source, broken):
    # Given the allowed tree and one import the directions forbid
    (tree / module).write_text(source)
    # When the contracts are checked
    result = lint_imports(tree)
    # Then the check fails, naming the contract that import breaks
    assert result.returncode != 0, result.stdout
    broken_lines = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(broken) for line in broken_lines), result.stdout


def project_modules() -> list[Path]:
    modules = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [
            name
            for name in subfolders
            if name not in NOT_OURS and not name.startswith(".") and not name.endswith(".egg-info")
        ]
        modules += [Path(folder) / name for name in files if name.endswith(".py")]
    return sorted(modules)


def says_why_it_is_long(path: Path, text: str) -> bool:
    """Whether the module's docstring, or a comment at its top, gives the reason."""
    docstring = ast.get_docstring(ast.parse(text, filename=str(path))) or ""
    top_comments = [line for line in text.splitlines()[:10] if line.startswith("#")]
    return any(LONG_REASON in part for part in [docstring, *top_comments])


def test_modules__over_600_lines__say_why_at_their_top():
    modules = project_modules()
    assert {path.relative_to(ROOT).parts[0] for path in modules} >= set(PACKAGES)
    too_long = []
    for path in modules:
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_LINES and not says_why_it_is_long(path, text):
            too_long.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not too_long, (
        f"modules over {MAX_LINES} lines: split them, or give the reason at the top of the "
        f"docstring in a sentence starting {LONG_REASON!r}: {', '.join(too_long)}"
    )


def test_long_module_check__sees_a_long_module_without_its_reason(tmp_path):
    # A check that cannot fail is no check: the rule applied to modules made here
    body = "x = 1\n" * (MAX_LINES + 1)
    silent = tmp_path / "silent.py"
    silent.write_text('"""A module."""\n' + body)
    explained = tmp_path / "explained.py"
    explained.write_text(f'"""A module.\n\n{LONG_REASON} one table, read as one.\n"""\n' + body)
    assert not says_why_it_is_long(silent, silent.read_text())
    assert says_why_it_is_long(explained, explained.read_text())
