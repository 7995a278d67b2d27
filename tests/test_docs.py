"""The docs cannot drift from the code: every Python block runs, shown output matches.

The rules a docs page follows (docs/*.md):

* Every ```` ```python ```` block runs. The blocks of one page run in order in
  one fresh namespace (a later block uses names from an earlier one), in a
  temporary working directory where ``examples/`` is the repo's examples
  folder. Keep them fast: tiny bodies, a handful of training steps.
* Code that must not run here (a TensorFlow Serving client talking to a
  server, a shell session, a request body) uses another fence language:
  ```` ```text ````, ```` ```sh ````, ```` ```json ````, ```` ```toml ````.
* A ```` ```text ```` block right after the line ``<!-- output -->`` is the
  output of the Python block before it: what that block prints must match,
  compared as doctest does with ELLIPSIS (``...`` matches anything) and
  NORMALIZE_WHITESPACE.
* ```` ```json ```` blocks are valid JSON, and ```` ```toml ```` blocks valid
  TOML; one holding a ``heads`` list must be a valid ``hk.HeadSet``.
* ``mkdocs build --strict`` passes, and every public name is in the API page.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import os
import re
import subprocess
import sys
from typing import Dict, List, NamedTuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
OUTPUT_MARKER = "<!-- output -->"
_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)


class Block(NamedTuple):
    language: str
    code: str
    line: int  # 1-based line of the first code line in the page
    is_output: bool  # a text block marked as the previous python block's output


def page_blocks(path: str) -> List[Block]:
    """The fenced blocks of a Markdown page, in order."""
    with open(path) as handle:
        text = handle.read()
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip()
        blocks.append(Block(
            language=match.group(1),
            code=match.group(2),
            line=text.count("\n", 0, match.start(2)) + 1,
            is_output=before.endswith(OUTPUT_MARKER),
        ))
    return blocks


def pages() -> List[str]:
    return sorted(name for name in os.listdir(DOCS) if name.endswith(".md"))


def _check_output(page: str, block: Block, printed: str) -> None:
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    if not checker.check_output(block.code, printed, flags):
        example = doctest.Example("", block.code)
        diff = checker.output_difference(example, printed, flags)
        pytest.fail(f"{page}:{block.line}: the output shown is not what the code prints.\n{diff}")


def run_page(page: str, workdir) -> dict:
    """Run a page's Python blocks in one namespace; check the outputs it shows."""
    os.symlink(os.path.join(ROOT, "examples"), os.path.join(workdir, "examples"))
    namespace = {"__name__": "__docs__"}
    printed = None
    path = os.path.join(DOCS, page)
    old_cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for block in page_blocks(path):
            if block.language == "python":
                # Blank lines in front, so a traceback names the page's own line numbers.
                code = compile("\n" * (block.line - 1) + block.code, path, "exec")
                stream = io.StringIO()
                with contextlib.redirect_stdout(stream):
                    exec(code, namespace)
                printed = stream.getvalue()
            elif block.is_output:
                if printed is None:
                    pytest.fail(f"{page}:{block.line}: an output block follows no python block.")
                _check_output(page, block, printed)
                printed = None
    finally:
        os.chdir(old_cwd)
    return namespace


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """page -> its namespace after running it; each page runs once per session."""
    namespaces: Dict[str, dict] = {}

    def get(page: str) -> dict:
        if page not in namespaces:
            workdir = tmp_path_factory.mktemp(page.replace(".md", ""))
            namespaces[page] = run_page(page, str(workdir))
        return namespaces[page]

    return get


@pytest.mark.timeout(300)  # a page whose training never ends (a global step that never moves)
@pytest.mark.parametrize("page", [p for p in pages() if p != "api.md"])
def test_every_python_block_of_the_page_runs_and_prints_what_it_shows(page, ran):
    ran(page)


def test_serving_table_is_the_signature_table_of_its_heads(ran):
    from headkit.serving import signature_table

    namespace = ran("serving.md")
    with open(os.path.join(DOCS, "serving.md")) as handle:
        text = handle.read()
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \|", text, re.M)
    table = signature_table(namespace["heads"])
    assert dict(rows) == {key: sig.method.rsplit("/", 1)[-1] for key, sig in table.items()}


def test_json_and_toml_blocks_parse_and_head_configs_are_valid():
    import headkit as hk

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9 and 3.10
        import tomli as tomllib

    checked = 0
    for page in pages():
        for block in page_blocks(os.path.join(DOCS, page)):
            if block.language not in ("json", "toml"):
                continue
            where = f"{page}:{block.line}"
            try:
                data = json.loads(block.code) if block.language == "json" else tomllib.loads(
                    block.code)
            except ValueError as error:
                pytest.fail(f"{where}: not valid {block.language}: {error}")
            if isinstance(data, dict) and "heads" in data:
                hk.HeadSet.from_dict(data)
            checked += 1
    assert checked >= 4


def test_a_runnable_example_comes_before_any_table_of_options():
    for page in pages():
        if page in ("api.md", "performance.md"):
            continue
        with open(os.path.join(DOCS, page)) as handle:
            text = handle.read()
        first_code = text.find("```python")
        first_table = re.search(r"^\|[-| :]+\|\s*$", text, re.M)
        assert first_code != -1, f"{page} has no runnable example"
        if first_table:
            assert first_code < first_table.start(), f"{page}: a table comes before any example"


def test_every_public_name_is_in_the_api_reference():
    import headkit

    with open(os.path.join(DOCS, "api.md")) as handle:
        documented = set(re.findall(r"^::: (headkit\.[\w.]+)$", handle.read(), re.M))
    public = {f"{getattr(headkit, name).__module__}.{name}"
              for name in headkit.__all__ if not name.startswith("_")}
    assert public - documented == set()


def test_every_page_is_in_the_nav():
    with open(os.path.join(ROOT, "mkdocs.yml")) as handle:
        config = handle.read()
    nav = set(re.findall(r"^  - [^:]+: (\S+\.md)$", config, re.M))
    assert set(pages()) - nav == set(), "add these pages to the nav in mkdocs.yml"
    assert nav - set(pages()) == set(), "the nav in mkdocs.yml names missing pages"


def _readme_shell_commands(path: str) -> List[str]:
    return [b.code.strip() for b in page_blocks(path) if b.language == "sh"
            and b.code.strip().startswith("python3 -m venv")]


def test_readme_and_docs_give_the_same_two_set_up_commands():
    readme = _readme_shell_commands(os.path.join(ROOT, "README.md"))
    docs = _readme_shell_commands(os.path.join(DOCS, "index.md"))
    assert len(readme) == 2 and readme == docs


def test_docs_quickstart_declares_the_heads_of_examples_quickstart(ran):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import quickstart
    finally:
        sys.path.remove(os.path.join(ROOT, "examples"))
    assert ran("index.md")["heads"] == quickstart.HEADS


def test_mkdocs_build_strict_passes(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "-f", os.path.join(ROOT, "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
